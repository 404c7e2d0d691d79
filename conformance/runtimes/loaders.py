"""Calling what a runtime loaded: each call on its own copy of the inputs, in inference
mode; and torch.compile, the runtime of the paths that save nothing."""
from __future__ import annotations

from typing import Any, Callable

from conformance.calling import call


def compile_model(model: Callable, backend: str) -> Callable:
    """torch.compile with a runtime's backend, after dropping every earlier compile:
    Dynamo's per-code cache is shared by all models with the same forward (resnet18
    and resnet50), and a full cache silently falls back to eager."""
    import torch

    torch._dynamo.reset()
    return torch.compile(model, backend=backend)


def copy_inputs(inputs: tuple) -> tuple:
    """A copy of every tensor in the inputs (nested ones too), for one call."""
    import torch
    from torch.utils import _pytree

    return tuple(_pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v,
                                  value) for value in inputs)


def run(loaded: Callable, inputs: tuple, keywords: tuple[str, ...] = ()) -> Any:
    """Call `loaded` on flat inputs, the last `keywords` by name (see conformance.calling)."""
    import torch

    with torch.inference_mode():
        return call(loaded, inputs, keywords)
