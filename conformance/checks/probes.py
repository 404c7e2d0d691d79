"""Probes the suite derives from a case's example, without the case's help.

Most users give an example and nothing else. An export that froze something of
that example (a branch on its sign or mean, a `.item()`, a numpy round trip, a
batch size read with `int(x.shape[0])`, an ONNX symbolic wrong for part of the
domain) passes on the example and on inputs of the same distribution. These
probes move what tracing and symbolic functions freeze: the sign, the magnitude
over orders of magnitude, the offset, the values themselves (zeros, another
distribution), integer values within their observed range, and the batch size.

A trace that warned (TracerWarning) gets probes aimed at what the warnings name:
each input negated alone, same-shaped inputs swapped, each axis one longer.

Each probe has a name (`DERIVED_PROBES`) that records and messages use and that a
case gives in `skip_probes` to opt out, with a reason.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

FlatInputs = tuple  # flat: positional inputs, then keyword ones (conformance.calling)


@dataclasses.dataclass
class Probe:
    """An input other than the example. `derived` names a probe the suite made up;
    eager rejecting such an input drops it instead of failing the case.
    `resized` lists the (input, axis) pairs whose size differs from the example's."""

    label: str
    inputs: FlatInputs
    derived: str | None = None
    resized: tuple[tuple[int, int], ...] = ()


# name -> what the probe is, as messages say it
DERIVED_PROBES = {
    "negated": "the example negated",
    "scaled_up": "the example times 1000",
    "scaled_down": "the example times 0.001",
    "shifted_up": "the example shifted to be positive (x - min + 1)",
    "shifted_down": "the example shifted to be negative (x - max - 1)",
    "zeros": "zeros of the example's shapes",
    "uniform": "uniform values over the example's range widened by 1 each side",
    "integers_redrawn": "integer inputs redrawn within their observed range",
    "other_batch": "the example and its negation halved, stacked (twice the batch)",
}
# Names of the probes aimed at a trace's warnings; a case may skip these too.
AIMED_PROBES = {
    "one_negated": "one input negated, the others kept",
    "swapped": "two inputs of the same shape and dtype swapped",
    "longer_axis": "one axis of one input made one longer",
}


def _is_float(value: Any) -> bool:
    return hasattr(value, "is_floating_point") and value.is_floating_point()


def _is_integer(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor) and not value.is_floating_point() \
        and not value.is_complex() and value.dtype != torch.bool


def _leaves(example: FlatInputs, change: Callable) -> FlatInputs:
    """The example with `change` applied to every leaf, nested ones too (a tuple or a
    dict of tensors as one argument)."""
    from torch.utils import _pytree

    return tuple(_pytree.tree_map(change, value) for value in example)


def _floats(example: FlatInputs, change: Callable) -> FlatInputs:
    """The example with `change` applied to its floating-point tensors."""
    return _leaves(example, lambda value: change(value) if _is_float(value) and value.numel()
                   else value)


def _shifted(value, up: bool):
    return value - value.min() + 1 if up else value - value.max() - 1


def _zeros(value):
    import torch

    return torch.zeros_like(value)


def _uniform(value):
    import torch

    low, high = value.min().item() - 1, value.max().item() + 1
    return torch.rand_like(value) * (high - low) + low


def _redraw_integers(example: FlatInputs) -> FlatInputs:
    import torch

    def redraw(value):
        if not _is_integer(value) or not value.numel():
            return value
        low, high = int(value.min()), int(value.max())
        return torch.randint(low, high + 1, value.shape, dtype=value.dtype, device=value.device)

    return _leaves(example, redraw)


VALUE_PROBES: dict[str, Callable[[FlatInputs], FlatInputs]] = {
    "negated": lambda example: _floats(example, lambda v: -v),
    "scaled_up": lambda example: _floats(example, lambda v: v * 1000),
    "scaled_down": lambda example: _floats(example, lambda v: v * 0.001),
    "shifted_up": lambda example: _floats(example, lambda v: _shifted(v, up=True)),
    "shifted_down": lambda example: _floats(example, lambda v: _shifted(v, up=False)),
    "zeros": lambda example: _floats(example, _zeros),
    "uniform": lambda example: _floats(example, _uniform),
    "integers_redrawn": _redraw_integers,
}


def batch_axis_inputs(example: FlatInputs) -> list[int]:
    """The inputs that look batched: tensors of two or more dims sharing one size of
    dim 0, which is small. None when the tensors disagree on dim 0."""
    tensors = [i for i, v in enumerate(example) if hasattr(v, "dim") and v.dim() >= 2]
    sizes = {example[i].shape[0] for i in tensors}
    if len(sizes) != 1 or next(iter(sizes)) > 16:
        return []
    return tensors


