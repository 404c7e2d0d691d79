"""A running cell: what one test of the matrix holds while it works, and what its
record is made from. The conformance check's cell is here; a plugin that adds cells of
its own (the latency plugin) subclasses `Cell` and makes its cells with `make_cell`.
"""
from __future__ import annotations

import contextlib
import shlex
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conformance import expectations as expect
from conformance.cases import missing_requirements, requirement_hint
from conformance.keys import CELL, SESSION
from conformance.session import CellSpec, ConformanceSession
from conformance.targets import missing
from conformance.versions import torch_release


class Cell:
    """A cell being run: its spec, the session, the line that reproduces it, the
    expectation row that applies, and what the record needs of its work."""

    def __init__(self, spec: CellSpec, session: ConformanceSession, reproduce: str):
        self.spec = spec
        self.session = session
        self.reproduce = reproduce
        self.row = session.expectation(spec)
        self.metrics: dict = {}
        self.timings: dict = {}
        self.artifact: dict = {}

    @contextlib.contextmanager
    def subject(self) -> Iterator:
        """The cell's subject. Its timings and artifact go into the record however the
        work ends: a failed or skipped cell's record says how far it got."""
        subject = self.session.subject(self.spec, self.reproduce)
        try:
            yield subject
        finally:
            self.timings = subject.timings
            self.artifact = subject.artifact_summary()

    def record_fields(self) -> dict:
        """Fields a kind of cell adds to its records (every record has the same fields)."""
        return {}


class CheckCell(Cell):
    """A cell of the conformance matrix: runs its check and judges the outcome."""

    def __init__(self, spec: CellSpec, session: ConformanceSession, reproduce: str):
        super().__init__(spec, session, reproduce)
        self.failure = ""  # the CheckFailure's message, when the check failed
        self.failure_kind: str | None = None  # and its kind, one of FAILURE_KINDS

    def check(self) -> None:
        from conformance.checks.catalog import CheckFailure, run_check

        failure = None
        with self.subject() as subject:
            try:
                self.metrics = run_check(subject, self.spec.check,
                                         self.session.options.cell_timeout)
            except CheckFailure as exc:
                failure, self.metrics = exc, exc.metrics
        if failure:
            self.failure, self.failure_kind = str(failure), failure.kind
        self.judge()

    def judge(self) -> None:
        """The cell's verdict: an expectation row, when one applies, says which failure is
        expected; any other outcome fails. The messages explain the failure; a traceback
        into the suite would not."""
        if self.row:
            verdict = expect.judge(self.row, self.failure_kind, self.failure, self.spec.id,
                                   torch_release())
            if verdict.outcome == "xfail":
                pytest.xfail(verdict.message)
            pytest.fail(verdict.message, pytrace=False)
        if self.failure_kind:
            pytest.fail(self.failure, pytrace=False)


def make_cell(request, spec: CellSpec, kind: Callable[..., Cell]) -> Cell:
    """The cell of a test, `kind(spec, session, reproduce)`; a skip (a failure under
    --require) when the machine lacks what its target needs. The cell is kept before
    that: a skipped cell's record has its kind's fields too."""
    session = request.config.stash[SESSION]
    cell = kind(spec, session, _reproduce(request))
    request.node.stash[CELL] = cell
    lacking = _lacking(session, spec)
    if lacking and lacking[0] in session.options.required:
        pytest.fail(f"--require {lacking[0]}: {lacking[1]}")
    if lacking:
        pytest.skip(lacking[1])
    return cell


def _lacking(session: ConformanceSession, spec: CellSpec) -> tuple[str, str] | None:
    """Why the cell cannot run here, and the name `--require` would give it."""
    case = session.entry(spec.case)
    needed = missing_requirements(case)
    if needed:
        return needed[0], (f"case {case.name} needs {', '.join(needed)}, which is not "
                           f"installed here; {requirement_hint(needed)}")
    if case.quantized_engine and spec.target.device != "cpu":
        return "quantized", "eager-mode quantized kernels run on the CPU only"
    return missing(spec.target.runtime, spec.target.device, spec.target.path)


def _reproduce(request) -> str:
    """A command that runs this cell again, from where this run started: the test by its
    file and id, and every option that changes which cases exist or what they check."""
    return shlex.join(["pytest", _test_address(request.node, request.config),
                       *_case_options(request.config.option)])


def _test_address(item, config) -> str:
    """The test's file (relative to the run's directory where it lies below it: an installed
    copy's is absolute) and its name with the cell's id."""
    file = Path(item.path)
    start = Path(config.invocation_params.dir)
    shown = file.relative_to(start) if file.is_relative_to(start) else file
    return f"{shown}::{item.name}"


def _case_options(option) -> list[str]:
    """The options that decide which cases exist and what their cells expect (a property
    search's failure adds its profile and seed itself)."""
    words = [f"--cases={spec}" for spec in option.cases]
    words += [f"--expectations={file}" for file in option.expectations]
    return words + (["--no-builtin-cases"] if option.no_builtin_cases else [])


def cell_spec(item) -> CellSpec | None:
    """The cell a test item runs: whichever of its parameters is a cell's spec, whatever
    plugin parametrized it; None for any other test."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    return next((value for value in params.values() if isinstance(value, CellSpec)), None)
