"""The PT2 paths: `export` (torch.export to a saved ExportedProgram) and `aoti` (an
AOTInductor package compiled from the exported program: a shared library and its
weights)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from conformance.exporters.artifact import ExportOptions


def dynamic_shapes(example: tuple, options: ExportOptions) -> tuple | None:
    """torch.export's dynamic_shapes: one torch.export.Dim per name, shared by its axes."""
    import torch

    if not options.dynamic_dims:
        return None
    dims = {name: torch.export.Dim(name, min=low, max=high) if high else
            torch.export.Dim(name, min=low)
            for _, _, name, low, high in options.dynamic_dims}
    shapes: list = [{} if torch.is_tensor(i) else None for i in example]
    for index, axis, name, _, _ in options.dynamic_dims:
        shapes[index][axis] = dims[name]
    return tuple(s or None for s in shapes)


def export_program(model: Callable, example: tuple, options: ExportOptions):
    import torch

    return torch.export.export(as_module(model), example,
                               dynamic_shapes=dynamic_shapes(example, options))


def export_export(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.export.save(export_program(model, example, options), str(file))


def export_aoti(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    program = export_program(model, example, options)
    torch._inductor.aoti_compile_and_package(program, package_path=str(file))


def as_module(model: Callable):
    """torch.export takes modules; a plain function is wrapped in one."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model

    class Function(torch.nn.Module):
        def forward(self, *args):
            return model(*args)

    # torch.export matches dynamic_shapes to forward's parameters: give it the function's.
    try:
        parameters = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature keeps *args
        return Function()
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    Function.forward.__signature__ = inspect.Signature([this, *parameters])
    return Function()



def load_exported_program(file: Path, device: str) -> Callable:
    import torch

    return torch.export.load(str(file)).module()


def load_aoti_package(file: Path, device: str) -> Callable:
    import torch

    return torch._inductor.aoti_load_package(str(file))
