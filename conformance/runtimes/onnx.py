"""The ONNX runtimes: ONNX Runtime (with its graph optimizations, and without them) and
the ONNX reference evaluator, a pure-numpy oracle. Each returns a flat list of tensors,
in the order of the graph's outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from conformance.runtimes import thread_budget


class OnnxCallable:
    """Feeds tensors to an ONNX session: keyword inputs by their names, positional ones to
    the graph's other inputs in order."""

    def __init__(self, input_names: list[str], run: Callable[[dict], list], device: str):
        self.input_names = input_names
        self._run = run
        self.device = device

    def __call__(self, *inputs, **keywords) -> list:
        import numpy as np
        import torch

        unknown = [name for name in keywords if name not in self.input_names]
        positional = [name for name in self.input_names if name not in keywords]
        if unknown or len(inputs) != len(positional):
            raise ValueError(f"the ONNX graph takes the inputs {self.input_names}; the case "
                             f"gives {len(inputs)} positional ones and "
                             f"{list(keywords) or 'none'} by keyword")
        given = {**dict(zip(positional, inputs)), **keywords}
        feeds = {name: value.detach().cpu().numpy() for name, value in given.items()}
        return [torch.from_numpy(np.ascontiguousarray(out)) for out in self._run(feeds)]


def load_onnxruntime(file: Path, device: str, optimize: bool = True) -> Callable:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    if thread_budget.installed():  # the latency run's; a conformance run leaves ORT its default
        thread_budget.installed().onnxruntime_options(options)
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
