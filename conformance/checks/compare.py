"""Comparing an artifact's outputs with eager PyTorch's.

Every numeric element is judged by one rule, `allowed_error`; integers and
bools are exact. The rest of this module walks nested outputs (containers,
pytree nodes such as caches, dataclasses and other objects, by what they
hold), checks that their structure lines up, and turns what it finds into
problems that name the output they are about.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
from typing import Any

import torch
import torch.utils._pytree as pytree

from conformance.cases import Tolerance

EXACT = Tolerance(rtol=0.0, atol=0.0)

_INTEGER_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64]
_INTEGER_DTYPES += [getattr(torch, name) for name in ("uint16", "uint32", "uint64")
                    if hasattr(torch, name)]

DEFAULT_TOLERANCES: dict[torch.dtype, Tolerance] = {
    torch.float32: Tolerance(rtol=1e-4, atol=1e-5),
    torch.float64: Tolerance(rtol=1e-7, atol=1e-7),
    torch.float16: Tolerance(rtol=1e-3, atol=1e-3),
    torch.bfloat16: Tolerance(rtol=1.6e-2, atol=1e-2),
    **{dtype: EXACT for dtype in _INTEGER_DTYPES},
}

# Complex values are compared part by part, so each part gets the tolerance
# of a real number of the same width.
_COMPLEX_PARTS = {torch.complex64: torch.float32, torch.complex128: torch.float64,
                  torch.complex32: torch.float16}

_RULE = "|a-e| <= atol*max|e| + rtol*|e| (max|e| of the output, 1 if all zero)"

# Longest repr a message quotes: an object's repr can be megabytes.
_REPR_LIMIT = 200


def _is_exact(t: torch.Tensor) -> bool:
    """Integer and bool tensors: an index or a mask is right or wrong."""
    return not (t.is_floating_point() or t.is_complex() or t.is_quantized)


def tolerance_for(expected: torch.Tensor, override: Tolerance | None) -> Tolerance:
    """EXACT for integers and bools; else the case's tolerance, or the dtype's default.

    A case's tolerance is about float rounding, so it never loosens an integer
    output: argmax 510 for 500 is wrong whatever rtol says.
    """
    if _is_exact(expected):
        return EXACT
    if override is not None:
        return override
    dtype = expected.dtype
    if expected.is_quantized:
        dtype = torch.float32  # quantized outputs are compared dequantized
    dtype = _COMPLEX_PARTS.get(dtype, dtype)
    if dtype in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[dtype]
    raise ValueError(f"no default tolerance for {dtype}; give the case a tolerance")


def allowed_error(expected: torch.Tensor, tol: Tolerance) -> torch.Tensor:
    """The absolute error allowed at each element of `expected` (float64).

    allowed = tol.atol * scale + tol.rtol * |expected|,
    scale = max |expected| over the finite elements of the tensor, or 1 when
    that is 0 (all zeros, or empty).

    A purely absolute tolerance fails models whose outputs are huge:
    inception_v3 with random weights produces logits around 1e11, where
    float32 rounding alone exceeds any atol chosen for ordinary outputs, and
    an atol loose enough for those would accept a sign flip of every element
    of an ordinary tensor. A purely relative tolerance gives near-zero elements an allowed
    error near zero, so the rounding noise of an element that cancels to
    almost nothing fails it, and it has no floor at all for exact zeros.
    Scaling atol by the tensor's magnitude makes the floor proportional to
    what float32 can resolve for that tensor: a near-zero element may carry
    the rounding noise of its neighbours, but a sign flip of an element well
    above that noise is caught. rtol still bounds each large element's error
    by its own size. The scale is not held at 1 or above: efficientnet_b0
    with random weights produces logits that peak at 1.3e-5, and a floor of
    atol*1 = 1e-5 would pass them halved. An all-zero output keeps scale 1,
    so rounding noise on an exact zero is not a failure.
    """
    if expected.is_complex():
        expected = torch.view_as_real(expected.resolve_conj())
    return _allowed(expected.detach().to(torch.float64).abs(), tol)


def _allowed(magnitude: torch.Tensor, tol: Tolerance) -> torch.Tensor:
    """`allowed_error` from |expected| in float64."""
    scale = _finite_max(magnitude)
    return torch.mul(magnitude, tol.rtol).add_(tol.atol * (scale or 1.0))


def _finite_max(magnitude: torch.Tensor) -> float:
    """The largest finite element of a tensor of magnitudes, 0 when it has none. One
    reduction when every element is finite (a segmentation output has millions: selecting
    the finite ones first took most of the time of a comparison)."""
    if not magnitude.numel():
        return 0.0
    top = magnitude.max().item()
    if math.isfinite(top):
        return top
    return torch.where(magnitude.isfinite(), magnitude, 0.0).max().item()


# ---------------------------------------------------------------- structure

def _field_names(obj: Any) -> tuple[str, ...] | None:
    """Field names of a namedtuple or of a torch.return_types struct, else None."""
    if not isinstance(obj, tuple) or type(obj) is tuple:
        return None
    cls = type(obj)
    names = getattr(cls, "_fields", None)
    if names is None and hasattr(cls, "n_fields"):
        names = getattr(cls, "__match_args__", None)
    return tuple(names) if names is not None and len(names) == len(obj) else None


def _child_path(path: str, container: Any, key: Any) -> str:
    if isinstance(container, collections.abc.Mapping):
        return f"{path}[{key!r}]"
    names = _field_names(container)
    return f"{path}.{names[key]}" if names else f"{path}[{key}]"


def _children(obj: Any) -> list | None:
    """(key, child) pairs of a container, in its own order; None for a leaf."""
    if isinstance(obj, collections.abc.Mapping):
        return list(obj.items())
    if isinstance(obj, (tuple, list)):
        return list(enumerate(obj))
    return None


def _content(obj: Any) -> list[tuple[str, Any]] | None:
    """(path suffix, child) pairs of what the comparison walks inside an object: a pytree
    node's children (as exporters flatten it: a transformers cache), a dataclass's
    fields, or an object's attributes; None for a leaf."""
    if isinstance(obj, (torch.Tensor, str, bytes, bool, int, float, complex)) or obj is None:
        return None
    node = pytree.SUPPORTED_NODES.get(type(obj))
    if node is not None:
        children, _ = node.flatten_fn(obj)
        return list(zip(_pytree_keys(node, obj, len(children)), children))
    if _is_dataclass_instance(obj):
        return [(f".{field.name}", getattr(obj, field.name)) for field in dataclasses.fields(obj)]
    state = _state(obj)
    return [(f".{name}", value) for name, value in state.items()] if state else None


