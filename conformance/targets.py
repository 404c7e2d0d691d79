"""Targets: a path on a runtime, on a device. Their ids are the `-k` words.

Which targets a case gets is data: `EXPORTS` says which artifacts are made for
which cases, `RUNTIMES` which runtimes run each path's artifact.
"""
from __future__ import annotations

import dataclasses
import functools
import os

DEVICES = ("cpu", "cuda")


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


ALL = "all"
# (path, opset, the cases it applies to: ALL or a case tag)
EXPORTS = (
    ("trace", None, ALL),
    ("script", None, ALL),
    # The TorchScript-based exporter at opset 17, what most deployed models use,
    # and the dynamo exporter at its default opset.
    ("onnx", 17, ALL),
    ("onnx-dynamo", 20, ALL),
    # The opset sweep, for the cases tagged `opset-sweep`: 10 is below the first
    # opset with cubic Resize, 20 the newest the TorchScript-based exporter
    # supports; 18 is the oldest the dynamo exporter supports.
    ("onnx", 10, "opset-sweep"),
    ("onnx", 11, "opset-sweep"),
    ("onnx", 13, "opset-sweep"),
    ("onnx", 20, "opset-sweep"),
    ("onnx-dynamo", 18, "opset-sweep"),
    # The PT2 paths: torch.export to a saved program, torch.compile (in process,
    # nothing saved) and an AOTInductor package compiled from the exported program.
    ("export", None, ALL),
    ("compile", None, ALL),
    ("aoti", None, ALL),
)

# path -> (runtime, the cases it applies to, the devices it runs on)
RUNTIMES = {
    # TorchScript in the Python interpreter, and in C++ through the libtorch harness.
    "trace": (("torch", ALL, DEVICES), ("libtorch", ALL, DEVICES)),
    "script": (("torch", ALL, DEVICES), ("libtorch", ALL, DEVICES)),
    "onnx": (
        ("onnxruntime", ALL, DEVICES),
        # Optimizations off: a mismatch only under optimization is the optimizer's.
        ("onnxruntime-noopt", ALL, ("cpu",)),
        # A pure-numpy oracle, independent of ONNX Runtime; slow, so small cases only.
        ("onnx-reference", "small", ("cpu",)),
    ),
}
RUNTIMES["onnx-dynamo"] = RUNTIMES["onnx"]
RUNTIMES["export"] = (("torch", ALL, DEVICES),)  # torch.export.load(...).module()
# Inductor, and aot_eager: the same captured graphs on eager kernels, a cheap second
# opinion that tells a capture problem from a code generation one.
RUNTIMES["compile"] = (("inductor", ALL, DEVICES), ("aot_eager", ALL, ("cpu",)))
# aoti_load_package in Python, AOTIModelPackageLoader in the C++ harness.
RUNTIMES["aoti"] = (("torch", ALL, DEVICES), ("libtorch", ALL, DEVICES))

ONNX_PATHS = frozenset({"onnx", "onnx-dynamo"})
# Paths that go through torch.export: a dimension whose example size is 1 gets specialized,
# so a case with a dynamic batch is exported from a batch of 2.
DYNAMO_PATHS = frozenset({"onnx-dynamo", "export", "aoti"})
# Paths with no saved file: the model is compiled in the suite's own process.
IN_PROCESS_PATHS = frozenset({"compile"})
# Runtimes that return a flat list of tensors, compared with eager's tensor leaves in order.
FLAT_OUTPUT_RUNTIMES = frozenset({"onnxruntime", "onnxruntime-noopt", "onnx-reference"})


# Compiling with Inductor takes tens of seconds per model on two cores: these paths'
# cells are slow, except for the cases tagged `pt2-ci`, a small representative set
# that the CI tier keeps.
COMPILED_PATHS = frozenset({"compile", "aoti"})


def slow_cell(tags: frozenset, target: "Target") -> bool:
    return "slow" in tags or (target.path in COMPILED_PATHS and "pt2-ci" not in tags)


def flat_outputs(target: "Target") -> bool:
    """Whether the target returns a flat list of tensors rather than eager's structure:
    ONNX runtimes, and an AOTInductor package run from C++ (a vector of tensors)."""
    return target.runtime in FLAT_OUTPUT_RUNTIMES or (target.path, target.runtime) == (
        "aoti", "libtorch")


def _applies(scope: str, tags: frozenset) -> bool:
    return scope == ALL or scope in tags


def targets_for(tags: frozenset) -> list[Target]:
    """The targets of a case with these tags, cpu first."""
    found = [Target(path, runtime, device, opset)
             for path, opset, export_scope in EXPORTS if _applies(export_scope, tags)
             for runtime, runtime_scope, devices in RUNTIMES[path] if _applies(runtime_scope, tags)
             for device in devices]
    return sorted(found, key=lambda t: t.device != "cpu")


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

    if path not in COMPILED_PATHS or runtime == "aot_eager":
        return None
    if shutil.which(os.environ.get("CXX", "")) or shutil.which("g++") or shutil.which("c++"):
        return None
    return f"the {path} path compiles C++ with Inductor, and there is no g++, c++ or $CXX"


def _missing_runtime(runtime: str) -> str | None:
    if runtime == "libtorch":
        from conformance.runtimes.libtorch import toolchain_problem

        return toolchain_problem()
    module = {"onnxruntime": "onnxruntime", "onnxruntime-noopt": "onnxruntime",
              "onnx-reference": "onnx"}.get(runtime)
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as exc:
        return f"runtime {runtime} needs the {module} package: {exc}"
    return None


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
