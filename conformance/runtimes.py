"""Runtimes: what executes an artifact, in this process."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable


def load_torchscript(file: Path, device: str) -> Callable:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(file), map_location=device)
    module.eval()
    return module


LOADERS: dict[str, Callable[[Path, str], Callable]] = {
    "torch": load_torchscript,
}


def load(runtime: str, file: Path, device: str) -> Callable:
    return LOADERS[runtime](file, device)


def run(loaded: Callable, inputs: tuple) -> Any:
    import torch

    with torch.inference_mode():
        return loaded(*inputs)
