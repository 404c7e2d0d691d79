"""Targets: a path on a runtime, on a device. Their ids are the `-k` words.

Which targets a case gets is data: each export path's row
(`conformance.exporters.table`) says which opsets it is exported at and which
runtimes run its artifact, for which cases and on which devices.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Callable

from conformance.exporters.path import ALL, ExportPath
from conformance.exporters.table import PATHS
from conformance.runtimes.loaders import compile_model
from conformance.runtimes.table import RUNTIMES
from conformance.tuning import inductor_config, tuning_of


@dataclasses.dataclass(frozen=True)
class Target:
    path: str
    runtime: str
    device: str = "cpu"
    opset: int | None = None

    @property
    def path_id(self) -> str:
        """The path with its opset: `onnx-op17`; a path without opsets is just its name."""
        return self.path if self.opset is None else f"{self.path}-op{self.opset}"

    @property
    def id(self) -> str:
        return f"{self.path_id}-{self.runtime}-{self.device}"

    def __str__(self) -> str:
        return self.id


def path_row(name: str) -> ExportPath | None:
    """The export path's row; None for a name the table lacks (the latency run's eager)."""
    return PATHS.get(name)


def slow_cell(tags: frozenset, target: "Target") -> bool:
    """Slow cells are left out of the CI tier: a slow case, a path that compiles with
    Inductor except for the cases tagged `pt2-ci`, and a tuned variant except for the
    cases tagged `tuning-ci` (small representative sets)."""
    row = path_row(target.path)
    if "slow" in tags:
        return True
    if row is not None and row.inductor and "pt2-ci" not in tags:
        return True
    return tuning_of(target.path, target.runtime) is not None and "tuning-ci" not in tags


def compile_timing(target: "Target") -> str:
    """The timings key of a compiled target's first call, which compiles it:
    `compile_inductor_s`, and `compile_tuned_inductor_s` for compile-tuned."""
    return f"{target.path.replace('-', '_')}_{target.runtime}_s"


def flat_outputs(target: "Target") -> bool:
    """Whether the target returns a flat list of tensors rather than eager's structure:
    the ONNX runtimes, and an AOTInductor package run from C++ (a vector of tensors)."""
    row = path_row(target.path)
    return RUNTIMES[target.runtime].flat_outputs or (
        row is not None and target.runtime in row.flat_outputs_on)


def _applies(scope: str, tags: frozenset) -> bool:
    return scope == ALL or scope in tags


def targets_for(tags: frozenset) -> list[Target]:
    """The targets of a case with these tags, in the order of the paths' rows, cpu first.
    A tuned runtime, and the serve runtime, run the path's first opset only: the opset
    sweep is the exporter's."""
    found = [Target(row.name, runs.runtime, device, opset)
             for row in PATHS.values()
             for opset, scope in row.opsets if _applies(scope, tags)
             for runs in row.runs_on if _applies(runs.cases, tags)
             if opset == row.opsets[0][0] or not (tuning_of(row.name, runs.runtime)
                                                  or runs.runtime == "serve")
             for device in runs.devices]
    return sorted(found, key=lambda t: t.device != "cpu")


def loader(target: "Target") -> Callable[[Path, str], Callable] | None:
    """The function (file, device) -> callable that loads the target's artifact in
    Python; None for a runtime in the harness, or a path that saves nothing."""
    runtime, row = RUNTIMES[target.runtime], path_row(target.path)
    return runtime.load or (row.loaders.get(target.runtime) if row else None)


def loader_optimizes(path: str) -> bool:
    """Whether the path's modules are optimized for inference where they are loaded: its
    Python loader does so, and the harness must do as much in C++."""
    from conformance.exporters.torchscript import load_torchscript_optimized

    row = path_row(path)
    return row is not None and row.loaders.get("torch") is load_torchscript_optimized


def loader_name(target: "Target") -> str:
    """The target's loader as "package.module:name", for a process of its own."""
    found = loader(target)
    if found is None:
        raise ValueError(f"target {target.id} has no Python loader")
    return f"{found.__module__}:{found.__qualname__}"


def load(target: "Target", file: Path, harness=None) -> Callable:
    """A callable that runs the target's artifact; `harness` is the session's libtorch
    process. A path that saves nothing has no file to load: see `compile`."""
    if RUNTIMES[target.runtime].in_harness:
        from conformance.runtimes.libtorch import LibtorchModel

        return LibtorchModel(harness, file, target.device,
                             optimize=loader_optimizes(target.path))
    return loader(target)(file, target.device)


def compile(model: Callable, target: "Target") -> Callable:
    """The model compiled in process with the target runtime's torch.compile backend, and
    the Inductor settings of its tuning, if any."""
    tuning = tuning_of(target.path, target.runtime)
    return compile_model(model, RUNTIMES[target.runtime].compile_backend,
                         inductor_config(tuning.name) if tuning else {})


@functools.lru_cache(maxsize=None)
def missing(runtime: str, device: str, path: str = "") -> tuple[str, str] | None:
    """What this machine lacks for a target, or None: (the name `--require` takes for
    it, the reason). A runtime, a device, or the compiler a path needs."""
    for name, reason in ((runtime, _missing_runtime(runtime)),
                         (device, _missing_device(runtime, device)),
                         ("compiler", _missing_compiler(path, runtime))):
        if reason:
            return name, reason
    return None


def _missing_compiler(path: str, runtime: str) -> str | None:
    """Inductor writes C++ for the CPU and compiles it with the system compiler."""
    import shutil

    row = path_row(path)
    if row is None or runtime not in row.compiler_for:
        return None
    if shutil.which(os.environ.get("CXX", "")) or shutil.which("g++") or shutil.which("c++"):
        return None
    return f"the {path} path compiles C++ with Inductor, and there is no g++, c++ or $CXX"


def _missing_runtime(runtime: str) -> str | None:
    return RUNTIMES[runtime].lacks()


def _missing_device(runtime: str, device: str) -> str | None:
    if device == "cpu":
        return None
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device on this machine (torch.cuda.is_available() is False)"
    if runtime.startswith("onnxruntime"):
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return None
