"""How a case's inputs reach a model: by position, by keyword, or both.

A case's `example` (and `probes`) returns a tuple of positional inputs, a dict of keyword
inputs, or `Inputs(*args, **kwargs)` for both. Inside the suite the inputs of a case are
one flat tuple: the positional ones, then the keyword ones in the order of the model's
forward signature. Probes, input spaces and drawn inputs work on those positions; the
names of the keyword inputs (`keywords`) travel beside them, and every call, export and
runtime spreads the tuple back into the form it takes (`split`).

The signature order matters because the exporters disagree on it otherwise: the
TorchScript-based ONNX exporter orders keyword inputs by the signature, the dynamo-based
one and torch.export by the dict.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, Sequence


class Inputs:
    """A model's inputs, positional and by keyword: `Inputs(ids, attention_mask=mask)`."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        shown = [_short(a) for a in self.args] + [f"{k}={_short(v)}" for k, v in self.kwargs.items()]
        return f"Inputs({', '.join(shown)})"


def _short(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"<{type(value).__name__} {tuple(shape)}>" if shape is not None else repr(value)


def is_inputs(value: Any) -> bool:
    """Whether a case's `example` returned something the suite can call a model with."""
    return isinstance(value, (Inputs, Mapping, tuple, list))


def parts(value: Any) -> tuple[tuple, dict]:
    """The positional and keyword inputs of what an `example` returned."""
    if isinstance(value, Inputs):
        return tuple(value.args), dict(value.kwargs)
    if isinstance(value, Mapping):
        return (), dict(value)
    if isinstance(value, (tuple, list)):
        return tuple(value), {}
    raise TypeError(f"inputs must be a tuple, a dict or conformance.Inputs, not "
                    f"{type(value).__name__}")


def flat(value: Any, order: Sequence[str] = ()) -> tuple[tuple, tuple[str, ...]]:
    """The flat inputs and the names of the keyword ones, the keywords in `order` (the
    forward signature's parameters); names outside it (a **kwargs) keep their order, last."""
    args, kwargs = parts(value)
    names = tuple(n for n in order if n in kwargs) + tuple(n for n in kwargs if n not in order)
    return args + tuple(kwargs[n] for n in names), names


def split(inputs: Sequence, keywords: Sequence[str] = ()) -> tuple[tuple, dict]:
    """Flat inputs back into positional and keyword ones."""
    cut = len(inputs) - len(keywords)
    if cut < 0:
        raise ValueError(f"{len(inputs)} inputs cannot carry the {len(keywords)} keyword "
                         f"inputs {list(keywords)}")
    return tuple(inputs[:cut]), dict(zip(keywords, inputs[cut:]))


def call(fn: Callable, inputs: Sequence, keywords: Sequence[str] = ()) -> Any:
    args, kwargs = split(inputs, keywords)
    return fn(*args, **kwargs)


def parameter_names(model: Any) -> tuple[str, ...]:
    """The names of the parameters of a model's forward (a plain function's own), in
    order; () when there is no signature to read (a ScriptFunction, a builtin)."""
    function = getattr(model, "forward", model)
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


def all_by_keyword(model: Any, inputs: Sequence, keywords: Sequence[str]) -> dict:
    """Every input by its parameter's name: torch.jit.trace takes positional inputs or
    keyword inputs, never both."""
    args, kwargs = split(inputs, keywords)
    names = parameter_names(model)
    if len(args) > len(names):
        raise TypeError(f"{len(args)} positional inputs with keyword inputs need a forward "
                        f"that names its parameters; it names {list(names)}")
    return {**dict(zip(names, args)), **kwargs}
