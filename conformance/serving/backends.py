"""What runs the artifact inside the server: TorchScript in torch, ONNX in ONNX Runtime.
Each takes numpy arrays and gives the flat list of output arrays, in order (the tensor
leaves of a TorchScript module's outputs; the graph's outputs for ONNX)."""
from __future__ import annotations

import threading
from pathlib import Path


class TorchScriptBackend:
    def __init__(self, file: Path, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.module = torch.jit.load(str(file), map_location="cpu").eval()

    def __call__(self, args: list, kwargs: dict) -> list:
        import torch
        from torch.utils import _pytree

        tensors = [torch.from_numpy(a) for a in args]
        named = {name: torch.from_numpy(a) for name, a in kwargs.items()}
        with torch.inference_mode():
            outputs = self.module(*tensors, **named)
        return [leaf.numpy() for leaf in _pytree.tree_leaves(outputs)
                if isinstance(leaf, torch.Tensor)]


class OnnxBackend:
    def __init__(self, file: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(file), options,
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, args: list, kwargs: dict) -> list:
        given = [*args, *kwargs.values()]
        if len(given) != len(self.input_names):
            raise ValueError(f"the ONNX graph takes {len(self.input_names)} inputs "
                             f"{self.input_names}, the request gives {len(given)}")
        return list(self.session.run(None, dict(zip(self.input_names, given))))


BACKENDS = {".pt": TorchScriptBackend, ".onnx": OnnxBackend}


def backend_for(file: Path, threads: int | None = None):
    """The backend of an artifact, by its suffix; one call at a time (a model's own
    threads do the parallel work, and a call is not interleaved with another's)."""
    make = BACKENDS.get(Path(file).suffix)
    if make is None:
        raise ValueError(f"the serve runtime serves {sorted(BACKENDS)} files, not {file}")
    return Serialized(make(Path(file), threads))


class Serialized:
    def __init__(self, backend):
        self.backend, self.lock = backend, threading.Lock()

    def __call__(self, args: list, kwargs: dict) -> list:
        with self.lock:
            return self.backend(args, kwargs)
