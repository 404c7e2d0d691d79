"""Swapping one path's exporter or one runtime's loader for a test, through the tables'
rows (frozen: a test replaces the row, and monkeypatch puts the old one back)."""
from __future__ import annotations

import dataclasses
from typing import Callable

from conformance.exporters.table import PATHS
from conformance.runtimes.table import RUNTIMES, Runtime, nothing_lacking


def exporter_of(path: str) -> Callable:
    return PATHS[path].export


def loader_of(runtime: str, path: str = "trace") -> Callable:
    """The loader a runtime uses for the path's artifacts."""
    return RUNTIMES[runtime].load or PATHS[path].loaders[runtime]


def patch_exporter(monkeypatch, path: str, export: Callable) -> None:
    monkeypatch.setitem(PATHS, path, dataclasses.replace(PATHS[path], export=export))


def patch_loader(monkeypatch, runtime: str, load: Callable) -> None:
    """The runtime loads every path's artifacts with `load`; a new name is a runtime with
    no traits (in process, structured outputs, copies of the inputs)."""
    row = RUNTIMES.get(runtime) or Runtime(
        name=runtime, load=None, prepare=None, compile_backend=None, in_harness=False, flat_outputs=False,
        calls_on_callers_tensors=False, shares_exporting_process=False, lacks=nothing_lacking)
    monkeypatch.setitem(RUNTIMES, runtime, dataclasses.replace(row, load=load))


def patch_compile_backend(monkeypatch, runtime: str, backend) -> None:
    monkeypatch.setitem(RUNTIMES, runtime,
                        dataclasses.replace(RUNTIMES[runtime], compile_backend=backend))
