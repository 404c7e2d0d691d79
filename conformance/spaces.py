"""Input spaces: the inputs a case says its artifact must accept.

A case with an input space declares, per input, which dimensions are dynamic
(a `Dim` with its range; the same name on two inputs is the same size) and the
range of its values. The exporters are told about the dimensions, and the
`agrees_on_drawn_inputs` check draws inputs from the space with Hypothesis.

An input is drawn as a `Fill`, a recipe that is also its own reproduction:
`randn(shape, seed) * scale + offset`, clamped to the declared value range.
Hypothesis shrinks a recipe towards scale 0 and offset 0: zeros.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

# Scales a drawn input may have, simplest first: a constant, unit noise, a little
# noise around the offset, and large magnitudes.
SCALES = (0.0, 1.0, 0.01, 100.0, 10000.0)


@dataclasses.dataclass(frozen=True)
class Dim:
    """A dimension the artifact must accept at every size from `min` to `max`."""

    name: str
    min: int
    max: int

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Dim name {self.name!r}: use a Python identifier")
        if not 1 <= self.min <= self.max:
            raise ValueError(f"Dim {self.name!r}: needs 1 <= min <= max, got {self.min}..{self.max}")


# The dtypes an input space draws: floats, and integers (token ids, masks, types), which
# are drawn as rounded floats within [low, high].
DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
          "uint8", "bool")


@dataclasses.dataclass(frozen=True)
class TensorSpace:
    """One input: its shape (ints and Dims), the range of its values and its dtype. An
    integer space is a vocabulary (`low=0, high=vocab - 1`), a mask (0 and 1) or types."""

    shape: tuple[int | Dim, ...]
    low: float = -1000.0
    high: float = 1000.0
    dtype: str = "float32"

    @property
    def integer(self) -> bool:
        return not self.dtype.startswith(("float", "bfloat"))

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"TensorSpace dtype {self.dtype!r}: one of {DTYPES}")
        if not self.low <= self.high:
            raise ValueError(f"TensorSpace: low {self.low} is above high {self.high}")
        for size in self.shape:
            if not isinstance(size, Dim) and not (isinstance(size, int) and size >= 0):
                raise ValueError(f"TensorSpace shape {self.shape}: each size is an int or a Dim")


# An input space: per input, a TensorSpace, or None for an input kept as the example has it.
InputSpace = Sequence["TensorSpace | None"]


def space_dims(space: InputSpace) -> list[Dim]:
    """The distinct Dims of a space, in order; a name used with two ranges is an error."""
    found: dict[str, Dim] = {}
    for tensor in space:
        for size in tensor.shape if tensor else ():
            if isinstance(size, Dim):
                if found.setdefault(size.name, size) != size:
                    raise ValueError(f"Dim {size.name!r} is declared with two ranges: "
                                     f"{found[size.name]} and {size}")
    return list(found.values())


def dynamic_dims(space: InputSpace) -> tuple:
    """What the exporters need: (input index, axis, name, min, max) per dynamic axis."""
    return tuple((index, axis, size.name, size.min, size.max)
                 for index, tensor in enumerate(space) if tensor
                 for axis, size in enumerate(tensor.shape) if isinstance(size, Dim))


def example_problem(space: InputSpace, example: tuple) -> str | None:
    """Why the case's own example lies outside its space, or None."""
    if len(space) != len(example):
        return f"the input space has {len(space)} inputs, the example {len(example)}"
    sizes: dict[str, int] = {}
    for index, (tensor, value) in enumerate(zip(space, example)):
        if tensor is None:
            continue
        shape = tuple(getattr(value, "shape", ()))
        dtype = str(getattr(value, "dtype", "")).removeprefix("torch.")
        if dtype != tensor.dtype:
            return f"input {index}: the space's dtype is {tensor.dtype}, the example's {dtype}"
        if len(shape) != len(tensor.shape):
            return f"input {index}: the space has {len(tensor.shape)} dims, the example {shape}"
        for size, actual in zip(tensor.shape, shape):
            if isinstance(size, Dim) and sizes.setdefault(size.name, actual) != actual:
                return f"input {index}: Dim {size.name!r} is {sizes[size.name]} and {actual}"
            if not (size.min <= actual <= size.max if isinstance(size, Dim) else size == actual):
                return f"input {index}: the example's shape {shape} is outside {tensor.shape}"
    return None


