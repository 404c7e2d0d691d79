"""The catalogue of planted faults (tests/planted_faults.py) gets the right verdict on
every path, from an example alone: a false pass and a false fail both fail here."""
from __future__ import annotations

import pytest

from conformance.checks.catalog import CheckFailure, applies, run_check
from conformance.checks.subject import CaseState, Subject
from conformance.targets import Target
from tests.planted_faults import FAULTS, OPSETS, PASS, TARGETS

# The checks a verdict is made of, in the order a user reads them.
CHECKS = ("matches_eager", "generalizes", "mutates_like_eager")
EAGER_TIMEOUT_S = 3.0

_states: dict = {}


def _state(fault, tmp_path_factory) -> CaseState:
    """One state per fault, shared by its paths: eager runs once, as in a session."""
    if fault.name not in _states:
        _states[fault.name] = CaseState(fault.case, "cpu", tmp_path_factory.mktemp(fault.name),
                                        use_cache=False, eager_timeout=EAGER_TIMEOUT_S)
    return _states[fault.name]


def verdict(state: CaseState, target: Target) -> tuple[str, str]:
    """PASS, or the kind of the first check that fails, with its message."""
    subject = Subject(state, target, reproduce="pytest <nodeid>")
    for check in CHECKS:
        if not applies(check, state.case, target):
            continue
        try:
            run_check(subject, check, seconds=600)
        except CheckFailure as failure:
            return failure.kind, str(failure)
    return PASS, ""


@pytest.mark.parametrize("path", list(TARGETS))
@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_a_planted_fault_gets_the_right_verdict(fault, path, tmp_path_factory):
    target = Target(path, TARGETS[path], "cpu", OPSETS.get(path))
    observed, message = verdict(_state(fault, tmp_path_factory), target)
    assert observed == fault.verdicts[path], (
        f"{fault.name} on {target.id}: expected {fault.verdicts[path]}, observed {observed} "
        f"({fault.why})\n{message}")
