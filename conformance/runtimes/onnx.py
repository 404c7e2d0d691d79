"""The ONNX runtimes: ONNX Runtime (with its graph optimizations, and without them) and
the ONNX reference evaluator, a pure-numpy oracle. Each returns a flat list of tensors,
in the order of the graph's outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from conformance.runtimes import thread_budget


class OnnxCallable:
    """Feeds tensors to an ONNX session in the graph's input order. The suite's flat inputs
    are in that order (positional ones, then keyword ones in signature order, as the
    exporters write them); names are not trusted to say which is which, since a case may
    name the graph's inputs itself, and the io_names check compares those names."""

    def __init__(self, input_names: list[str], run: Callable[[dict], list], device: str):
        self.input_names = input_names
        self._run = run
        self.device = device

    def __call__(self, *inputs, **keywords) -> list:
        import numpy as np
        import torch

        given = (*inputs, *keywords.values())
        if len(given) != len(self.input_names):
            raise ValueError(f"the ONNX graph takes {len(self.input_names)} inputs "
                             f"{self.input_names}, the case gives {len(given)}")
        feeds = {name: value.detach().cpu().numpy() for name, value in zip(self.input_names, given)}
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