def flatten(obj: Any, prefix: str = "output", _within: frozenset = frozenset()) -> list:
    """Leaves of a nested output with their paths: output[0], output['out'], output.logits,
    output.past_key_values.layers[0].keys (inside objects, as `compare` walks them). An
    object met again inside itself is a leaf."""
    within = _within | {id(obj)}
    children = _children(obj)
    if children is not None:
        return [leaf for key, child in children if id(child) not in within
                for leaf in flatten(child, _child_path(prefix, obj, key), within)]
    content = _content(obj)
    if content is None:
        return [(prefix, obj)]
    return [leaf for suffix, child in content if id(child) not in within
            for leaf in flatten(child, f"{prefix}{suffix}", within)]


def _family(obj: Any) -> str:
    if isinstance(obj, torch.Tensor):
        return "tensor"
    if obj is None:
        return "none"
    if isinstance(obj, (bool, int, float)):
        return "scalar"
    if isinstance(obj, collections.abc.Mapping):
        return "mapping"
    if isinstance(obj, (tuple, list)):
        return "sequence"
    return "other"


def _short_repr(obj: Any) -> str:
    """repr(obj) cut to _REPR_LIMIT characters; never raises."""
    try:
        text = repr(obj)
    except Exception as error:  # a broken __repr__ must not hide the verdict
        return f"<{type(obj).__name__}, repr raised {type(error).__name__}>"
    if len(text) <= _REPR_LIMIT:
        return text
    return f"{text[:_REPR_LIMIT]}... ({len(text)} characters)"


