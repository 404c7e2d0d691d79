"""Paths: how a model leaves eager Python. Each turns a model into a saved artifact."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable

# Deprecation notices that every call of a TorchScript API emits since torch 2.9;
# they say nothing about the model, so records keep only the other warnings.
_BOILERPLATE = ("is deprecated",)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything besides the model that changes what a path writes."""

    opset: int | None = None
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    # (input index, axis, name, min, max) for each dynamic axis; max None is unbounded.
    # One name on several axes is one size. A dynamic batch is named "batch".
    dynamic_dims: tuple[tuple[int, int, str, int, int | None], ...] = ()
    # The TorchScript-based ONNX exporter traces a plain module, which bakes a
    # data-dependent branch; a control-flow case is scripted first, as the ONNX
    # tutorial does, so the branch becomes an ONNX If node.
    script_first: bool = False
    # The batch size of the inputs the exporter sees, when not the example's own:
    # torch.export specializes a dimension whose example size is 1.
    export_batch: int | None = None
    # Inductor writes its thread count into the C++ it generates (`omp parallel
    # num_threads(N)`): an AOTInductor package is made for the threads it was built with.
    inductor_threads: int | None = None


@dataclasses.dataclass
class Artifact:
    path: str
    file: Path
    export_seconds: float
    warnings: list[str]
    cached: bool = False


class ExportError(Exception):
    """The path could not turn the model into an artifact."""


def export_trace(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    # strict=False lets dict and list outputs through (segmentation models);
    # check_trace=False because the suite's own checks compare with eager.
    traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    torch.jit.save(traced, str(file))


def export_script(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.jit.save(torch.jit.script(model), str(file))


def export_onnx(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    source = torch.jit.script(model) if options.script_first else model
    torch.onnx.export(source, example, str(file), dynamo=False, opset_version=options.opset,
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

    return torch.export.export(_as_module(model), example,
                               dynamic_shapes=dynamic_shapes(example, options))


def export_export(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    torch.export.save(export_program(model, example, options), str(file))


def export_aoti(model: Callable, example: tuple, file: Path, options: ExportOptions) -> None:
    import torch

    program = export_program(model, example, options)
    torch._inductor.aoti_compile_and_package(program, package_path=str(file))


def export_onnx_dynamo(model: Callable, example: tuple, file: Path,
                       options: ExportOptions) -> None:
    import torch

    shapes = dynamic_shapes(example, options)
    program = torch.onnx.export(_as_module(model), example, dynamo=True,
                                opset_version=options.opset, verbose=False,
                                input_names=list(options.input_names),
                                output_names=list(options.output_names), dynamic_shapes=shapes)
    program.save(str(file))


def _as_module(model: Callable):
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


EXPORTERS: dict[str, Callable[[Callable, tuple, Path, ExportOptions], None]] = {
    "trace": export_trace,
    "script": export_script,
    "onnx": export_onnx,
    "onnx-dynamo": export_onnx_dynamo,
    "export": export_export,
    "aoti": export_aoti,
}

SUFFIXES = {"trace": ".pt", "script": ".pt", "onnx": ".onnx", "onnx-dynamo": ".onnx",
            "export": ".pt2", "aoti": ".pt2"}


def export(path: str, model: Any, example: tuple, file: Path,
           options: ExportOptions) -> Artifact:
    """Run one path's exporter into `file`, atomically, with its facts beside it.
    Raises ExportError."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    # The suffix stays last: the AOTInductor packager insists on `.pt2`.
    partial = file.with_name(f".{file.stem}.{os.getpid()}.partial{file.suffix}")
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, _quiet_torch_trace_log():
        warnings.simplefilter("always")
        try:
            EXPORTERS[path](model, example, partial, options)
        except Exception as exc:
            partial.unlink(missing_ok=True)
            raise ExportError(explain_export_error(path, options, exc)) from exc
    artifact = Artifact(path, file, time.perf_counter() - started, model_warnings(caught))
    # The caller holds the artifact's lock (cache.artifact_lock) across the check of the
    # cache and this export: a reader never sees the file without its facts.
    _write_export_facts(artifact, partial)
    partial.replace(file)
    return artifact


def _facts_file(file: Path) -> Path:
    return file.with_name(file.name + ".json")


def _write_export_facts(artifact: Artifact, written: Path | None = None) -> None:
    """What the export cost and warned, kept beside the file so that a run which
    finds the file in the cache still reports them, and the size and sha256 of the
    bytes written (`written`, the file before it takes its name), which a later
    run checks before it reuses them."""
    from conformance.exporters.cache import content_digest

    size, digest = content_digest(Path(written or artifact.file))
    facts = {"export_seconds": artifact.export_seconds, "warnings": artifact.warnings,
             "size": size, "sha256": digest}
    target = _facts_file(artifact.file)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(facts))
    partial.replace(target)


def cached_artifact(path: str, file: Path) -> Artifact | None:
    """The cached artifact in `file`, or None when there is none to reuse: no file,
    no readable facts beside it, or bytes that are not the ones the export wrote
    (a truncated or altered file). A file that fails the check is removed, with
    its facts, and the caller exports again."""
    from conformance.exporters.cache import content_digest, remove_artifact

    file = Path(file)
    if not file.exists():
        return None
    try:
        facts = json.loads(_facts_file(file).read_text())
        expected = (int(facts["size"]), str(facts["sha256"]))
    except (OSError, ValueError, TypeError, KeyError):
        facts, expected = {}, None
    if expected is None or content_digest(file) != expected:
        remove_artifact(file)
        _facts_file(file).unlink(missing_ok=True)
        return None
    return Artifact(path, file, facts.get("export_seconds", 0.0), facts.get("warnings", []),
                    cached=True)


_OPERATOR = re.compile(r"\b(aten::[A-Za-z0-9_.]+|prim::[A-Za-z0-9_.]+|onnx::[A-Za-z0-9_]+)"
                       r"|op='(aten\.[A-Za-z0-9_.]+)'")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The dynamo exporter wraps the real error in advice; its cause follows this heading.
_SUMMARY = "## Exception summary"


@contextlib.contextmanager
def _quiet_torch_trace_log():
    """torch.export logs every step at DEBUG; in a failure report that buries the cause."""
    logger = logging.getLogger("torch.__trace")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def explain_export_error(path: str, options: ExportOptions, exc: BaseException) -> str:
    """One paragraph naming the exporter, the opset and the operator it stopped at."""
    exporter = f"the {path} exporter" + (f" at opset {options.opset}" if options.opset else "")
    text = _ANSI.sub("", _chain_text(exc))
    operator = _OPERATOR.search(text)
    where = f" on operator {operator.group(1) or operator.group(2)}" if operator else ""
    return f"{exporter} failed{where}: {type(exc).__name__}: {_cause(text)}"


def _cause(text: str, count: int = 6) -> str:
    if _SUMMARY in text:
        text = text.split(_SUMMARY, 1)[1]
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[:count])


def _chain_text(exc: BaseException | None) -> str:
    texts = []
    while exc is not None and len(texts) < 5:
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(texts)


def model_warnings(caught) -> list[str]:
    messages = []
    for warning in caught:
        text = str(warning.message).strip()
        if not any(b in text for b in _BOILERPLATE) and text not in messages:
            messages.append(text.splitlines()[0][:300] if text else type(warning.message).__name__)
    return messages


def first_lines(exc: BaseException, count: int = 6) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return "\n".join(lines[:count])
