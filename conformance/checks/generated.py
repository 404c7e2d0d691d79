"""Small random PyTorch models for property checks, drawn by Hypothesis.

`models()` draws an input shape, then one layer at a time from a fixed
vocabulary, offering only the layers (and layer parameters) that are valid for
the shape reached so far. Every drawn model therefore runs, and its output shape
is known without running it.

A drawn model is data (`GeneratedModel`); `source()` writes it out as a
standalone Python module, which is both what gets built and the reproduction a
failure report shows.

Shrinking: Hypothesis shrinks `sampled_from` toward its first element and
integers toward their lower bound, so the vocabulary and every parameter range
are listed simplest first. A failing model shrinks to few layers, small shapes,
kernel 1, stride 1 and the first mode.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from hypothesis import strategies as st

if TYPE_CHECKING:
    import torch
    from hypothesis.strategies import SearchStrategy

Shape = tuple[int, int, int, int]  # N, C, H, W: every layer keeps four dims

BRANCH_SPELLINGS = ("if", "cond")
MAX_SIZE = 32
MAX_CHANNELS = 16
MAX_INPUT_SIZE = 12
MAX_INPUT_CHANNELS = 4

# name -> (description, call with "{}" for the argument), simplest first
ACTIVATIONS = {
    "relu": ("relu", "F.relu({})"),
    "leaky_relu": ("leaky_relu(0.1)", "F.leaky_relu({}, 0.1)"),
    "sigmoid": ("sigmoid", "torch.sigmoid({})"),
    "tanh": ("tanh", "torch.tanh({})"),
    "gelu": ("gelu", "F.gelu({})"),
    "silu": ("silu", "F.silu({})"),
    "hardswish": ("hardswish", "F.hardswish({})"),
    "elu": ("elu", "F.elu({})"),
}
INTERPOLATE_MODES = ("nearest", "bilinear", "bicubic", "nearest-exact")
SCALE_FACTORS = (0.5, 1.5, 2.0, 3.0)


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pool_output_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """As ATen's pooling_output_shape computes it."""
    rounding = stride - 1 if ceil_mode else 0
    out = (size + 2 * padding - (kernel - 1) - 1 + rounding) // stride + 1
    # In ceil mode the last window must start inside the input or the left padding.
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def interpolate_output_size(size: int, scale: float) -> int:
    # F.interpolate floors size * scale (in double precision) when given a scale_factor.
    return math.floor(size * scale)


def _fits(size: int) -> bool:
    return 1 <= size <= MAX_SIZE


# ---------------------------------------------------------------------------
# Layers: each knows its output shape and how it is written in the module source.


@dataclasses.dataclass(frozen=True)
class Layer:
    """One step of a generated model. `index` is its position: it names `self.layer{index}`."""

    kind: ClassVar[str] = ""

    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def describe(self) -> str:
        return self.kind

    def init_lines(self, index: int) -> list[str]:
        """Statements of `__init__` that create this layer's modules."""
        return []

    def forward_lines(self, index: int) -> list[str]:
        """Statements of `forward`, indented relative to the method body."""
        raise NotImplementedError

    def method_lines(self, index: int) -> list[str]:
        """Further methods of the class, indented relative to the class body."""
        return []


@dataclasses.dataclass(frozen=True)
class Activation(Layer):
    name: str
    kind: ClassVar[str] = "activation"

    def describe(self) -> str:
        return ACTIVATIONS[self.name][0]

    def forward_lines(self, index: int) -> list[str]:
        return [f"x = {ACTIVATIONS[self.name][1].format('x')}"]


@dataclasses.dataclass(frozen=True)
class Conv2d(Layer):
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    padding: int
    dilation: int
    groups: int
    bias: bool
    kind: ClassVar[str] = "conv2d"

    def output_shape(self, shape: Shape) -> Shape:
        n, _, h, w = shape
        arguments = (self.kernel, self.stride, self.padding, self.dilation)
        return (n, self.out_channels, conv_output_size(h, *arguments),
                conv_output_size(w, *arguments))

    def describe(self) -> str:
        return (f"conv2d(k{self.kernel},s{self.stride},p{self.padding},"
                f"d{self.dilation},g{self.groups})")

    def init_lines(self, index: int) -> list[str]:
        return [f"self.layer{index} = nn.Conv2d({self.in_channels}, {self.out_channels}, "
                f"kernel_size={self.kernel}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, groups={self.groups}, bias={self.bias})"]

    def forward_lines(self, index: int) -> list[str]:
        return [f"x = self.layer{index}(x)"]