def _describe(obj: Any) -> str:
    family = _family(obj)
    if family == "tensor":
        return "a Tensor"
    if family == "none":
        return "None"
    if family == "mapping":
        return f"a {type(obj).__name__} with keys {_short_repr(list(obj))}"
    if family == "sequence":
        kind = "namedtuple " + type(obj).__name__ if _field_names(obj) else type(obj).__name__
        return f"a {kind} of {len(obj)}"
    name = type(obj).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


# ---------------------------------------------------------------- results

@dataclasses.dataclass
class Comparison:
    """What comparing an artifact's outputs with eager's found.

    mismatched/total count the numeric elements compared; elements of leaves
    whose shape or dtype differ are not compared and not counted.
    """

    ok: bool
    problems: list[str]
    max_abs: float = 0.0
    max_rel: float = 0.0
    mismatch_fraction: float = 0.0
    tolerance: dict = dataclasses.field(default_factory=dict)
    topk_agree: bool | None = None
    mismatched: int = 0
    total: int = 0
    topk: int | None = None
    structural_problems: list[str] = dataclasses.field(default_factory=list)

    def metrics(self) -> dict:
        return {
            "max_abs": float(self.max_abs),
            "max_rel": float(self.max_rel),
            "mismatch_fraction": float(self.mismatch_fraction),
            "rtol": float(self.tolerance.get("rtol", 0.0)),
            "atol": float(self.tolerance.get("atol", 0.0)),
            "topk_agree": self.topk_agree,
        }

    def headline(self) -> str:
        if self.structural_problems:
            return self.structural_problems[0]
        if self.mismatched:
            return f"{self.mismatched} of {self.total} output elements outside tolerance"
        return f"all {self.total} output elements within tolerance"

    def summary(self) -> str:
        headline = self.headline()
        lines = [headline] + [f"  {p}" for p in self.problems if p != headline]
        if not self.total and self.structural_problems:
            # Errors over no compared element would read as a match.
            return "\n".join(lines + ["no element was compared: the outputs' structure, "
                                       "shapes or dtypes differ"])
        lines += [
            f"max abs error: {self.max_abs:.6g}",
            f"max rel error: {self.max_rel:.6g}",
            f"share mismatched: {self.mismatch_fraction:.4%} "
            f"({self.mismatched} of {self.total} elements)",
            f"tolerance: {_RULE} with rtol={self.tolerance.get('rtol', 0.0):g}, "
            f"atol={self.tolerance.get('atol', 0.0):g}",
        ]
        if self.topk_agree is not None:
            lines.append(f"top-{self.topk} classes agree: {'yes' if self.topk_agree else 'no'}")
        return "\n".join(lines)


class _Findings:
    """Accumulates what the walk over both outputs finds."""

    def __init__(self, override: Tolerance | None):
        self.override = override
        self.problems: list[str] = []
        self.structural: list[str] = []
        self.max_abs = 0.0
        self.max_rel = 0.0
        self.mismatched = 0
        self.total = 0
        self.float_tolerance: Tolerance | None = None
        self.any_tolerance: Tolerance | None = None
        self.first_tensor_seen = False
        self.topk_pair: tuple[torch.Tensor, torch.Tensor] | None = None
        # (id(actual), id(expected)) of the objects being compared, so an
        # object that refers to itself is walked once.
        self.open_objects: set[tuple[int, int]] = set()

    def problem(self, path: str, message: str, structural: bool = False) -> None:
        text = f"{path}: {message}"
        self.problems.append(text)
        if structural:
            self.structural.append(text)

    def used(self, expected: torch.Tensor, tol: Tolerance) -> None:
        self.any_tolerance = self.any_tolerance or tol
        if self.float_tolerance is None and expected.is_floating_point():
            self.float_tolerance = tol

    def tolerance(self) -> Tolerance:
        return (self.float_tolerance or self.any_tolerance or self.override
                or DEFAULT_TOLERANCES[torch.float32])


