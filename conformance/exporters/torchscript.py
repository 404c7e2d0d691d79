"""The TorchScript paths: `trace` (torch.jit.trace records the operations the example
runs) and `script` (torch.jit.script compiles the Python source, control flow and all).
Both save a TorchScript file that the torch runtime and the libtorch harness load. Their
tuned variants save the module frozen and optimize it for inference once loaded."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from conformance.calling import all_by_keyword
from conformance.exporters.artifact import ExportOptions


def export_trace(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.jit.save(trace(model, example, options), str(file))


def trace(model: Callable, example: tuple, options: ExportOptions):
    import torch

    # strict=False lets dict and list outputs through (segmentation models);
    # check_trace=False because the suite's own checks compare with eager.
    if options.keywords:  # trace takes inputs by position or by keyword, not both
        return torch.jit.trace(model, example_kwarg_inputs=all_by_keyword(
            model, example, options.keywords), strict=False, check_trace=False)
    return torch.jit.trace(model, example, strict=False, check_trace=False)


def export_script(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.jit.save(torch.jit.script(model), str(file))


def export_trace_frozen(model: Callable, example: tuple, file: Path,
                        options: ExportOptions) -> None:
    """The trace, frozen before it is saved (the trace-tuned row of conformance.tuning)."""
    import torch

    torch.jit.save(_frozen(trace(model, example, options)), str(file))


def export_script_frozen(model: Callable, example: tuple, file: Path,
                         options: ExportOptions) -> None:
    import torch

    torch.jit.save(_frozen(torch.jit.script(model)), str(file))


def _frozen(module):
    """torch.jit.freeze of a copy read back from the saved bytes. Freezing the module
    itself changes the TorchScript class types it shares with the eager model (a model
    that scripts a submodule of its own) and with every later scripting of the same
    classes in this process: eager then fails with "has no attribute 'linear'", scripting
    with "Can't redefine method: forward". A traced or scripted plain function has no
    weights or attributes to freeze and is kept as it is."""
    import io

    import torch

    if not isinstance(module, torch.jit.ScriptModule):
        return module
    saved = io.BytesIO()
    torch.jit.save(module, saved)
    saved.seek(0)
    return torch.jit.freeze(torch.jit.load(saved).eval())


def load_torchscript(file: Path, device: str) -> Callable:
    """The torch runtime's loader for TorchScript files (the libtorch harness loads them
    in C++)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(file), map_location=device)
    module.eval()
    return module


def load_torchscript_optimized(file: Path, device: str) -> Callable:
    """Loaded, then torch.jit.optimize_for_inference, which freezes a module not frozen yet
    (the trace-tuned and script-tuned rows of conformance.tuning)."""
    import torch

    return torch.jit.optimize_for_inference(load_torchscript(file, device))
