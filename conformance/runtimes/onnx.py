"""The ONNX runtimes: ONNX Runtime (with its graph optimizations, and without them) and
the ONNX reference evaluator, a pure-numpy oracle. Each returns a flat list of tensors,
in the order of the graph's outputs."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from conformance.runtimes import thread_budget


@dataclasses.dataclass(frozen=True)
class SessionRecipe:
    """What an ONNX Runtime session is made of: the model file, the device and the
    options, the thread budget included as it was when the session was made. Another
    session of the same recipe runs the same graph with the same settings: a profiling
    twin of a timed session must not be timed with other threads or optimizations."""

    file: Path
    device: str
    optimize: bool
    budget: thread_budget.Budget | None

    def options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                                            if self.optimize
                                            else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
        if self.budget:  # the latency run's; a conformance run leaves ORT its default
            self.budget.onnxruntime_options(options)
        return options

    def session(self, profile_prefix: Path | None = None):
        """A new session; with `profile_prefix`, one that profiles everything it runs
        (ONNX Runtime's own profiler) into a file whose name starts with the prefix."""
        import onnxruntime as ort

        options = self.options()
        if profile_prefix is not None:
            options.enable_profiling = True
            options.profile_file_prefix = str(profile_prefix)
        return ort.InferenceSession(str(self.file), options, providers=[_provider(self.device)])


class OnnxCallable:
    """Feeds tensors to an ONNX session in the graph's input order. The suite's flat inputs
    are in that order (positional ones, then keyword ones in signature order, as the
    exporters write them); names are not trusted to say which is which, since a case may
    name the graph's inputs itself, and the io_names check compares those names.

    `recipe`: what an ONNX Runtime session was made of, so that a profiling twin can be
    made (`profiling_twin`); None for the reference evaluator, which has no profiler."""

    def __init__(self, input_names: list[str], run: Callable[[dict], list], device: str,
                 recipe: SessionRecipe | None = None):
        self.input_names = input_names
        self._run = run
        self.device = device
        self.recipe = recipe

    def __call__(self, *inputs, **keywords) -> list:
        import numpy as np
        import torch

        given = (*inputs, *keywords.values())
        if len(given) != len(self.input_names):
            raise ValueError(f"the ONNX graph takes {len(self.input_names)} inputs "
                             f"{self.input_names}, the case gives {len(given)}")
        feeds = {name: value.detach().cpu().numpy() for name, value in zip(self.input_names, given)}
        return [torch.from_numpy(np.ascontiguousarray(out)) for out in self._run(feeds)]

    def profiling_twin(self, prefix: Path) -> tuple["OnnxCallable", Callable[[], Path]]:
        """A separate session of the same recipe that profiles its runs, called like this
        one (the same conversion of the inputs), and the function that ends its profiling
        and gives the trace file (chrome-trace JSON). The timed session is left alone:
        profiling slows every run it records."""
        if self.recipe is None:
            raise ValueError("this ONNX callable was not made by ONNX Runtime: it has no "
                             "session to profile")
        session = self.recipe.session(profile_prefix=prefix)
        twin = OnnxCallable(self.input_names, lambda feeds: session.run(None, feeds),
                            self.device, self.recipe)
        return twin, lambda: Path(session.end_profiling())


def load_onnxruntime(file: Path, device: str, optimize: bool = True) -> Callable:
    recipe = SessionRecipe(Path(file), device, optimize, thread_budget.installed())
    session = recipe.session()
    names = [i.name for i in session.get_inputs()]
    return OnnxCallable(names, lambda feeds: session.run(None, feeds), device, recipe)


def load_onnxruntime_tuned(file: Path, device: str) -> Callable:
    """ONNX Runtime's offline mode: the graph optimized once at the full level and saved
    beside the artifact (`prepare_onnxruntime_tuned`), then loaded with the optimizations
    already applied (see the `onnxruntime-tuned` row of conformance.tuning)."""
    return load_onnxruntime(optimized_model(file, device), device, optimize=False)


def prepare_onnxruntime_tuned(file: Path, device: str) -> None:
    """The offline optimization, before the first load: the runtime row's `prepare`."""
    optimized_model(file, device)


def optimized_model(file: Path, device: str) -> Path:
    """The saved optimized model of `file`, made on first use. The full level's layout
    rewrites are specific to the execution provider and the processor (the NCHWc block
    follows its vector width), so the name carries ONNX Runtime's version, the device,
    the processor and the row's settings: a cache carried to another machine, or a
    changed row, makes another file instead of reusing this one."""
    import os

    import onnxruntime as ort

    saved = file.with_name(f"{file.stem}.ort{ort.__version__}-{device}-{_optimized_key()}.onnx")
    if saved.exists() and saved.stat().st_mtime >= file.stat().st_mtime:
        return saved  # made from this very file, not from one exported before it
    options = SessionRecipe(Path(file), device, True, None).options()
    partial = saved.with_name(f".{saved.name}.{os.getpid()}.partial")
    options.optimized_model_filepath = str(partial)
    try:
        ort.InferenceSession(str(file), options, providers=[_provider(device)])
        os.replace(partial, saved)  # atomic: another process never reads half a model
    finally:
        partial.unlink(missing_ok=True)
    return saved


def _optimized_key() -> str:
    """A digest of the onnxruntime-tuned row's settings and of this machine's processor."""
    import hashlib
    import json

    from conformance.tuning import TUNINGS

    parts = [json.dumps(TUNINGS["onnxruntime-tuned"].settings, sort_keys=True), _processor()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:10]


def _processor() -> str:
    """The processor's model and feature flags (Linux), else what platform knows of it."""
    import platform

    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    wanted = ("model name", "flags", "Features", "CPU part")
    found = dict.fromkeys(line for line in lines if line.split(":")[0].strip() in wanted)
    return "\n".join([platform.machine(), platform.processor(), *found])


def _provider(device: str) -> str:
    return "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"


def load_onnxruntime_noopt(file: Path, device: str) -> Callable:
    return load_onnxruntime(file, device, optimize=False)


def load_onnx_reference(file: Path, device: str) -> Callable:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(file))
    return OnnxCallable(list(evaluator.input_names), lambda feeds: evaluator.run(None, feeds),
                        device)