@dataclasses.dataclass(frozen=True)
class Fill:
    """The values of one drawn input: randn(seed) * scale + offset, clamped to [low, high]."""

    seed: int
    scale: float
    offset: float

    def tensor(self, shape: tuple[int, ...], low: float, high: float, dtype: str = "float32"):
        import torch

        noise = torch.randn(shape, generator=torch.Generator().manual_seed(self.seed))
        values = noise * self.scale + self.offset
        if dtype != "float32" and not dtype.startswith(("float", "bfloat")):
            values = values.round()
        return values.clamp(low, high).to(getattr(torch, dtype))

    def code(self, shape: tuple[int, ...], low: float, high: float,
             dtype: str = "float32") -> str:
        rounded = ".round()" if not dtype.startswith(("float", "bfloat")) else ""
        cast = "" if dtype == "float32" else f".to(torch.{dtype})"
        if self.scale == 0.0:
            value = min(max(self.offset, low), high)
            return f"torch.full({shape}, {value!r}){rounded}{cast}"
        return (f"(torch.randn({shape}, generator=torch.Generator().manual_seed({self.seed}))"
                f" * {self.scale!r} + {self.offset!r}){rounded}.clamp({low!r}, {high!r}){cast}")


@dataclasses.dataclass(frozen=True)
class DrawnInputs:
    """Sizes for the space's Dims and a Fill per input: one point of the space."""

    sizes: tuple[tuple[str, int], ...]
    fills: tuple[Fill | None, ...]

    def shape(self, tensor: TensorSpace) -> tuple[int, ...]:
        sizes = dict(self.sizes)
        return tuple(sizes[s.name] if isinstance(s, Dim) else s for s in tensor.shape)

    def tensors(self, space: InputSpace, example: tuple) -> tuple:
        return tuple(kept if tensor is None else fill.tensor(self.shape(tensor), tensor.low,
                                                             tensor.high, tensor.dtype)
                     for tensor, fill, kept in zip(space, self.fills, example))

    def code(self, space: InputSpace) -> str:
        """Python lines that make these inputs (an input kept from the example says so)."""
        lines = [f"{'input_' + str(i)} = " + (
            "<the case's example input>" if tensor is None
            else fill.code(self.shape(tensor), tensor.low, tensor.high, tensor.dtype))
            for i, (tensor, fill) in enumerate(zip(space, self.fills))]
        return "\n".join(lines)

    def describe(self) -> str:
        return ", ".join(f"{name}={size}" for name, size in self.sizes) or "fixed shapes"


def drawn_inputs(space: InputSpace):
    """A Hypothesis strategy of DrawnInputs: sizes within each Dim's range, then values."""
    from hypothesis import strategies as st

    dims = space_dims(space)
    sizes = st.tuples(*[st.tuples(st.just(d.name), st.integers(d.min, d.max)) for d in dims])
    fills = st.tuples(*[st.none() if tensor is None else fill_values(tensor) for tensor in space])
    return st.builds(DrawnInputs, sizes, fills)


def fill_values(tensor: TensorSpace):
    """Fills for one input: zeros first, then the range's ends, then anything within it."""
    from hypothesis import strategies as st

    low, high = tensor.low, tensor.high
    corners = [v for v in (0.0, -1.0, 1.0, low, high) if low <= v <= high]
    offsets = st.one_of(st.sampled_from(corners or [low]),
                        st.floats(low, high, allow_nan=False, allow_infinity=False, width=32))
    return st.builds(Fill, seed=st.integers(0, 2**16), scale=st.sampled_from(SCALES),
                     offset=offsets)
