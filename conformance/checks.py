"""Checks: each one property of a (case, target), as a small named function.

A check takes a `Subject`, returns a dict of metrics when the property holds,
and raises `CheckFailure` with a message that explains the failure otherwise.
"""
from __future__ import annotations

import collections
from typing import Any, Callable

from conformance.compare import Comparison, compare
from conformance.paths import ExportError
from conformance.subject import Subject
from conformance.worker import WorkerError


class CheckFailure(AssertionError):
    """The property does not hold; `metrics` carries what was measured."""

    def __init__(self, message: str, metrics: dict | None = None):
        super().__init__(message)
        self.metrics = metrics or {}


def fail(subject: Subject, check: str, what: str, details: str = "",
         metrics: dict | None = None):
    lines = [f"case {subject.case.name}, target {subject.target.id}, check {check}: {what}"]
    if details:
        lines += ["  " + line for line in details.splitlines()]
    if subject.reproduce:
        lines.append(f"  reproduce: {subject.reproduce}")
    raise CheckFailure("\n".join(lines), metrics)


def run_or_fail(subject: Subject, check: str, what: str, action: Callable[[], Any]) -> Any:
    """Run a step of a check; an exporter or runtime error becomes a CheckFailure."""
    try:
        return action()
    except CheckFailure:
        raise
    except ExportError as exc:
        fail(subject, check, "the path could not export the model", str(exc))
    except WorkerError as exc:
        fail(subject, check, f"{what} failed in the fresh process", str(exc))
    except Exception as exc:  # any runtime error is this cell's failure, not the session's
        fail(subject, check, f"{what} raised {type(exc).__name__}", _first_lines(exc))


def _first_lines(exc: BaseException, count: int = 8) -> str:
    return "\n".join([line for line in str(exc).splitlines() if line.strip()][:count])


def _compare(subject: Subject, actual: Any, expected: Any) -> Comparison:
    topk = 5 if "classifier" in subject.case.tags else None
    return compare(actual, expected, subject.case.tolerance, topk=topk)


def matches_eager(subject: Subject) -> dict:
    """The artifact's outputs on the example inputs match eager's."""
    expected = run_or_fail(subject, "matches_eager", "eager", subject.eager_example)
    actual = run_or_fail(subject, "matches_eager", "running the artifact on the example",
                         lambda: subject.run_artifact(subject.state.example, timed=True))
    result = _compare(subject, actual, expected)
    if not result.ok:
        fail(subject, "matches_eager", "the artifact's outputs differ from eager on the example "
             "inputs", result.summary(), result.metrics())
    return result.metrics()


def generalizes(subject: Subject) -> dict:
    """The artifact agrees with eager on every probe: other values, branches, sizes."""
    worst: dict = {}
    state = subject.state
    run_or_fail(subject, "generalizes", "exporting", lambda: subject.artifact)
    for index, probe in enumerate(run_or_fail(subject, "generalizes", "making probes",
                                              lambda: state.probes)):
        expected = run_or_fail(subject, "generalizes", f"eager on {probe.label}",
                               lambda: state.eager(f"probe{index}", probe.inputs))
        actual = run_or_fail(subject, "generalizes", f"running the artifact on {probe.label}",
                             lambda: subject.run_artifact(probe.inputs))
        result = _compare(subject, actual, expected)
        if not result.ok:
            fail(subject, "generalizes", f"the {subject.target.path} artifact diverges from "
                 f"eager on the probe input ({probe.label})", result.summary(), result.metrics())
        worst = _worse(worst, result.metrics())
    return worst


def _worse(a: dict, b: dict) -> dict:
    return b if not a or b.get("max_abs", 0) > a.get("max_abs", 0) else a


def fresh_process(subject: Subject) -> dict:
    """The saved artifact, loaded in a process that never saw the model, gives the same outputs."""
    state = subject.state
    in_process = run_or_fail(subject, "fresh_process", "running the artifact in this process",
                             lambda: subject.run_artifact(state.example))
    fresh, timings = run_or_fail(
        subject, "fresh_process", "loading and running the saved artifact",
        lambda: subject.worker.run(subject.target.runtime, subject.artifact.file, state.example,
                           state.device, subject.case.quantized_engine))
    result = _compare(subject, fresh, _to_cpu(in_process))
    if not result.ok:
        fail(subject, "fresh_process", "the saved artifact gives other outputs in a fresh "
             "process than in the exporting one", result.summary(), result.metrics())
    return {**result.metrics(), **{f"fresh_{k}": v for k, v in timings.items()}}


def _to_cpu(outputs: Any) -> Any:
    from conformance.worker import to_cpu

    return to_cpu(outputs)


CONTROL_FLOW_NODES = ("prim::If", "prim::Loop")


def control_flow_nodes(loaded: Any) -> collections.Counter:
    """Control-flow nodes of a TorchScript artifact, with called methods inlined."""
    graph = str(getattr(loaded, "inlined_graph", None) or loaded.graph)
    return collections.Counter({kind: graph.count(kind + "(") for kind in CONTROL_FLOW_NODES})


def keeps_branches(subject: Subject) -> dict:
    """The artifact of a model with data-dependent control flow still has it."""
    found = run_or_fail(subject, "keeps_branches", "loading the artifact",
                        lambda: control_flow_nodes(subject.loaded))
    if not sum(found.values()):
        fail(subject, "keeps_branches", f"the {subject.target.path} artifact's graph has no "
             "prim::If or prim::Loop node: the eager model's data-dependent control flow was "
             "reduced to the single branch the example input took")
    return {kind: count for kind, count in found.items()}


CHECKS: dict[str, Callable[..., dict]] = {
    "matches_eager": matches_eager,
    "generalizes": generalizes,
    "fresh_process": fresh_process,
    "keeps_branches": keeps_branches,
}


def applies(check: str, subject_case) -> bool:
    """Whether a check is part of the matrix for a case."""
    if check == "keeps_branches":
        return subject_case.has_control_flow
    return True
