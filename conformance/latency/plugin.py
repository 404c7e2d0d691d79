"""The latency plugin: latency cells beside the conformance matrix, each target timed
against eager. A pytest11 entry point of its own (`-p no:conformance-latency` leaves it
out); it plugs into the conformance plugin through that plugin's hooks, cells and
helpers, and the conformance plugin knows nothing of it.

`pytest --latency` runs the latency cells and nothing else; without it they are
deselected, so the conformance run never pays for them.
"""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from conformance.cell import cell_spec, make_cell
from conformance.keys import SESSION
from conformance.latency.cell import LatencyCell, LatencyOptions, latency_cells
from conformance.latency.measure import Method
from conformance.latency.summary import (CHECK, DEFAULT_MAX_SLOWDOWN, budget_mismatch, speedups,
                                         summary_lines)
from conformance.plugin import RECORD, case_marks, deselect, option_group
from conformance.runtimes import thread_budget
from conformance.session import CellSpec

SPEC = "latency_spec"  # the parameter that carries a latency cell's spec


class LatencySession:
    """The plugin's state for one pytest session: its options (None unless the run is a
    latency run) and, where records are written, the latency records for the summary."""

    def __init__(self, options: LatencyOptions | None):
        self.options = options
        self.records: list[dict] = []

    def pytest_runtest_logreport(self, report):
        self.records += [value for name, value in report.user_properties
                         if name == RECORD and value["check"] == CHECK]

    def pytest_conformance_terminal_summary(self, terminalreporter):
        lines = summary_lines(self.records)
        if lines:
            terminalreporter.section("conformance latency")
            for line in lines:
                terminalreporter.write_line(line)


LATENCY = pytest.StashKey[LatencySession]()


def pytest_addoption(parser):
    group = option_group(parser)
    group.addoption("--latency", action="store_true",
                    help="run the latency benchmarks (test_latency) instead of the conformance "
                         "matrix; each target is timed against eager, interleaved")
    group.addoption("--latency-warmup", type=int, default=Method.warmup, metavar="N",
                    help="untimed calls of each side before sampling (default %(default)s)")
    group.addoption("--latency-min-rounds", type=int, default=Method.min_rounds, metavar="N",
                    help="fewest samples of each side (default %(default)s)")
    group.addoption("--latency-max-rounds", type=int, default=Method.max_rounds, metavar="N",
                    help="most samples of each side (default %(default)s)")
    group.addoption("--latency-time", type=float, default=Method.max_time_s, metavar="SECONDS",
                    help="sampling time each side aims at, within the round bounds "
                         "(default %(default)s)")
    group.addoption("--latency-memory", action="store_true",
                    help="also measure each target's peak memory, in a new process per cell "
                         "(a process start each: seconds per cell)")
    group.addoption("--latency-baseline", default=None, metavar="RECORDS",
                    help="the records of an earlier latency run: a cell that got more than "
                         "--latency-max-slowdown percent slower relative to eager fails")
    group.addoption("--latency-max-slowdown", type=float, default=DEFAULT_MAX_SLOWDOWN,
                    metavar="PERCENT", help="the regression gate's threshold (default "
                    "%(default)s)")


@pytest.hookimpl(optionalhook=True)
def pytest_conformance_default_threads(config):
    """A latency run gives every runtime one thread unless --threads says otherwise:
    the speedups of backends compare only under the same budget, and one thread is the
    budget least disturbed by whatever else the machine runs."""
    return 1 if config.option.latency else None


# Before the conformance plugin's pytest_configure, which registers the case tags as
# markers under --markers: a tag named `latency` then keeps this marker's text.
@pytest.hookimpl(tryfirst=True, specname="pytest_configure")
def pytest_configure_marker(config):
    config.addinivalue_line("markers", "latency: a latency benchmark cell (run with --latency)")


# After the conformance plugin's: the thread budget it installs is the one a baseline
# must have run with.
@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    session = LatencySession(latency_options(config))
    config.stash[LATENCY] = session
    if not hasattr(config, "workerinput"):  # xdist workers send their records to the controller
        config.pluginmanager.register(session, "conformance-latency-session")


def latency_options(config) -> LatencyOptions | None:
    opt = config.option
    if not opt.latency:
        return None
    if getattr(opt, "numprocesses", None) or getattr(opt, "dist", "no") != "no":
        raise pytest.UsageError("--latency runs in one process: parallel workers (-n, "
                                "pytest-xdist) would take each other's cores; drop -n")
    method = Method(warmup=opt.latency_warmup, min_rounds=opt.latency_min_rounds,
                    max_rounds=opt.latency_max_rounds, max_time_s=opt.latency_time)
    if method.min_rounds < 1 or method.max_rounds < method.min_rounds or method.warmup < 0:
        raise pytest.UsageError(f"latency rounds must satisfy 1 <= min <= max and warm-up "
                                f">= 0, got {method}")
    baseline = Path(opt.latency_baseline) if opt.latency_baseline else None
    return LatencyOptions(method, baseline, opt.latency_max_slowdown, opt.latency_memory,
                          _baseline_speedups(baseline, Path(opt.conformance_results))
                          if baseline else {})


def _baseline_speedups(baseline: Path, results: Path) -> dict:
    """The baseline's speedups, read before this run writes its own records (which
    must go elsewhere), from a run with this run's thread budget."""
    from conformance.records import read_records

    if not baseline.is_file():
        raise pytest.UsageError(f"--latency-baseline {baseline}: no such file")
    if baseline.resolve() == results.resolve():
        raise pytest.UsageError(f"--latency-baseline {baseline} is this run's own results "
                                f"file, which the run empties: copy it elsewhere first")
    records = read_records(baseline)
    mismatch = budget_mismatch(records, thread_budget.described())
    if mismatch:
        raise pytest.UsageError(f"--latency-baseline {baseline}: {mismatch}")
    return speedups(records)


def pytest_generate_tests(metafunc):
    if SPEC not in metafunc.fixturenames:
        return
    config = metafunc.config
    session = config.stash[SESSION]
    params = [pytest.param(spec, id=spec.id,
                           marks=[*case_marks(config, session, spec), pytest.mark.latency])
              for spec in latency_cells(session)]
    metafunc.parametrize(SPEC, params)


def pytest_collection_modifyitems(config, items):
    deselect(config, items, other_run_items(config, items))


def other_run_items(config, items: list) -> list:
    """The latency cells, or under --latency the cells of the other runs (the
    conformance matrix): not this run's. Tests that are no cell stay."""
    latency_run = bool(config.option.latency)
    return [item for item in items
            if cell_spec(item) is not None and (SPEC in item.callspec.params) != latency_run]


@pytest.fixture
def latency_cell(latency_spec: CellSpec, request) -> LatencyCell:
    options = request.config.stash[LATENCY].options
    return make_cell(request, latency_spec, functools.partial(LatencyCell, options=options))