@dataclasses.dataclass(frozen=True)
class BatchNorm(Layer):
    channels: int
    kind: ClassVar[str] = "batch_norm"

    def init_lines(self, index: int) -> list[str]:
        name = f"self.layer{index}"
        # A fresh BatchNorm is the identity in eval mode: give it statistics and an affine map.
        return [f"{name} = nn.BatchNorm2d({self.channels})",
                f"nn.init.normal_({name}.running_mean)",
                f"nn.init.uniform_({name}.running_var, 0.5, 1.5)",
                f"nn.init.uniform_({name}.weight, 0.5, 1.5)",
                f"nn.init.normal_({name}.bias)"]

    def forward_lines(self, index: int) -> list[str]:
        return [f"x = self.layer{index}(x)"]


@dataclasses.dataclass(frozen=True)
class Pool(Layer):
    op: str  # "max" or "avg"
    kernel: int
    stride: int
    padding: int
    ceil_mode: bool
    count_include_pad: bool  # avg only; False for max
    kind: ClassVar[str] = "pool"

    def output_shape(self, shape: Shape) -> Shape:
        n, c, h, w = shape
        arguments = (self.kernel, self.stride, self.padding, self.ceil_mode)
        return (n, c, pool_output_size(h, *arguments), pool_output_size(w, *arguments))

    def describe(self) -> str:
        flags = ",ceil" * self.ceil_mode + ",count_pad" * self.count_include_pad
        return f"{self.op}_pool2d(k{self.kernel},s{self.stride},p{self.padding}{flags})"

    def forward_lines(self, index: int) -> list[str]:
        arguments = (f"kernel_size={self.kernel}, stride={self.stride}, "
                     f"padding={self.padding}, ceil_mode={self.ceil_mode}")
        if self.op == "avg":
            arguments += f", count_include_pad={self.count_include_pad}"
        return [f"x = F.{self.op}_pool2d(x, {arguments})"]


@dataclasses.dataclass(frozen=True)
class AdaptivePool(Layer):
    size: int
    kind: ClassVar[str] = "pool"

    def output_shape(self, shape: Shape) -> Shape:
        return (shape[0], shape[1], self.size, self.size)

    def describe(self) -> str:
        return f"adaptive_avg_pool2d({self.size})"

    def forward_lines(self, index: int) -> list[str]:
        return [f"x = F.adaptive_avg_pool2d(x, {self.size})"]


@dataclasses.dataclass(frozen=True)
class Interpolate(Layer):
    mode: str
    scale: float
    align_corners: bool | None  # None: the mode takes no align_corners
    kind: ClassVar[str] = "interpolate"

    def output_shape(self, shape: Shape) -> Shape:
        n, c, h, w = shape
        return (n, c, interpolate_output_size(h, self.scale),
                interpolate_output_size(w, self.scale))

    def describe(self) -> str:
        aligned = ",align_corners" if self.align_corners else ""
        return f"interpolate({self.mode},x{self.scale}{aligned})"

    def forward_lines(self, index: int) -> list[str]:
        aligned = "" if self.align_corners is None else f", align_corners={self.align_corners}"
        return [f'x = F.interpolate(x, scale_factor={self.scale}, mode="{self.mode}"{aligned})']


@dataclasses.dataclass(frozen=True)
class Linear(Layer):
    in_features: int
    out_features: int
    kind: ClassVar[str] = "linear"

    def output_shape(self, shape: Shape) -> Shape:
        return (*shape[:3], self.out_features)

    def describe(self) -> str:
        return f"linear({self.in_features}->{self.out_features})"

    def init_lines(self, index: int) -> list[str]:
        return [f"self.layer{index} = nn.Linear({self.in_features}, {self.out_features})"]

    def forward_lines(self, index: int) -> list[str]:
        return [f"x = self.layer{index}(x)"]