# ---------------------------------------------------------------- values

@dataclasses.dataclass
class _Verdict:
    bad: torch.Tensor          # elementwise: outside tolerance
    diff: torch.Tensor         # |a - e| in float64
    allowed: torch.Tensor
    finite: torch.Tensor       # finite in both
    nan_only_actual: torch.Tensor
    nan_only_expected: torch.Tensor
    inf_bad: torch.Tensor
    magnitude: torch.Tensor    # |e| in float64
    all_finite: bool


def _verdict(a: torch.Tensor, e: torch.Tensor, tol: Tolerance) -> _Verdict:
    """Judge each element, with assert_close's semantics for NaN and inf.

    NaN equals NaN at the same position; an infinity equals only the same
    infinity; finite elements must be within `allowed_error`. Integers and
    bools are compared exactly in their own dtype, which float64 could not
    represent beyond 2**53.
    """
    # a copy, written in place: a float64 output would otherwise be the artifact's own
    diff = a.to(torch.float64, copy=True).sub_(e.to(torch.float64)).abs_()
    magnitude = e.to(torch.float64).abs()
    allowed = _allowed(magnitude, tol)
    within = (a == e) if _is_exact(e) else diff <= allowed
    # NaN propagates through max, and a difference is finite only where both sides are
    top = diff.max().item() if diff.numel() else 0.0
    if math.isfinite(top):  # the usual case, in one reduction: no NaN or infinity
        none = torch.zeros_like(within)
        return _Verdict(~within, diff, allowed, ~none, none, none, none, magnitude, True)
    a64, e64 = a.to(torch.float64), e.to(torch.float64)
    nan_a, nan_e = a64.isnan(), e64.isnan()
    finite = a64.isfinite() & e64.isfinite()
    inf_bad = ~finite & ~nan_a & ~nan_e & (a64 != e64)
    bad = (nan_a ^ nan_e) | inf_bad | (finite & ~within)
    return _Verdict(bad, diff, allowed, finite, nan_a & ~nan_e, nan_e & ~nan_a, inf_bad,
                    magnitude, False)


def _errors(v: _Verdict) -> tuple[float, float]:
    """Max absolute and relative error over elements finite in both."""
    diff = v.diff if v.all_finite else torch.where(v.finite, v.diff, 0.0)
    if not diff.numel():
        return 0.0, 0.0
    # Where |e| is 0 there is no relative error to count; where either side is not
    # finite diff is 0 here, and 0 / NaN is the only NaN left.
    ratio = torch.div(diff, v.magnitude).masked_fill_(v.magnitude == 0, 0.0)
    ratio = ratio if v.all_finite else ratio.nan_to_num_(nan=0.0, posinf=math.inf)
    return diff.max().item(), ratio.max().item()


def _unravel(flat: int, shape: torch.Size) -> tuple[int, ...]:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return tuple(reversed(index))


def _element(flat: int, a: torch.Tensor, e: torch.Tensor) -> str:
    """One element of both tensors, for a message: ' at index (1, 7): artifact x vs eager y'."""
    at = f" at index {_unravel(flat, e.shape)}" if e.dim() else ""
    a_value = a.reshape(-1)[flat].item()
    e_value = e.reshape(-1)[flat].item()
    return f"{at}: artifact {a_value:.9g} vs eager {e_value:.9g}"


