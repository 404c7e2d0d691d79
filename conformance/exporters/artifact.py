"""Artifacts: running a path's exporter into a file, atomically, with its facts beside it
(what the export cost and warned, the size and sha256 of the bytes written), reading a
cached one back, and explaining an exporter's failure in one paragraph."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from conformance.messages import first_lines

# Deprecation notices that every call of a TorchScript API emits since torch 2.9;
# they say nothing about the model, so records keep only the other warnings.
_BOILERPLATE = ("is deprecated",)


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Everything besides the model that changes what a path writes."""

    opset: int | None = None
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    # The names of the example's last inputs, which the model takes by keyword
    # (see conformance.calling); input_names name them too.
    keywords: tuple[str, ...] = ()
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


def export(path: str, exporter: Callable, model: Any, example: tuple, file: Path,
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
            exporter(model, example, partial, options)
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


def _failure_file(file: Path) -> Path:
    return file.with_name(file.name + ".failed.json")


# Failures that say something of the machine at that moment, not of the model and the
# exporter: never kept, tried again by the next run. torch's own out-of-memory errors are
# RuntimeErrors, and a compiler killed by the kernel reports a failed compile: their words.
TRANSIENT = (MemoryError, OSError)
TRANSIENT_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory",
                   "no space left", "killed", "signal", "resource temporarily unavailable")


def transient(error: BaseException) -> bool:
    """Whether anything in the error's chain says the machine, not the model, failed."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, TRANSIENT) or any(word in str(error).lower()
                                               for word in TRANSIENT_WORDS):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def keep_failure(file: Path, error: ExportError) -> None:
    """Keep an export's failure under the artifact's key: the next run with the same key
    (the same model, inputs, options, stack and exporting code) fails the same way
    without exporting again. A transient failure (memory, disk, a killed compiler) is
    not kept, and neither is one this cache cannot write down."""
    if transient(error):
        return
    target = _failure_file(Path(file))
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_text(json.dumps({"message": str(error), "stored": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z")}))
        partial.replace(target)
    except OSError:
        partial.unlink(missing_ok=True)


def kept_failure(file: Path) -> ExportError | None:
    """The failure an earlier run kept for this artifact's key, as the error to raise."""
    try:
        kept = json.loads(_failure_file(Path(file)).read_text())
    except (OSError, ValueError):
        return None
    return ExportError(f"{kept['message']}\n(kept from an earlier run's export with the same "
                       f"key, {kept.get('stored', '?')}; --no-artifact-cache exports again)")


def _write_export_facts(artifact: Artifact, written: Path | None = None) -> None:
    """What the export cost and warned, kept beside the file so that a run which
    finds the file in the cache still reports them, and the size and sha256 of the
    bytes written (`written`, the file before it takes its name), which a later
    run checks before it reuses them."""
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
    return first_lines(text, count)


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




# The cached file's bytes -----------------------------------------------------------


def content_digest(file: Path) -> tuple[int, str]:
    """Size and sha256 of a file's bytes; of a directory, its files' relative names
    and bytes in sorted order."""
    digest = hashlib.sha256()
    if not file.is_dir():
        with open(file, "rb") as handle:
            size = _hash_stream(handle, digest)
        return size, digest.hexdigest()
    size = 0
    for member in sorted(p for p in file.rglob("*") if p.is_file()):
        name = member.relative_to(file).as_posix().encode()
        digest.update(len(name).to_bytes(8, "little") + name)
        with open(member, "rb") as handle:
            size += _hash_stream(handle, digest)
    return size, digest.hexdigest()


def _hash_stream(handle, digest) -> int:
    size = 0
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size


def remove_artifact(file: Path) -> None:
    if file.is_dir():
        shutil.rmtree(file, ignore_errors=True)
    else:
        file.unlink(missing_ok=True)