@dataclasses.dataclass(frozen=True)
class Permute(Layer):
    kind: ClassVar[str] = "reshape_permute"

    def output_shape(self, shape: Shape) -> Shape:
        n, c, h, w = shape
        return (n, c, w, h)

    def describe(self) -> str:
        return "permute(0,1,3,2)"

    def forward_lines(self, index: int) -> list[str]:
        return ["x = x.permute(0, 1, 3, 2)"]


@dataclasses.dataclass(frozen=True)
class Reshape(Layer):
    """Moves data between dims; the batch is read from the tensor, so it may vary."""

    target: tuple[int, int, int]  # C, H, W after the reshape
    kind: ClassVar[str] = "reshape_permute"

    def output_shape(self, shape: Shape) -> Shape:
        return (shape[0], *self.target)

    def describe(self) -> str:
        return "reshape({},{},{})".format(*self.target)

    def forward_lines(self, index: int) -> list[str]:
        return ["x = x.reshape(x.shape[0], {}, {}, {})".format(*self.target)]


# What `Concat` puts beside x, simplest first: (description, expression of x)
CONCAT_PARTNERS = {"scaled": ("x*2", "x * 2.0"), "relu": ("relu", "torch.relu(x)"),
                   "conv": ("conv1x1", None)}


@dataclasses.dataclass(frozen=True)
class Concat(Layer):
    partner: str  # a key of CONCAT_PARTNERS
    in_channels: int
    partner_channels: int
    kind: ClassVar[str] = "concat"

    def output_shape(self, shape: Shape) -> Shape:
        n, c, h, w = shape
        return (n, c + self.partner_channels, h, w)

    def describe(self) -> str:
        return f"concat({CONCAT_PARTNERS[self.partner][0]})"

    def init_lines(self, index: int) -> list[str]:
        if self.partner != "conv":
            return []
        return [f"self.layer{index} = nn.Conv2d({self.in_channels}, "
                f"{self.partner_channels}, kernel_size=1)"]

    def forward_lines(self, index: int) -> list[str]:
        partner = CONCAT_PARTNERS[self.partner][1] or f"self.layer{index}(x)"
        return [f"x = torch.cat([x, {partner}], dim=1)"]


@dataclasses.dataclass(frozen=True)
class Residual(Layer):
    channels: int
    kernel: int  # 1 or 3, padded to keep the size
    bias: bool
    activation: str | None  # a key of ACTIVATIONS
    kind: ClassVar[str] = "residual"

    def describe(self) -> str:
        after = f",{ACTIVATIONS[self.activation][0]}" if self.activation else ""
        return f"residual(conv{self.kernel}x{self.kernel}{after})"

    def init_lines(self, index: int) -> list[str]:
        return [f"self.layer{index} = nn.Conv2d({self.channels}, {self.channels}, "
                f"kernel_size={self.kernel}, padding={self.kernel // 2}, bias={self.bias})"]

    def forward_lines(self, index: int) -> list[str]:
        inner = f"self.layer{index}(x)"
        if self.activation:
            inner = ACTIVATIONS[self.activation][1].format(inner)
        return [f"x = x + {inner}"]


# The two sides of a `Branch`, simplest first: (description, then-side, else-side)
BRANCH_SIDES = {
    "relu_or_scale": ("relu|x*-0.5", "F.relu(x)", "x * -0.5"),
    "two_convs": ("conv1x1|conv1x1", "self.layer{index}[0](x)", "self.layer{index}[1](x)"),
}