def _value_messages(a: torch.Tensor, e: torch.Tensor, v: _Verdict) -> list[str]:
    if not v.bad.any():
        return []
    a, e = a.to(torch.float64), e.to(torch.float64)
    messages = []
    if v.nan_only_actual.any():
        messages.append(f"{int(v.nan_only_actual.sum())} NaN where eager has none")
    if v.nan_only_expected.any():
        messages.append("eager has NaN where the artifact has a finite value "
                        f"({int(v.nan_only_expected.sum())} elements)")
    if v.inf_bad.any():
        first = int(v.inf_bad.reshape(-1).nonzero()[0])
        messages.append(f"{int(v.inf_bad.sum())} infinite values differ from eager "
                        f"(first{_element(first, a, e)})")
    out = (v.finite & v.bad).reshape(-1)
    if out.any():
        diff, allowed = v.diff.reshape(-1), v.allowed.reshape(-1)
        worst = int(torch.where(out, diff - allowed, -torch.inf).argmax())
        messages.append(f"{int(out.sum())} of {e.numel()} elements outside tolerance; "
                        f"worst{_element(worst, a, e)}, |diff| {diff[worst].item():.3g} "
                        f"> allowed {allowed[worst].item():.3g}")
    return messages


def _compare_values(a: torch.Tensor, e: torch.Tensor, tol: Tolerance, path: str,
                    found: _Findings) -> None:
    found.used(e, tol)
    found.total += e.numel()
    if not e.numel():
        return
    v = _verdict(a, e, tol)
    max_abs, max_rel = _errors(v)
    found.max_abs = max(found.max_abs, max_abs)
    found.max_rel = max(found.max_rel, max_rel)
    found.mismatched += int(v.bad.sum()) if v.bad.any() else 0  # any() is the cheap one
    messages = _value_messages(a, e, v)
    if messages:
        found.problem(path, "; ".join(messages))


# ---------------------------------------------------------------- leaves

