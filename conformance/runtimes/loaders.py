"""Calling what a runtime loaded: each call on its own copy of the inputs, in inference
mode; and torch.compile, the runtime of the paths that save nothing."""
from __future__ import annotations

from typing import Any, Callable

from conformance.calling import call


def compile_model(model: Callable, backend: str, inductor_config: dict | None = None
                  ) -> Callable:
    """torch.compile with a runtime's backend, after dropping every earlier compile:
    Dynamo's per-code cache is shared by all models with the same forward (resnet18
    and resnet50), and a full cache silently falls back to eager. With `inductor_config`
    (torch._inductor.config names and values), every call runs with those set."""
    import torch

    torch._dynamo.reset()
    allow_recompiles()
    compiled = torch.compile(model, backend=backend)
    return WithInductorConfig(compiled, inductor_config) if inductor_config else compiled


# Past Dynamo's recompile limit (8 compiles of one function) a call on sizes that no
# compile covers runs in eager, silently: a search drawing many sizes would then compare
# eager with itself and pass. The nightly searches of the built-in cases reached 8
# compiles of one function; the suite's compiles get room for this many, and raise past it.
RECOMPILE_LIMIT = 64


def allow_recompiles(limit: int = RECOMPILE_LIMIT) -> None:
    """Let a compiled model recompile `limit` times, and raise rather than fall back to
    eager past that: set for the whole process (Dynamo reads it when a call misses every
    compile; setting it around each call would add to the latency cells' time)."""
    from torch._dynamo import config

    config.recompile_limit = max(config.recompile_limit, limit)
    config.fail_on_recompile_limit_hit = True


def recompile_limit_hint(error: object) -> str | None:
    """For the error a compiled model raises past its recompile limit: what it means."""
    if "fail_on_recompile_limit_hit" not in str(error):
        return None
    from torch._dynamo import config

    return (f"torch.compile compiled the model {config.recompile_limit} times (once per new "
            "set of sizes or guards, torch._dynamo.config.recompile_limit) and stopped: with "
            "the default limit (8) these inputs would run in eager, uncompiled; the "
            "suite raises instead, so that no input is judged on eager's own outputs. "
            'TORCH_LOGS="recompiles" says what each recompile was for')


class WithInductorConfig:
    """A compiled model whose calls see these Inductor settings. Some (freezing) are read
    when Dynamo captures the graph, which torch.compile's `options=` does not reach, and a
    recompile (another input size) must see them too; other targets in this process must
    not, so they are set around each call, not for good. Set directly, not with
    `config.patch`: a patch context costs about 11 us a call, setting about 3 us, and the
    latency cells time this call."""

    def __init__(self, compiled: Callable, config: dict):
        self.compiled, self.config = compiled, dict(config)

    def __call__(self, *args, **kwargs):
        from torch._inductor import config

        before = {name: getattr(config, name) for name in self.config}
        for name, value in self.config.items():
            setattr(config, name, value)
        try:
            return self.compiled(*args, **kwargs)
        finally:
            for name, value in before.items():
                setattr(config, name, value)


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