@dataclasses.dataclass(frozen=True)
class Branch(Layer):
    """Takes one of two computations depending on the sign of the input's mean."""

    sides: str  # a key of BRANCH_SIDES
    channels: int
    spelling: str  # one of BRANCH_SPELLINGS
    kind: ClassVar[str] = "branch"

    def describe(self) -> str:
        return f"branch({BRANCH_SIDES[self.sides][0]})"

    def init_lines(self, index: int) -> list[str]:
        if self.sides != "two_convs":
            return []
        conv = f"nn.Conv2d({self.channels}, {self.channels}, kernel_size=1)"
        return [f"self.layer{index} = nn.ModuleList([{conv}, {conv}])"]

    def _sides(self, index: int) -> tuple[str, str]:
        _, then_side, else_side = BRANCH_SIDES[self.sides]
        return then_side.format(index=index), else_side.format(index=index)

    def forward_lines(self, index: int) -> list[str]:
        then_side, else_side = self._sides(index)
        if self.spelling == "cond":
            return [f"x = torch.cond(x.mean() > 0, self._then{index}, self._else{index}, (x,))"]
        # bool(...) rather than a bare tensor: TorchScript needs an explicit bool.
        return ["if bool(x.mean() > 0):", f"    x = {then_side}",
                "else:", f"    x = {else_side}"]

    def method_lines(self, index: int) -> list[str]:
        if self.spelling != "cond":
            return []
        then_side, else_side = self._sides(index)
        return ["", f"def _then{index}(self, x):", f"    return {then_side}",
                "", f"def _else{index}(self, x):", f"    return {else_side}"]


# ---------------------------------------------------------------------------
# The model


_MODULE_TEMPLATE = '''\
"""{description}"""
import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SHAPE = {input_shape}


class Generated(nn.Module):
    def __init__(self):
        super().__init__()
{init}
    def forward(self, x):
{forward}        return x
{methods}

if __name__ == "__main__":
    torch.manual_seed(0)  # the conformance suite builds a case under its seed
    model = Generated().eval()
    torch.manual_seed(1)  # and makes its example under seed + 1
    x = torch.randn(INPUT_SHAPE)
    print(model(x).shape)
'''

_build_count = itertools.count()


def _indent(lines: Sequence[str], depth: int) -> str:
    return "".join(" " * depth + line + "\n" if line else "\n" for line in lines)


@dataclasses.dataclass(frozen=True)
class GeneratedModel:
    input_shape: tuple[int, int, int, int]  # N, C, H, W
    layers: tuple[Layer, ...]
    branch: str | None  # the spelling of branch layers; None: none were allowed

    def shapes(self) -> list[Shape]:
        """The input shape, then the shape after each layer."""
        shapes = [tuple(self.input_shape)]
        for layer in self.layers:
            shapes.append(layer.output_shape(shapes[-1]))
        return shapes

    def output_shape(self) -> tuple[int, ...]:
        return self.shapes()[-1]

    def has_branch(self) -> bool:
        return any(isinstance(layer, Branch) for layer in self.layers)

    def describe(self) -> str:
        count = len(self.layers)
        chain = " -> ".join(layer.describe() for layer in self.layers)
        return f"{count} layer{'s' * (count != 1)}: {chain}; input {tuple(self.input_shape)}"

    def source(self) -> str:
        numbered = list(enumerate(self.layers))
        init = [line for i, layer in numbered for line in layer.init_lines(i)]
        forward = [line for i, layer in numbered for line in layer.forward_lines(i)]
        methods = [line for i, layer in numbered for line in layer.method_lines(i)]
        return _MODULE_TEMPLATE.format(
            description=self.describe(), input_shape=tuple(self.input_shape),
            init=_indent(init, 8), forward=_indent(forward, 8), methods=_indent(methods, 4))

    def build(self, directory: Path) -> "torch.nn.Module":
        """Write `source()` to a file in `directory`, import it and return a fresh `Generated()`.

        The module stays in `sys.modules` under a name unique to this call:
        TorchScript reads the source of what it compiles, and keys compiled
        classes by module name.
        """
        source = self.source()
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        path = Path(directory) / f"generated_{digest}.py"
        path.write_text(source)
        from conformance.cases import import_file_as

        module = import_file_as(path, f"conformance_generated_{digest}_{next(_build_count)}")
        return module.Generated()


# ---------------------------------------------------------------------------
# Strategies


