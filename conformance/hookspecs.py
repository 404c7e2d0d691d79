"""Hooks the conformance plugin asks, so that a plugin of other cells (the latency
plugin) adds to a run without the core knowing it."""
import pytest


@pytest.hookspec(firstresult=True)
def pytest_conformance_default_threads(config) -> int | None:
    """The intra-op threads of every runtime when `--threads` is not given, for the run
    a plugin makes of this session; None leaves each runtime its own default."""


def pytest_conformance_terminal_summary(terminalreporter) -> None:
    """Write sections of the run's end: after the conformance tables, before the line
    that names the records file. Called only where records are written, when there were
    any (under pytest-xdist, on the controller)."""
