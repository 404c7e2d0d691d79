"""Runtimes: what executes an artifact, in this process.

A loader takes the artifact file and a device and returns a callable; ONNX
runtimes return a flat list of tensors, in the order of the graph's outputs.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from conformance.runtimes import threads as budget
def load_torchscript(file: Path, device: str) -> Callable:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(file), map_location=device)
    module.eval()
    return module


class OnnxCallable:
    """Feeds positional tensors to an ONNX session by the graph's input names."""

    def __init__(self, input_names: list[str], run: Callable[[dict], list], device: str):
        self.input_names = input_names
        self._run = run
        self.device = device

    def __call__(self, *inputs) -> list:
        import numpy as np
        import torch

        if len(inputs) != len(self.input_names):
            raise ValueError(f"the ONNX graph takes {len(self.input_names)} inputs "
                             f"{self.input_names}, the case gives {len(inputs)}")
        feeds = {name: value.detach().cpu().numpy() for name, value in zip(self.input_names, inputs)}
        return [torch.from_numpy(np.ascontiguousarray(out)) for out in self._run(feeds)]


def load_onnxruntime(file: Path, device: str, optimize: bool = True) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    if budget.installed():  # the latency run's; a conformance run leaves ORT its default
        budget.installed().onnxruntime_options(options)
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    session = ort.InferenceSession(str(file), options, providers=[provider])
    names = [i.name for i in session.get_inputs()]
    return OnnxCallable(names, lambda feeds: session.run(None, feeds), device)


def load_onnxruntime_noopt(file: Path, device: str) -> Callable:
    return load_onnxruntime(file, device, optimize=False)


def load_onnx_reference(file: Path, device: str) -> Callable:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(file))
    return OnnxCallable(list(evaluator.input_names), lambda feeds: evaluator.run(None, feeds),
                        device)


LOADERS: dict[str, Callable[[Path, str], Callable]] = {
    "torch": load_torchscript,
    "onnxruntime": load_onnxruntime,
    "onnxruntime-noopt": load_onnxruntime_noopt,
    "onnx-reference": load_onnx_reference,
}


def load_exported_program(file: Path, device: str) -> Callable:
    import torch

    return torch.export.load(str(file)).module()


def load_aoti_package(file: Path, device: str) -> Callable:
    import torch

    return torch._inductor.aoti_load_package(str(file))


# Loaders for one path's artifacts on a runtime, where the runtime alone does not say
# what the file is (`torch` loads TorchScript, exported programs and AOTI packages).
PATH_LOADERS: dict[tuple[str, str], Callable[[Path, str], Callable]] = {
    ("export", "torch"): load_exported_program,
    ("aoti", "torch"): load_aoti_package,
}

# torch.compile backends by runtime name: Inductor generates code; aot_eager runs
# the same Dynamo and AOTAutograd graphs with eager kernels, so a mismatch under
# Inductor only is Inductor's code generation.
COMPILE_BACKENDS: dict[str, Any] = {"inductor": "inductor", "aot_eager": "aot_eager"}


def compile_model(model: Callable, runtime: str) -> Callable:
    """torch.compile with the runtime's backend, after dropping every earlier compile:
    Dynamo's per-code cache is shared by all models with the same forward (resnet18
    and resnet50), and a full cache silently falls back to eager."""
    import torch

    torch._dynamo.reset()
    return torch.compile(model, backend=COMPILE_BACKENDS[runtime])


def load(runtime: str, file: Path, device: str, harness=None, path: str | None = None) -> Callable:
    """A callable that runs the artifact; `harness` is the session's libtorch process."""
    if runtime == "libtorch":
        from conformance.runtimes.libtorch import LibtorchModel

        return LibtorchModel(harness, file, device)
    if (path, runtime) in PATH_LOADERS:
        return PATH_LOADERS[(path, runtime)](file, device)
    return LOADERS[runtime](file, device)


def copy_inputs(inputs: tuple) -> tuple:
    """A copy of every tensor in the inputs (nested ones too), for one call."""
    import torch
    from torch.utils import _pytree

    return tuple(_pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v,
                                  value) for value in inputs)


def run(loaded: Callable, inputs: tuple) -> Any:
    import torch

    with torch.inference_mode():
        return loaded(*inputs)