def _draw_jointly_valid(draw, ranges: dict[str, Sequence], is_valid: Callable[..., bool]
                        ) -> dict[str, Any]:
    """Draw each parameter in turn among the values that leave some valid completion.

    No draw is ever rejected (Hypothesis would fail its health check), and each
    parameter still shrinks toward the start of its range.
    """
    chosen: dict[str, Any] = {}
    names = list(ranges)
    for position, name in enumerate(names):
        rest = names[position + 1:]

        def completes(value, name=name, rest=rest) -> bool:
            fixed = {**chosen, name: value}
            return any(is_valid(**fixed, **dict(zip(rest, values)))
                       for values in itertools.product(*(ranges[r] for r in rest)))

        chosen[name] = draw(st.sampled_from([v for v in ranges[name] if completes(v)]))
    return chosen


def _divisors(number: int) -> list[int]:
    return [d for d in range(1, number + 1) if number % d == 0]


@st.composite
def _activation(draw, shape: Shape) -> Activation:
    return Activation(draw(st.sampled_from(list(ACTIVATIONS))))


@st.composite
def _conv2d(draw, shape: Shape) -> Conv2d:
    _, channels, height, width = shape
    out_channels = draw(st.integers(1, 8))
    common = [d for d in _divisors(channels) if out_channels % d == 0]
    groups = draw(st.sampled_from(common))

    def is_valid(kernel, stride, padding, dilation) -> bool:
        return all(_fits(conv_output_size(size, kernel, stride, padding, dilation))
                   for size in (height, width))

    ranges = {"kernel": range(1, 6), "stride": range(1, 4), "padding": range(0, 3),
              "dilation": range(1, 4)}
    chosen = _draw_jointly_valid(draw, ranges, is_valid)
    return Conv2d(channels, out_channels, groups=groups, bias=draw(st.booleans()), **chosen)


def _batch_norm(shape: Shape) -> SearchStrategy[BatchNorm]:
    return st.just(BatchNorm(shape[1]))


def _pool_fits(shape: Shape, kernel: int, stride: int, padding: int, ceil_mode: bool) -> bool:
    # PyTorch refuses padding over half the kernel.
    return padding <= kernel // 2 and all(
        _fits(pool_output_size(size, kernel, stride, padding, ceil_mode)) for size in shape[2:])


@st.composite
def _pool(draw, shape: Shape) -> Pool | AdaptivePool:
    op = draw(st.sampled_from(("max", "avg", "adaptive")))
    if op == "adaptive":
        sizes = [s for s in (1, 2, 3) if s <= min(shape[2:])]
        return AdaptivePool(draw(st.sampled_from(sizes)))
    ranges = {"kernel": range(1, 4), "stride": range(1, 4), "padding": range(0, 2),
              "ceil_mode": (False, True)}
    chosen = _draw_jointly_valid(draw, ranges, lambda **p: _pool_fits(shape, **p))
    count_include_pad = op == "avg" and draw(st.booleans())
    return Pool(op, count_include_pad=count_include_pad, **chosen)


def _valid_scales(shape: Shape) -> list[float]:
    return [scale for scale in SCALE_FACTORS
            if all(_fits(interpolate_output_size(size, scale)) for size in shape[2:])]


@st.composite
def _interpolate(draw, shape: Shape) -> Interpolate:
    mode = draw(st.sampled_from(INTERPOLATE_MODES))
    scale = draw(st.sampled_from(_valid_scales(shape)))
    align_corners = draw(st.booleans()) if mode in ("bilinear", "bicubic") else None
    return Interpolate(mode, scale, align_corners)


@st.composite
def _linear(draw, shape: Shape) -> Linear:
    return Linear(shape[3], draw(st.integers(1, 8)))