def _plain(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().cpu()
    return t.to_dense() if t.layout != torch.strided else t


def _numeric(t: torch.Tensor) -> torch.Tensor:
    """A real, non-quantized view of `t` whose elements can be judged one by one."""
    if t.is_quantized:
        return t.dequantize()
    if t.is_complex():
        return torch.view_as_real(t.resolve_conj())
    return t


def _layout_messages(a: torch.Tensor, e: torch.Tensor) -> list[str]:
    messages = []
    if a.shape != e.shape:
        messages.append(f"shape {tuple(a.shape)} != eager {tuple(e.shape)}")
    if a.dtype != e.dtype:
        messages.append(f"dtype {a.dtype} != eager {e.dtype}")
    return messages


def _compare_tensor(actual: torch.Tensor, expected: torch.Tensor, path: str,
                    found: _Findings) -> None:
    a, e = _plain(actual), _plain(expected)
    first = not found.first_tensor_seen
    found.first_tensor_seen = True
    messages = _layout_messages(a, e)
    if messages:
        found.problem(path, "; ".join(messages), structural=True)
        return
    a, e = _numeric(a), _numeric(e)
    if first:
        found.topk_pair = (a, e)
    _compare_values(a, e, tolerance_for(e, found.override), path, found)


def _scalar_kind(x: bool | int | float) -> type:
    # bool before int: True is an int to isinstance.
    return next(kind for kind in (bool, int, float) if isinstance(x, kind))


def _compare_scalar(actual: Any, expected: Any, path: str, found: _Findings) -> None:
    # 2 == 2.0 == True, but a caller that indexes with the int or branches on
    # the bool breaks when handed another type.
    kind = _scalar_kind(expected)
    if _scalar_kind(actual) is not kind:
        _type_problem(actual, expected, path, found)
        return
    dtype = torch.float64 if kind is float else torch.int64
    a, e = torch.tensor(actual, dtype=dtype), torch.tensor(expected, dtype=dtype)
    _compare_values(a, e, tolerance_for(e, found.override), path, found)


# ---------------------------------------------------------------- objects

def _equality(actual: Any, expected: Any) -> bool | None:
    """actual == expected as a bool; None when == raises or gives no truth value."""
    try:
        result = actual == expected
        # A tensor's truth value means "all elements", not "equal objects".
        return None if isinstance(result, torch.Tensor) else bool(result)
    except Exception:
        return None


def _slots(cls: type) -> list[str]:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names += [slots] if isinstance(slots, str) else list(slots)
    return [name for name in names if name not in ("__dict__", "__weakref__")]


def _state(obj: Any) -> dict[str, Any]:
    """An object's attributes (instance dict and slots); empty for a class or a singleton."""
    if isinstance(obj, type):
        return {}
    state = dict(getattr(obj, "__dict__", {}))
    state.update((name, getattr(obj, name)) for name in _slots(type(obj)) if hasattr(obj, name))
    return state


def _type_problem(actual: Any, expected: Any, path: str, found: _Findings) -> None:
    found.problem(path, f"eager returned {_describe(expected)}, "
                        f"the artifact returned {_describe(actual)}", structural=True)


def _compare_named(actual: dict, expected: dict, path: str, found: _Findings, what: str) -> None:
    """Attribute-like members by name: output.key_cache, output.logits."""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        parts = [f"{label} {_short_repr(keys)}"
                 for label, keys in (("missing", missing), ("unexpected", extra)) if keys]
        found.problem(path, f"{what} differ from eager: " + ", ".join(parts), structural=True)
    for name in expected:
        if name in actual:
            _walk(actual[name], expected[name], f"{path}.{name}", found)


def _pytree_keys(node: Any, expected: Any, count: int) -> list[str]:
    """Path suffixes of a pytree node's children: '.key_cache', "['a']", or '[i]'."""
    if node.flatten_with_keys_fn is not None:
        return [str(key) for key, _ in node.flatten_with_keys_fn(expected)[0]]
    return [f"[{index}]" for index in range(count)]


def _compare_pytree(actual: Any, expected: Any, node: Any, path: str,
                    found: _Findings) -> None:
    """Children of a node registered with torch.utils._pytree, as exporters flatten it."""
    e_children, e_context = node.flatten_fn(expected)
    a_children, a_context = node.flatten_fn(actual)
    # The context says what each child is (a dict's keys, a cache's layer
    # names); when it differs, pairing children by position would mislead.
    # A context that == cannot judge counts as different: a false fail, not a pass.
    if not _equality(a_context, e_context) or len(a_children) != len(e_children):
        found.problem(path, f"pytree context {_short_repr(a_context)} != eager "
                            f"{_short_repr(e_context)}", structural=True)
        return
    keys = _pytree_keys(node, expected, len(e_children))
    for key, a, e in zip(keys, a_children, e_children):
        _walk(a, e, f"{path}{key}", found)


def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _compare_content(actual: Any, expected: Any, path: str, found: _Findings) -> None:
    """Pytree children, else dataclass fields, else attributes, each with the normal walk."""
    node = pytree.SUPPORTED_NODES.get(type(expected))
    if node is not None:
        _compare_pytree(actual, expected, node, path, found)
    elif _is_dataclass_instance(expected):
        names = [field.name for field in dataclasses.fields(expected)]
        _compare_named({name: getattr(actual, name) for name in names},
                       {name: getattr(expected, name) for name in names}, path, found, "fields")
    else:
        _compare_named(_state(actual), _state(expected), path, found, "attributes")


def _equality_verdict(actual: Any, expected: Any) -> bool | None:
    """actual == expected where == is the judge; None where content is compared instead."""
    if pytree.SUPPORTED_NODES.get(type(expected)) is not None or _is_dataclass_instance(expected):
        # Their children get tolerances; a dataclass's own == compares tuples
        # of tensors, which raises.
        return None
    state = _state(expected)
    if state and type(expected).__eq__ is object.__eq__:
        return None  # identity: two caches holding identical tensors would differ
    equal = _equality(actual, expected)
    if equal is None and not state:
        return False  # == is unusable and there is nothing else to compare
    return equal


def _compare_other(actual: Any, expected: Any, path: str, found: _Findings) -> None:
    """Objects by what they hold; by their own == only where it gives a bool."""
    equal = _equality_verdict(actual, expected)
    if equal is not None:
        if not equal:
            found.problem(path, f"{_short_repr(actual)} != eager {_short_repr(expected)}")
        return
    if type(actual) is not type(expected):
        _type_problem(actual, expected, path, found)
        return
    pair = (id(actual), id(expected))
    if pair in found.open_objects:
        return  # an object that refers to itself: its content is being compared above
    found.open_objects.add(pair)
    try:
        _compare_content(actual, expected, path, found)
    finally:
        found.open_objects.discard(pair)


# ---------------------------------------------------------------- walk

def _compare_sequence(actual, expected, path: str, found: _Findings) -> None:
    if len(actual) != len(expected):
        found.problem(path, f"eager returned {_describe(expected)}, "
                            f"the artifact returned {_describe(actual)}", structural=True)
        return
    # TorchScript returns plain tuples for namedtuples, so positions decide.
    for index, (a, e) in enumerate(zip(actual, expected)):
        _walk(a, e, _child_path(path, expected, index), found)


def _compare_mapping(actual, expected, path: str, found: _Findings) -> None:
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    if missing or extra:
        parts = [f"{label} {keys}" for label, keys in (("missing", missing), ("unexpected", extra))
                 if keys]
        found.problem(path, "keys differ from eager: " + ", ".join(parts), structural=True)
    for key in expected:
        if key in actual:
            _walk(actual[key], expected[key], _child_path(path, expected, key), found)


_COMPARE_BY_FAMILY = {
    "tensor": _compare_tensor,
    "sequence": _compare_sequence,
    "mapping": _compare_mapping,
    "scalar": _compare_scalar,
    "other": _compare_other,
}


def _walk(actual: Any, expected: Any, path: str, found: _Findings) -> None:
    family = _family(expected)
    if _family(actual) != family:
        _type_problem(actual, expected, path, found)
        return
    if family != "none":
        _COMPARE_BY_FAMILY[family](actual, expected, path, found)


def _topk_agree(pair: tuple[torch.Tensor, torch.Tensor] | None, k: int | None) -> bool | None:
    """Whether each row's top-k class set agrees, for [N, C] float logits."""
    if pair is None or not k or k < 1:
        return None
    a, e = pair
    if e.dim() != 2 or not e.is_floating_point() or e.shape[1] < k:
        return None

    def classes(t):
        return t.to(torch.float64).topk(k, dim=1).indices.sort(dim=1).values

    return bool(torch.equal(classes(a), classes(e)))


def compare(actual: Any, expected: Any, tolerance: Tolerance | None = None,
            topk: int | None = None) -> Comparison:
    """Compare an artifact's (possibly nested) outputs with eager's.

    `tolerance` overrides the dtype defaults for every floating (complex,
    quantized) leaf; integers and bools are always exact. `topk` asks
    whether the first output, when it is [N, C] logits, ranks the same top-k
    classes; that is reported, and never changes `ok`.
    """
    found = _Findings(tolerance)
    _walk(actual, expected, "output", found)
    tol = found.tolerance()
    return Comparison(
        ok=not found.problems,
        problems=found.problems,
        max_abs=found.max_abs,
        max_rel=found.max_rel,
        mismatch_fraction=found.mismatched / found.total if found.total else 0.0,
        tolerance={"rtol": tol.rtol, "atol": tol.atol},
        topk_agree=_topk_agree(found.topk_pair, topk),
        mismatched=found.mismatched,
        total=found.total,
        topk=topk,
        structural_problems=found.structural,
    )


def element_misses(actual: torch.Tensor, expected: torch.Tensor, override: Tolerance | None,
                   like: torch.Tensor | None = None) -> torch.Tensor | None:
    """Elementwise: where `actual` is outside tolerance of `expected`, by the rule every
    comparison uses, with the tolerance of `like`'s dtype (default `expected`'s): a
    float64 reference judges a float32 artifact by float32's tolerance. None when the
    shapes differ."""
    a, e = _numeric(_plain(actual)), _numeric(_plain(expected))
    if a.shape != e.shape:
        return None
    return _verdict(a, e, tolerance_for(_numeric(_plain(like if like is not None else
                                                         expected)), override)).bad
