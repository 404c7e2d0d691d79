"""What an export path is: one row of `conformance.exporters.table`.

Every field is required (a row that forgets one raises TypeError when the table is
built), and `check_row` refuses a row whose fields disagree with each other or name
a runtime, check or graph reader that does not exist.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Mapping

ALL = "all"
DEVICES = ("cpu", "cuda")
# How a generated model spells a data-dependent branch: a Python `if` on a tensor, or
# torch.cond; None for a path that records one branch by design (a trace).
BRANCH_SPELLINGS = ("if", "cond", None)
# The checks that look at the artifact itself rather than at its outputs: a path says
# which of them it gets, on one of its runtimes (`artifact_checks_on`).
ARTIFACT_CHECKS = frozenset({"graph_valid", "io_names", "keeps_branches", "compiles_fullgraph"})


@dataclasses.dataclass(frozen=True)
class Runs:
    """A runtime that runs a path's artifacts: for which cases (ALL or a case tag) and
    on which devices."""

    runtime: str
    cases: str
    devices: tuple[str, ...]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportPath:
    name: str
    # (model, example, file, ExportOptions) -> None, writing the artifact to `file`;
    # None for a path that saves nothing (torch.compile: compiled when loaded).
    export: Callable | None
    suffix: str | None  # of the artifact file; the AOTInductor packager insists on .pt2
    # (opset, the cases it applies to: ALL or a tag); (None, ALL) for a path without opsets.
    opsets: tuple[tuple[int | None, str], ...]
    runs_on: tuple[Runs, ...]
    # runtime -> loader (file, device) -> callable, for the runtimes that do not know
    # this path's files by themselves (see Runtime.load).
    loaders: Mapping[str, Callable[[Path, str], Callable]]
    branch: str | None  # one of BRANCH_SPELLINGS, for the generated-model families
    # The control-flow reader of its graph (conformance.checks.control_flow.READERS), or
    # None when the suite cannot read the artifact's graph.
    graph: str | None
    artifact_checks: frozenset[str]  # which of ARTIFACT_CHECKS its artifact gets
    artifact_checks_on: str | None  # the runtime whose cells carry them
    # Its artifacts take any input size (TorchScript keeps sizes symbolic, torch.compile
    # recompiles); the others take other sizes only on the dims declared dynamic.
    takes_any_size: bool
    # Goes through torch.export, which specializes a dimension whose example size is 1:
    # a case with a dynamic batch is exported from a batch of 2.
    specializes_size_one: bool
    # Scripts a case with control flow before exporting, so its branches survive.
    scripts_control_flow: bool
    # Inductor writes its thread count into the code it generates: the artifact is made
    # for the threads it was built with, which are part of its options.
    bakes_threads: bool
    # Compiles with Inductor: tens of seconds per model on two cores, so its cells are
    # slow outside the `pt2-ci` cases and its drawn-input searches get more time.
    inductor: bool
    compiler_for: frozenset[str]  # the runtimes on which its cells need a C++ compiler
    flat_outputs_on: frozenset[str]  # runtimes that return its outputs as a flat list
    # Timings (record key -> label) that the report lists as the path's cost per case.
    cost_timings: Mapping[str, str]

    @property
    def saves_file(self) -> bool:
        return self.export is not None

    def runtimes(self) -> tuple[str, ...]:
        return tuple(runs.runtime for runs in self.runs_on)


def check_row(row: ExportPath, runtimes: Mapping, checks: frozenset[str] = ARTIFACT_CHECKS,
              graph_readers: frozenset[str] | None = None) -> None:
    """Refuse a row whose fields disagree: raises ValueError naming the field."""
    problems = [problem for problem in (
        _unknown_runtimes(row, runtimes),
        _missing_loaders(row, runtimes),
        None if row.branch in BRANCH_SPELLINGS else f"branch {row.branch!r} is not one of "
                                                    f"{BRANCH_SPELLINGS}",
        None if row.artifact_checks <= checks else
        f"artifact_checks {sorted(row.artifact_checks - checks)} are not artifact checks",
        None if not row.artifact_checks or row.artifact_checks_on in row.runtimes() else
        f"artifact_checks_on {row.artifact_checks_on!r} is not one of its runtimes",
        None if graph_readers is None or row.graph is None or row.graph in graph_readers else
        f"graph {row.graph!r} has no reader",
        None if row.saves_file == bool(row.suffix) else "a path that saves a file has a "
                                                        "suffix, and only such a path",
        None if row.opsets else "opsets is empty: give (None, ALL) for a path without opsets",
    ) if problem]
    if problems:
        raise ValueError(f"export path {row.name!r}: " + "; ".join(problems))


def _unknown_runtimes(row: ExportPath, runtimes: Mapping) -> str | None:
    unknown = [name for name in row.runtimes() if name not in runtimes]
    return f"runs_on names unknown runtimes {unknown}" if unknown else None


def _missing_loaders(row: ExportPath, runtimes: Mapping) -> str | None:
    """Each runtime of the row can load its artifacts: by itself, through the row's
    loader, in the harness, or by compiling (a path that saves nothing)."""
    missing = [name for name in row.runtimes() if name in runtimes
               and not (runtimes[name].load or name in row.loaders or runtimes[name].in_harness
                        or (not row.saves_file and runtimes[name].compile_backend))]
    return f"no loader for its artifacts on {missing}" if missing else None
