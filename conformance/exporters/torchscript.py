"""The TorchScript paths: `trace` (torch.jit.trace records the operations the example
runs) and `script` (torch.jit.script compiles the Python source, control flow and all).
Both save a TorchScript file that the torch runtime and the libtorch harness load."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from conformance.calling import all_by_keyword
from conformance.exporters.artifact import ExportOptions


def export_trace(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    # strict=False lets dict and list outputs through (segmentation models);
    # check_trace=False because the suite's own checks compare with eager.
    if options.keywords:  # trace takes inputs by position or by keyword, not both
        traced = torch.jit.trace(model, example_kwarg_inputs=all_by_keyword(
            model, example, options.keywords), strict=False, check_trace=False)
    else:
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    torch.jit.save(traced, str(file))


def export_script(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.jit.save(torch.jit.script(model), str(file))


def load_torchscript(file: Path, device: str) -> Callable:
    """The torch runtime's loader for TorchScript files (the libtorch harness loads them
    in C++)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(file), map_location=device)
    module.eval()
    return module
