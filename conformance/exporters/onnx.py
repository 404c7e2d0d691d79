"""The ONNX paths: `onnx`, the TorchScript-based exporter, and `onnx-dynamo`, the
exporter built on torch.export. Both write a .onnx file for the ONNX runtimes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from conformance.calling import split
from conformance.exporters.artifact import ExportOptions
from conformance.exporters.pt2 import as_module, dynamic_shapes


def export_onnx(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    source = torch.jit.script(model) if options.script_first else model
    args, kwargs = split(example, options.keywords)
    torch.onnx.export(source, args, str(file), kwargs=kwargs or None, dynamo=False,
                      opset_version=options.opset,
                      input_names=list(options.input_names),
                      output_names=list(options.output_names), dynamic_axes=onnx_axes(options))


def onnx_axes(options: ExportOptions) -> dict | None:
    """The TorchScript-based exporter's dynamic_axes: each input's dynamic axes by name,
    and axis 0 of every output when the batch is dynamic (other output sizes follow
    from shape inference)."""
    if not options.dynamic_dims:
        return None
    axes: dict[str, dict[int, str]] = {}
    for index, axis, name, _, _ in options.dynamic_dims:
        axes.setdefault(options.input_names[index], {})[axis] = name
    if any(axis == 0 and name == "batch" for _, axis, name, _, _ in options.dynamic_dims):
        axes.update({name: {0: "batch"} for name in options.output_names})
    return axes


def export_onnx_dynamo(model: Callable, example: tuple, file: Path,
                       options: ExportOptions) -> None:
    import torch

    shapes = dynamic_shapes(example, options)
    args, kwargs = split(example, options.keywords)
    program = torch.onnx.export(as_module(model), args, kwargs=kwargs or None, dynamo=True,
                                opset_version=options.opset, verbose=False,
                                input_names=list(options.input_names),
                                output_names=list(options.output_names), dynamic_shapes=shapes)
    program.save(str(file))
