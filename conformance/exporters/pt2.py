"""The PT2 paths: `export` (torch.export to a saved ExportedProgram) and `aoti` (an
AOTInductor package compiled from the exported program: a shared library and its
weights), and its tuned variant `aoti-tuned`."""
from __future__ import annotations

import contextlib
import inspect
import logging
import re
from pathlib import Path
from typing import Callable

from conformance.calling import split
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

    args, kwargs = split(example, options.keywords)
    # dynamic_shapes as a tuple follows the flat inputs, which follow the signature.
    return torch.export.export(as_module(model), args, kwargs=kwargs or None,
                               dynamic_shapes=dynamic_shapes(example, options))


def export_export(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.export.save(export_program(model, example, options), str(file))


def export_aoti(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    program = export_program(model, example, options)
    torch._inductor.aoti_compile_and_package(program, package_path=str(file))


def export_aoti_tuned(model: Callable, example: tuple, file: Path,
                      options: ExportOptions) -> None:
    """The package with the aoti-tuned row's Inductor configs (conformance.tuning); the
    program is exported without autograd, as freezing needs."""
    import torch

    from conformance.tuning import TUNINGS

    with torch.no_grad():
        program = export_program(model, example, options)
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(file),
            inductor_configs=dict(TUNINGS["aoti-tuned"].settings["inductor_configs"]))


def as_module(model: Callable):
    """torch.export takes modules; a plain function is wrapped in one."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model

    class Function(torch.nn.Module):
        def forward(self, *args, **kwargs):
            return model(*args, **kwargs)

    # torch.export matches dynamic_shapes to forward's parameters: give it the function's.
    try:
        parameters = list(inspect.signature(model).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature keeps *args
        return Function()
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    Function.forward.__signature__ = inspect.Signature([this, *parameters])
    return Function()



def load_exported_program(file: Path, device: str) -> Callable:
    """torch.export.load, raising the cause it only logs: a program whose inputs or
    outputs are pytree types (a transformers ModelOutput) loads only where the module
    that registers them was imported; the error says which import to add."""
    import torch

    with _logged_errors("torch.export") as logged:
        try:
            return torch.export.load(str(file)).module()
        except RuntimeError as exc:
            if not logged:
                raise
            raise RuntimeError(f"torch.export.load: {type(logged[-1]).__name__}: "
                               f"{logged[-1]}") from exc


def load_aoti_package(file: Path, device: str) -> Callable:
    """aoti_load_package. The package rebuilds its outputs' pytree types at every call: one
    not registered in this process fails there (see `unregistered_type_hint`)."""
    import torch

    return torch._inductor.aoti_load_package(str(file))


_UNREGISTERED = re.compile(r"Deserializing ([\w.]+)\.(\w+) in pytree is not registered")


def unregistered_type_hint(error: object) -> str | None:
    """For an error that a pytree type of a saved program is not registered where it was
    loaded (torch.export.load, an AOTInductor package's call): the import to add."""
    found = _UNREGISTERED.search(str(error))
    if not found:
        return None
    module, name = found.groups()
    return (f"the saved program's outputs or inputs are {module}.{name}, a pytree type that "
            f"is registered when its module is imported: add `import {module}` before "
            "loading it where the program is deployed (and declare it in the case: "
            f"`Case(deploy_imports=({module!r},))`)")


@contextlib.contextmanager
def _logged_errors(logger_name: str):
    """The exceptions a logger records (with exc_info) while the block runs."""
    errors: list[BaseException] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info and record.exc_info[1] is not None:
                errors.append(record.exc_info[1])

    logger, handler = logging.getLogger(logger_name), Keep()
    logger.addHandler(handler)
    try:
        yield errors
    finally:
        logger.removeHandler(handler)
