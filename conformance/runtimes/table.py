"""The runtimes: one row each, everything the suite needs to know about a runtime.

Adding a runtime is a loader (a module of this package) and one row. Every field is
required: a row that forgets one is refused when this module is imported, instead
of giving a runtime a silent default. Which paths' artifacts a runtime runs, on
which devices, is said by the paths (`conformance.exporters.table`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from conformance.runtimes import onnx


@dataclasses.dataclass(frozen=True, kw_only=True)
class Runtime:
    name: str
    # Its loader, (file, device) -> a callable, when the runtime alone says what the file
    # is; None when each path brings its own (`torch` loads TorchScript, exported programs
    # and AOTInductor packages alike), or for the in-harness and compile runtimes.
    load: Callable[[Path, str], Callable] | None
    # What it makes of an artifact once, before loading it, kept beside the artifact (ONNX
    # Runtime's offline optimization): (file, device) -> None, or None. Timed apart from
    # the load, which is what a deployment pays at every start.
    prepare: Callable[[Path, str], None] | None
    # The torch.compile backend, for the paths that save nothing and compile in process.
    compile_backend: str | None
    # Runs in the libtorch harness, a C++ process of the suite's own, not in Python.
    in_harness: bool
    # Returns a flat list of tensors, compared with eager's tensor leaves in order.
    flat_outputs: bool
    # Calls the model on the caller's own tensors, in this process: a model that writes
    # into its inputs must write what eager writes (the check mutates_like_eager).
    calls_on_callers_tensors: bool
    # Loads the artifact into the exporting Python process, where it could silently
    # depend on that process's state: the check fresh_process loads it in a new one.
    shares_exporting_process: bool
    # What this machine lacks to run it, or None: a function, since finding out may
    # import a package or look for a toolchain.
    lacks: Callable[[], str | None]


def nothing_lacking() -> str | None:
    return None


def lacks_package(runtime: str, module: str) -> Callable[[], str | None]:
    def lacks() -> str | None:
        try:
            __import__(module)
        except ImportError as exc:
            return f"runtime {runtime} needs the {module} package: {exc}"
        return None

    return lacks


def load_served(file: Path, device: str) -> Callable:
    from conformance.serving.client import load_served

    return load_served(file, device)


def lacks_serving() -> str | None:
    for module in ("flask", "waitress"):
        missing = lacks_package("serve", module)()
        if missing:
            return missing + " (pip install 'conformance[serve]')"
    return None


def lacks_harness_toolchain() -> str | None:
    from conformance.runtimes.libtorch import toolchain_problem

    return toolchain_problem()


RUNTIMES: dict[str, Runtime] = {}


def register(runtime: Runtime) -> Runtime:
    if runtime.name in RUNTIMES:
        raise ValueError(f"runtime {runtime.name!r} is registered twice")
    RUNTIMES[runtime.name] = runtime
    return runtime


for _row in (
    # The torch runtime: torch.jit.load, torch.export.load, aoti_load_package, each
    # path's own loader, in the suite's Python process.
    Runtime(name="torch", load=None, prepare=None, compile_backend=None, in_harness=False,
            flat_outputs=False, calls_on_callers_tensors=True, shares_exporting_process=True,
            lacks=nothing_lacking),
    # TorchScript and AOTInductor packages in C++, through the libtorch harness; an
    # AOTInductor package returns a vector of tensors there (see the aoti path's row).
    Runtime(name="libtorch", load=None, prepare=None, compile_backend=None, in_harness=True,
            flat_outputs=False, calls_on_callers_tensors=False, shares_exporting_process=False,
            lacks=lacks_harness_toolchain),
    # ONNX Runtime gets numpy copies of the inputs by design.
    Runtime(name="onnxruntime", load=onnx.load_onnxruntime, prepare=None, compile_backend=None,
            in_harness=False, flat_outputs=True, calls_on_callers_tensors=False,
            shares_exporting_process=False, lacks=lacks_package("onnxruntime", "onnxruntime")),
    # Its offline mode, as the onnxruntime-tuned row of conformance.tuning says.
    Runtime(name="onnxruntime-tuned", load=onnx.load_onnxruntime_tuned,
            prepare=onnx.prepare_onnxruntime_tuned, compile_backend=None,
            in_harness=False, flat_outputs=True, calls_on_callers_tensors=False,
            shares_exporting_process=False,
            lacks=lacks_package("onnxruntime-tuned", "onnxruntime")),
    # Optimizations off: a mismatch only under optimization is the optimizer's.
    Runtime(name="onnxruntime-noopt", load=onnx.load_onnxruntime_noopt, prepare=None,
            compile_backend=None,
            in_harness=False, flat_outputs=True, calls_on_callers_tensors=False,
            shares_exporting_process=False,
            lacks=lacks_package("onnxruntime-noopt", "onnxruntime")),
    # A pure-numpy oracle, independent of ONNX Runtime.
    Runtime(name="onnx-reference", load=onnx.load_onnx_reference, prepare=None,
            compile_backend=None,
            in_harness=False, flat_outputs=True, calls_on_callers_tensors=False,
            shares_exporting_process=False, lacks=lacks_package("onnx-reference", "onnx")),
    # Inductor generates code; aot_eager runs the same Dynamo and AOTAutograd graphs with
    # eager kernels, so a mismatch under Inductor only is Inductor's code generation.
    Runtime(name="inductor", load=None, prepare=None, compile_backend="inductor",
            in_harness=False, flat_outputs=False, calls_on_callers_tensors=True, shares_exporting_process=False,
            lacks=nothing_lacking),
    Runtime(name="aot_eager", load=None, prepare=None, compile_backend="aot_eager",
            in_harness=False, flat_outputs=False, calls_on_callers_tensors=True, shares_exporting_process=False,
            lacks=nothing_lacking),
    # The artifact behind a real HTTP server in a process of its own (Flask under
    # waitress), called over the loopback with lossless tensors: a flat list back.
    Runtime(name="serve", load=load_served, prepare=None, compile_backend=None,
            in_harness=False, flat_outputs=True, calls_on_callers_tensors=False,
            shares_exporting_process=False, lacks=lacks_serving),
):
    register(_row)
