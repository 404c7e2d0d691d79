"""Paths: how a model leaves eager Python. Each turns a model into a saved artifact."""
from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import Any, Callable

# Deprecation notices that every call of a TorchScript API emits since torch 2.9;
# they say nothing about the model, so records keep only the other warnings.
_BOILERPLATE = ("is deprecated",)


@dataclasses.dataclass
class Artifact:
    path: str
    file: Path
    export_seconds: float
    warnings: list[str]


class ExportError(Exception):
    """The path could not turn the model into an artifact."""


def export_trace(model: Callable, example: tuple, file: Path) -> None:
    import torch

    # strict=False lets dict and list outputs through (segmentation models);
    # check_trace=False because the suite's own checks compare with eager.
    traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    torch.jit.save(traced, str(file))


def export_script(model: Callable, example: tuple, file: Path) -> None:
    import torch

    torch.jit.save(torch.jit.script(model), str(file))


EXPORTERS: dict[str, Callable[[Callable, tuple, Path], None]] = {
    "trace": export_trace,
    "script": export_script,
}

SUFFIXES = {"trace": ".pt", "script": ".pt"}


def export(path: str, model: Any, example: tuple, directory: Path, stem: str) -> Artifact:
    """Run one path's exporter, saving into `directory`. Raises ExportError."""
    file = Path(directory) / f"{stem}-{path}{SUFFIXES[path]}"
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            EXPORTERS[path](model, example, file)
        except Exception as exc:
            raise ExportError(f"{path} failed: {type(exc).__name__}: {first_lines(exc)}") from exc
    return Artifact(path, file, time.perf_counter() - started, model_warnings(caught))


def model_warnings(caught) -> list[str]:
    messages = []
    for warning in caught:
        text = str(warning.message).strip()
        if not any(b in text for b in _BOILERPLATE) and text not in messages:
            messages.append(text.splitlines()[0][:300])
    return messages


def first_lines(exc: BaseException, count: int = 6) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return "\n".join(lines[:count])