def _other_batch(example: FlatInputs, batched: list[int]) -> FlatInputs:
    import torch

    # Halved: stacked with its exact negation, the batch's sum is zero, and a model that
    # branches on it (`if x.mean() > 0`) sits on the edge, where any order of summation
    # other than eager's takes the other branch (Inductor's did, on a generated model).
    def stacked(value):
        other = -0.5 * value if _is_float(value) else value
        return torch.cat([value, other])

    return tuple(stacked(v) if i in batched else v for i, v in enumerate(example))


def derived_probes(example: FlatInputs, skip: dict[str, str], space: tuple = ()) -> list[Probe]:
    """The probes derived from the example, except those the case skips and those
    that would equal the example (a probe of integers for a float-only example).
    With an input space, an input whose space is None keeps the example's value (a
    scale factor, a flag) and the others stay within their space's value range."""
    made = []
    for name, make in VALUE_PROBES.items():
        if name in skip:
            continue
        inputs = within(space, make(example), example)
        if not _same(inputs, example):
            made.append(Probe(f"derived probe: {DERIVED_PROBES[name]}", inputs, name))
    batched = [i for i in batch_axis_inputs(example) if not space or space[i] is not None]
    if batched and "other_batch" not in skip:
        made.append(Probe(f"derived probe: {DERIVED_PROBES['other_batch']}",
                          within(space, _other_batch(example, batched), example),
                          "other_batch",
                          tuple((i, 0) for i in batched)))
    return made


def within(space: tuple, inputs: FlatInputs, example: FlatInputs) -> FlatInputs:
    """The inputs held to the case's input space, where it declares one."""
    if not space:
        return inputs
    return tuple(original if bounds is None else
                 value.clamp(bounds.low, bounds.high) if _is_float(value) else
                 value.clamp(int(bounds.low), int(bounds.high)) if _is_integer(value) else value
                 for bounds, value, original in zip(space, inputs, example))


def _same(a: FlatInputs, b: FlatInputs) -> bool:
    """Whether two inputs hold the same values, leaf by leaf (nested ones too)."""
    import torch
    from torch.utils import _pytree

    left, right = _pytree.tree_leaves(a), _pytree.tree_leaves(b)
    return len(left) == len(right) and all(
        x is y or (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
                   and x.shape == y.shape and torch.equal(x, y))
        for x, y in zip(left, right))


# What a TracerWarning says, and what it froze: every one of them means the trace
# holds a value of its example as a constant.
TRACER_WARNING_MARKS = ("Converting a tensor to a Python", "Converting a tensor to a NumPy",
                        "might cause the trace to be incorrect", "registered as constants",
                        "Iterating over a tensor", "trace might not generalize")


def tracer_warnings(warnings: list[str]) -> list[str]:
    """The warnings of an export that say the trace froze something of its example."""
    return [w for w in warnings if any(mark in w for mark in TRACER_WARNING_MARKS)]


def aimed_probes(example: FlatInputs, warnings: list[str], skip: dict[str, str]) -> list[Probe]:
    """Probes for a trace that warned: what a single example cannot tell apart."""
    if not tracer_warnings(warnings):
        return []
    aimed = [("one_negated", p) for p in _one_negated(example)]
    aimed += [("swapped", p) for p in _swapped(example)]
    aimed += [("longer_axis", p) for p in _longer_axes(example)]
    return [probe for name, probe in aimed if name not in skip]


def _one_negated(example: FlatInputs) -> list[Probe]:
    floats = [i for i, v in enumerate(example) if _is_float(v)]
    if len(floats) < 2:
        return []
    return [Probe(f"aimed at the trace's warnings: input {i} negated alone",
                  tuple(-v if j == i else v for j, v in enumerate(example)), "one_negated")
            for i in floats]


def _swapped(example: FlatInputs) -> list[Probe]:
    probes = []
    for i, a in enumerate(example):
        for j in range(i + 1, len(example)):
            b = example[j]
            if _is_float(a) and _is_float(b) and a.shape == b.shape and a.dtype == b.dtype:
                inputs = list(example)
                inputs[i], inputs[j] = b, a
                probes.append(Probe(f"aimed at the trace's warnings: inputs {i} and {j} "
                                    "swapped", tuple(inputs), "swapped"))
    return probes


def _longer_axes(example: FlatInputs) -> list[Probe]:
    import torch

    probes = []
    for i, value in enumerate(example):
        if not _is_float(value):
            continue
        for axis in range(value.dim()):
            extra = value.narrow(axis, 0, 1) * -1
            inputs = tuple(torch.cat([v, extra], dim=axis) if j == i else v
                           for j, v in enumerate(example))
            probes.append(Probe(f"aimed at the trace's warnings: input {i} one longer on "
                                f"axis {axis}", inputs, "longer_axis", ((i, axis),)))
    return probes
