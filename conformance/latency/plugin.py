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
from conformance.latency.cell import LatencyCell, LatencyOptions, ReplayClock, latency_cells
from conformance.latency.measure import Method
from conformance.latency.profile import profile_lines
from conformance.latency.served_load import LoadSettings
from conformance.latency.summary import (CHECK, DEFAULT_MAX_SLOWDOWN, budget_mismatch,
                                         measured_cells, summary_lines)
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
        for title, lines in (("conformance latency", summary_lines(self.records)),
                             ("where the time goes", profile_lines(self.records))):
            if lines:
                terminalreporter.section(title)
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
    group.addoption("--latency-profile", nargs="?", const="", default=None, metavar="DIR",
                    help="after timing each target, profile it per operator (torch.profiler, "
                         "ONNX Runtime's profiler, libtorch's in the harness): a top-operators "
                         "table per target, and a trace per target for Perfetto or "
                         "chrome://tracing, in DIR (default: latency-profiles/ beside the "
                         "records)")
    group.addoption("--latency-profile-runs", type=int, default=10, metavar="N",
                    help="calls each profile records (default %(default)s)")
    group.addoption("--latency-baseline", default=None, metavar="RECORDS",
                    help="the records of an earlier latency run: a cell fails when the 95%% "
                         "interval of its slowdown relative to eager lies wholly beyond "
                         "--latency-max-slowdown; one that straddles it is listed as too "
                         "noisy to judge")
    group.addoption("--latency-run-to-run", default=None, metavar="FILE",
                    help="how far speedups move between runs of one build, per class of "
                         "cell, added to every interval: a file written by `python -m "
                         "conformance.latency.run_to_run RUN1 RUN2 ... --out FILE` (default: "
                         "the packaged calibration, measured on a 2-core x86 machine)")
    group.addoption("--latency-served-load", type=int, default=LoadSettings.requests,
                    metavar="REQUESTS",
                    help=f"each serve cell also sends this many requests from "
                         f"{LoadSettings.clients} concurrent clients to a server that batches "
                         f"up to {LoadSettings.max_batch}: throughput and percentiles under "
                         f"load in its record, every answer checked (default %(default)s; "
                         f"0: none)")
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
    if opt.latency_served_load < 0:
        raise pytest.UsageError(f"--latency-served-load must be 0 or more, got "
                                f"{opt.latency_served_load}")
    if opt.latency_profile_runs < 1:
        raise pytest.UsageError(f"--latency-profile-runs must be at least 1, got "
                                f"{opt.latency_profile_runs}")
    from conformance.latency.allocator import fix_thresholds

    return LatencyOptions(method, baseline, opt.latency_max_slowdown, opt.latency_memory,
                          allocator=fix_thresholds(),
                          profile_dir=profile_directory(opt),
                          profile_runs=opt.latency_profile_runs,
                          spreads=run_to_run_spreads(opt.latency_run_to_run),
                          served_load=LoadSettings(requests=opt.latency_served_load)
                          if opt.latency_served_load else None,
                          baseline_cells=_baseline_cells(baseline, Path(opt.conformance_results))
                          if baseline else {})


def run_to_run_spreads(file: str | None):
    from conformance.latency.run_to_run import load

    try:
        return load(Path(file) if file else None)
    except ValueError as exc:
        raise pytest.UsageError(f"--latency-run-to-run: {exc}") from None


def profile_directory(opt) -> Path | None:
    """Where --latency-profile writes its traces: the directory given, or
    latency-profiles/ beside the run's records; None without the option."""
    if opt.latency_profile is None:
        return None
    if opt.latency_profile:
        return Path(opt.latency_profile)
    return Path(opt.conformance_results).parent / "latency-profiles"


def _baseline_cells(baseline: Path, results: Path) -> dict:
    """The baseline's measured cells, raw samples included (the gate bootstraps them),
    read before this run writes its own records (which must go elsewhere), from a run
    with this run's thread budget."""
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
    return measured_cells(records)


def pytest_generate_tests(metafunc):
    if SPEC not in metafunc.fixturenames:
        return
    config = metafunc.config
    session = config.stash[SESSION]
    params = [pytest.param(spec, id=spec.id, marks=[*case_marks(config, session, spec),
                                                    pytest.mark.latency, *benchmark_marks(spec)])
              for spec in latency_cells(session)]
    metafunc.parametrize(SPEC, params)


def benchmark_marks(spec: CellSpec) -> list:
    """pytest-benchmark's settings of a cell, through its public marker: the group is the
    case (its tables and `--benchmark-group-by=group` put a case's targets together), and
    the timer replays the cell's own samples (ReplayClock says why). A cell that fails
    before it has samples gives pytest-benchmark nothing: its failure is the report, and
    the fixture's 'not used' warning would only repeat it."""
    return [pytest.mark.benchmark(group=spec.case, timer=ReplayClock()),
            pytest.mark.filterwarnings("ignore:Benchmark fixture was not used at all:"
                                       "pytest_benchmark.logger.PytestBenchmarkWarning")]


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
    marker = request.node.get_closest_marker("benchmark")
    clock = marker.kwargs.get("timer") if marker else None
    return make_cell(request, latency_spec, functools.partial(
        LatencyCell, options=options, clock=clock if isinstance(clock, ReplayClock) else None))
