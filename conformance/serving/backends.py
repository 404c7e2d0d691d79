"""What runs the artifact inside the server: the suite's own loaders (TorchScript with
torch.jit.load, ONNX with ONNX Runtime, on the thread budget the server installed), fed
numpy arrays and giving the flat list of output arrays, in order (the tensor leaves of a
TorchScript module's outputs; the graph's outputs for ONNX)."""
from __future__ import annotations

import threading
from pathlib import Path


def _loaders() -> dict:
    from conformance.exporters.torchscript import load_torchscript
    from conformance.runtimes.onnx import load_onnxruntime

    return {".pt": load_torchscript, ".onnx": load_onnxruntime}


class Loaded:
    """A loaded artifact called on arrays: torch tensors in, arrays of its leaves out."""

    def __init__(self, model):
        self.model = model

    def __call__(self, args: list, kwargs: dict) -> list:
        import torch
        from torch.utils import _pytree

        tensors = [torch.from_numpy(a) for a in args]
        named = {name: torch.from_numpy(a) for name, a in kwargs.items()}
        with torch.inference_mode():
            outputs = self.model(*tensors, **named)
        return [leaf.numpy() for leaf in _pytree.tree_leaves(outputs)
                if isinstance(leaf, torch.Tensor)]


def backend_for(file: Path):
    """The backend of an artifact, by its suffix, on the CPU; one call at a time (a
    model's own threads do the parallel work; calls are not interleaved)."""
    load = _loaders().get(Path(file).suffix)
    if load is None:
        raise ValueError(f"the serve runtime serves {sorted(_loaders())} files, not {file}")
    return Serialized(Loaded(load(Path(file), "cpu")))


class Serialized:
    def __init__(self, backend):
        self.backend, self.lock = backend, threading.Lock()

    def __call__(self, args: list, kwargs: dict) -> list:
        with self.lock:
            return self.backend(args, kwargs)