def _reshape_targets(shape: Shape) -> list[tuple[int, int, int]]:
    """Reshapes that move data between dims: rows into channels, channels into rows, or
    all rows into channels and the columns into rows."""
    _, c, h, w = shape
    targets = []
    if h % 2 == 0 and c * 2 <= MAX_CHANNELS:
        targets.append((c * 2, h // 2, w))
    if c % 2 == 0 and h * 2 <= MAX_SIZE:
        targets.append((c // 2, h * 2, w))
    if c * h <= MAX_CHANNELS:
        targets.append((c * h, w, 1))
    return targets


@st.composite
def _reshape_permute(draw, shape: Shape) -> Permute | Reshape:
    targets = _reshape_targets(shape)
    if not targets or not draw(st.booleans()):
        return Permute()
    return Reshape(draw(st.sampled_from(targets)))


def _concat_partners(channels: int) -> list[str]:
    room = MAX_CHANNELS - channels
    return [p for p in CONCAT_PARTNERS if (room >= 1 if p == "conv" else room >= channels)]


@st.composite
def _concat(draw, shape: Shape) -> Concat:
    channels = shape[1]
    partner = draw(st.sampled_from(_concat_partners(channels)))
    if partner == "conv":
        return Concat(partner, channels, draw(st.integers(1, min(8, MAX_CHANNELS - channels))))
    return Concat(partner, channels, channels)


@st.composite
def _residual(draw, shape: Shape) -> Residual:
    kernel = draw(st.sampled_from((1, 3)))
    bias = draw(st.booleans())
    activation = draw(st.sampled_from((None, *ACTIVATIONS)))
    return Residual(shape[1], kernel, bias, activation)


def branch_layers(shape: Shape, spelling: str) -> SearchStrategy[Branch]:
    """A data-dependent branch for input of `shape`; shape-preserving, so valid anywhere."""
    return st.builds(Branch, st.sampled_from(list(BRANCH_SIDES)), st.just(shape[1]),
                     st.just(spelling))


# kind -> (strategy for the current shape, whether the shape allows it), in shrinking order
_VOCABULARY: dict[str, tuple[Callable, Callable[[Shape], bool]]] = {
    "activation": (_activation, lambda shape: True),
    "conv2d": (_conv2d, lambda shape: True),  # kernel 1, padding 0 always fits
    "batch_norm": (_batch_norm, lambda shape: True),
    "pool": (_pool, lambda shape: True),  # kernel 1 always fits
    "interpolate": (_interpolate, lambda shape: bool(_valid_scales(shape))),
    "linear": (_linear, lambda shape: True),
    "reshape_permute": (_reshape_permute, lambda shape: True),
    "concat": (_concat, lambda shape: bool(_concat_partners(shape[1]))),
    "residual": (_residual, lambda shape: True),
}


@st.composite
def _layer(draw, shape: Shape, branch: str | None) -> Layer:
    kinds = [kind for kind, (_, allows) in _VOCABULARY.items() if allows(shape)]
    if branch is not None:
        kinds.append("branch")
    kind = draw(st.sampled_from(kinds))
    if kind == "branch":
        return draw(branch_layers(shape, branch))
    return draw(_VOCABULARY[kind][0](shape))


def models(branch: str | None = None, max_layers: int = 4) -> SearchStrategy[GeneratedModel]:
    """Valid models of 1..max_layers layers; `branch` spells branch layers (None: no branches)."""
    if branch is not None and branch not in BRANCH_SPELLINGS:
        raise ValueError(f"branch must be None or one of {BRANCH_SPELLINGS}, not {branch!r}")
    if max_layers < 1:
        raise ValueError(f"max_layers must be at least 1, not {max_layers}")
    return _models(branch, max_layers)


@st.composite
def _models(draw, branch: str | None, max_layers: int) -> GeneratedModel:
    input_shape = (draw(st.integers(1, 2)), draw(st.integers(1, MAX_INPUT_CHANNELS)),
                   draw(st.integers(1, MAX_INPUT_SIZE)), draw(st.integers(1, MAX_INPUT_SIZE)))
    shape, layers = input_shape, []
    while True:
        layers.append(draw(_layer(shape, branch)))
        shape = layers[-1].output_shape(shape)
        # A flag after every layer, drawn even at the cap, as st.lists does: the
        # shrinker drops a layer by deleting its draws and its flag, and what
        # follows still lines up. Zero stops; the range is wide because
        # Hypothesis draws the zero end often.
        go_on = draw(st.integers(0, 9)) > 0
        if not go_on or len(layers) == max_layers:
            break
    return GeneratedModel(input_shape, tuple(layers), branch)
