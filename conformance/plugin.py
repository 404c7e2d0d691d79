"""The pytest plugin: options, the session object, the matrix, records.

Installed as a pytest11 entry point, so `pytest --pyargs conformance --cases
my_models.py` runs the suite against a user's own models. Plugins of other cells (the
latency plugin, an entry point of its own) extend it through its hooks (hookspecs.py),
its cells (cell.py) and its helpers here; it knows none of them.
"""
from __future__ import annotations

import collections
import warnings
from pathlib import Path

import pytest

from conformance import expectations as expect
from conformance import shard
from conformance.cases import CaseError
from conformance.cell import CheckCell, cell_spec, make_cell
from conformance.checks.localise import MODES
from conformance.checks.property_search import DEFAULT_PROFILE, PROFILES, search_settings
from conformance.cost import cost_lines
from conformance.keys import CELL, SESSION, SESSION_CELLS
from conformance.layout import builtin_expectations, default_dir
from conformance.ordering import known_costs, slowest_first
from conformance.progress import DEFAULT_INTERVAL_S, Progress
from conformance.records import RecordWriter, failure_cause, make_record, read_records
from conformance.runtimes import thread_budget
from conformance.session import CellSpec, ConformanceSession, Options
from conformance.stack import builds, stack_problems
from conformance.targets import slow_cell
from conformance.tuning import settings_of
from conformance.versions import header_line, torch_release

RECORD = "conformance_record"
CASE_COSTS = pytest.StashKey[dict]()


class ConformanceWarning(UserWarning):
    """Something in the suite's own data needs attention (a stale expectation row)."""


def pytest_addhooks(pluginmanager):
    from conformance import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def option_group(parser):
    """The options' group in --help, shared with the plugins of other cells: whichever
    plugin is loaded first names it."""
    return parser.getgroup("conformance", "conformance: PyTorch export conformance")


def pytest_addoption(parser):
    group = option_group(parser)
    group.addoption("--cases", action="append", default=[], metavar="FILE_OR_MODULE",
                    help="add the cases (a CASES list) of a .py file or an importable module; "
                         "repeatable")
    group.addoption("--no-builtin-cases", action="store_true",
                    help="run only the cases given with --cases")
    group.addoption("--expectations", action="append", default=[], metavar="TOML",
                    help="another expectation table ([[expect]] rows), added to the built-in one")
    group.addoption("--conformance-results", default="results/records.jsonl", metavar="FILE",
                    help="JSON-lines file that gets one record per check as it finishes "
                         "(default: %(default)s)")
    group.addoption("--conformance-progress", type=float, default=DEFAULT_INTERVAL_S,
                    metavar="SECONDS", help="a progress line every SECONDS: tests done and "
                    "failed, what is running and for how long, the time left (default "
                    "%(default)s; 0: none)")
    group.addoption("--conformance-rerun", action="store_true",
                    help="append this session's records to the results file, as a rerun of "
                         "the run it holds (implied by --lf): the report merges them, the "
                         "later outcome of a cell winning")
    group.addoption("--artifacts-dir", default=None, metavar="DIR",
                    help="the artifact cache: exported files, keyed by case, versions and "
                         "export options, reused by later runs (default: ~/.cache/conformance/"
                         "artifacts, or under $XDG_CACHE_HOME)")
    group.addoption("--no-artifact-cache", action="store_true",
                    help="export every artifact again, into a temporary directory")
    group.addoption("--cell-timeout", type=float, default=900.0, metavar="SECONDS",
                    help="how long one cell (export, load, every run of its check) may take; "
                         "a cell past it fails with a message naming the case, target and check "
                         "(default: %(default)s; 0 for none)")
    group.addoption("--eager-timeout", type=float, default=300.0, metavar="SECONDS",
                    help="how long eager PyTorch may take on one input of a case; a hang fails "
                         "every cell of the case at once (default: %(default)s; 0 for none)")
    group.addoption("--localise", choices=MODES, default="unexpected",
                    help="name the first submodule or ONNX node where a mismatching artifact "
                         "diverges from eager: unless an expectation row of the cell expects "
                         "the mismatch (default), always, or never")
    group.addoption("--fresh-process-timeout", type=float, default=600.0, metavar="SECONDS",
                    help="how long the fresh process may take to load and run one artifact")
    group.addoption("--harness-timeout", type=float, default=600.0, metavar="SECONDS",
                    help="how long the libtorch harness may take to answer one request (load, "
                         "run); a harness that takes longer is killed and restarted")
    group.addoption("--harness-build-dir", default=None, metavar="DIR",
                    help="where the libtorch harness is built and cached, one directory per "
                         "torch version, compiler and source (default: ~/.cache/conformance/"
                         "harness, or under $XDG_CACHE_HOME)")
    group.addoption("--require", action="append", default=[], metavar="DEVICE_OR_RUNTIME",
                    help="fail, instead of skip, the cells of a device or runtime (cuda, "
                         "libtorch, onnxruntime, ..., or compiler for Inductor's) that this "
                         "machine lacks; for CI that must have it")
    group.addoption("--shard", default=None, metavar="K/N",
                    help="run only the cases of shard K of N (by a hash of the case name: "
                         "the same split on every machine); merge the shards' records with "
                         "python -m conformance.report")
    group.addoption("--shard-costs", default=None, metavar="RECORDS",
                    help="deal --shard's cases by their time in these records of an earlier "
                         "run, slowest first to the least loaded shard, so the shards finish "
                         "together (give every machine the same file)")
    group.addoption("--property-profile", default=DEFAULT_PROFILE, choices=sorted(PROFILES),
                    help="how hard the property checks search (inputs drawn from input spaces, "
                         "generated models): ci is few examples, the same on every run, bounded "
                         "time; nightly is many, from a new seed (default: %(default)s)")
    group.addoption("--property-seed", type=int, default=None, metavar="N",
                    help="the seed of the property searches, to repeat a run's findings exactly "
                         "(a nightly run prints its seed in the header and records)")
    # The thread budget is every run's: a conformance run may pin it too.
    group.addoption("--threads", type=int, default=None, metavar="N",
                    help="intra-op threads of every runtime: torch, ONNX Runtime, the libtorch "
                         "harness (default: 1 in a latency run; under pytest-xdist, each worker's "
                         "share of the cores; otherwise each runtime's own)")
    group.addoption("--flush-denormal", action="store_true",
                    help="read and write denormal floats as zero in every runtime")


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist, a case's cells go to one worker: its model is built, its eager
    outputs computed and its artifacts exported once. That is `--dist loadgroup`, and
    the default of a bare `-n`; another `--dist` given on the command line is left as is."""
    dist = config.getvalue("dist")
    if dist != "loadgroup" and (dist != "load" or _explicit_dist(config)):
        return None
    from conformance.case_groups import CaseGroupScheduling

    return CaseGroupScheduling(config, log)


def _explicit_dist(config) -> bool:
    return any(str(a) == "-d" or str(a).startswith("--dist")
               for a in config.invocation_params.args)


def pytest_configure(config):
    config.addinivalue_line("markers", "conformance_check: a (case, target, check) cell of the "
                            "conformance matrix")
    config.addinivalue_line("markers", "slow: left out of the CI tier (-m 'not slow')")
    config.addinivalue_line("markers", "ci: the CI tier, every cell not marked slow (-m ci)")
    config.addinivalue_line("markers", "nightly: the nightly tier, every cell (-m nightly)")
    # Every torch.jit call warns that TorchScript is deprecated; the suite tests it on purpose.
    config.addinivalue_line("filterwarnings", r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")
    _check_rootdir(config)
    problems = stack_problems() or harness_problems(config)
    if problems:  # one message, not one failure per cell of every vision case
        raise pytest.UsageError("this stack cannot run the suite:\n" + "\n".join(
            f"  - {problem}" for problem in problems))
    try:
        if config.option.shard:
            shard.parse(config.option.shard)
        install_budget(config)
        session = ConformanceSession(_options(config))
    except (CaseError, expect.ExpectationError, shard.ShardError) as exc:
        raise pytest.UsageError(str(exc)) from None
    session.expectations.builtin_case = _builtin_case(session)
    for name, origin in session.shadowed().items():
        config.issue_config_time_warning(ConformanceWarning(
            f"case {name!r} of {origin} replaces the built-in case of that name (the "
            "built-in expectation rows do not apply to it); rename it to run both"),
            stacklevel=2)
    config.stash[SESSION] = session
    if config.option.markers:  # `pytest --markers`: every case tag, which cells carry
        for tag in session.tags():
            _register_tag(config, session, tag)
    if not hasattr(config, "workerinput"):  # xdist workers send their records to the controller
        rerun = config.option.conformance_rerun or bool(getattr(config.option, "lf", False))
        writer = RecordWriter(session.options.results, rerun)
        config.pluginmanager.register(Recorder(writer, config), "conformance-recorder")
        if config.option.conformance_progress > 0:
            config.pluginmanager.register(Progress(config, config.option.conformance_progress),
                                          "conformance-progress")


def install_budget(config) -> None:
    """The same threads and denormal policy for every runtime of this process: --threads,
    else the default a plugin gives its run (a latency run's: 1 thread), else, on a
    pytest-xdist worker, its share of the cores. A run with none of these, and without
    --flush-denormal, leaves every runtime its default."""
    opt = config.option
    if opt.threads is not None and opt.threads < 1:
        raise pytest.UsageError(f"--threads must be at least 1, got {opt.threads}")
    threads = chosen_threads(config, getattr(config, "workerinput", {}).get("workercount"))
    if threads is None and not opt.flush_denormal:
        thread_budget.install(None)  # not an earlier in-process run's
        return
    import torch

    thread_budget.install(thread_budget.Budget(threads or torch.get_num_threads(), opt.flush_denormal))


def xdist_workers(config) -> int:
    """How many pytest-xdist workers the controller starts; 0 without pytest-xdist."""
    if getattr(config.option, "dist", "no") == "no":
        return 0
    return len(getattr(config.option, "tx", None) or [])


def chosen_threads(config, workers: int | None) -> int | None:
    """--threads, else a plugin's default, else, in a run of pytest-xdist `workers`, each
    worker's share of the cores. Each runtime otherwise takes every core in every
    worker: two workers on two cores then run four threads on two, and the spinning
    threads of one slow the other's (a CI tier took half as long again as with one
    thread each)."""
    return (config.option.threads or config.hook.pytest_conformance_default_threads(
        config=config) or (thread_budget.share(workers) if workers else None))


# Options whose value is a path: given as `--flag VALUE`, pytest's early parse (before
# plugins add their options) takes VALUE for a test path.
PATH_OPTIONS = ("--cases", "--expectations", "--artifacts-dir", "--conformance-results",
                "--harness-build-dir", "--latency-baseline")


def harness_problems(config) -> list[str]:
    """Under --require=libtorch the C++ harness must build against this torch: the
    controller builds it (or finds it built) once, before any cell, so that a harness
    that cannot build is one message and not a failure per libtorch cell."""
    from conformance.layout import harness_build_dir
    from conformance.messages import first_lines
    from conformance.runtimes.libtorch import HarnessError, build

    if ("libtorch" not in config.option.require or hasattr(config, "workerinput")
            or config.option.collectonly):
        return []
    root = config.option.harness_build_dir
    try:
        build(Path(root) if root else harness_build_dir())
    except HarnessError as exc:
        return [f"--require libtorch: the libtorch harness cannot be built with torch "
                f"{builds()['torch']}: {first_lines(exc, 12)}"]
    return []


def _check_rootdir(config) -> None:
    """pytest picks its rootdir before plugins parse their options, from every existing
    path on the command line: `--cases ../elsewhere/my_models.py` (with a space) moves
    the rootdir to a common ancestor, where the ini file and its testpaths are lost and
    the whole tree is collected. A value inside the directory the run starts from moves
    nothing; one outside it is refused with the `=` form, which avoids it."""
    args = [str(a) for a in config.invocation_params.args]
    start = Path(config.invocation_params.dir).resolve()
    for flag, value in zip(args, args[1:]):
        path = Path(start, value).resolve()
        if flag in PATH_OPTIONS and path.exists() and not path.is_relative_to(start):
            raise pytest.UsageError(f"write {flag}={value} (with '='): with a space, pytest "
                                    f"takes {value} for a test path before the suite reads "
                                    "its options, and moves its root directory")


def _options(config) -> Options:
    opt = config.option
    # The built-in table is about the built-in cases only: its rows never match a user's
    # case (see _builtin_case), and without the built-in cases it is not loaded at all.
    builtin = [] if opt.no_builtin_cases else [builtin_expectations()]
    files = builtin + [Path(f) for f in opt.expectations]
    return Options(cases=opt.cases, builtin_cases=not opt.no_builtin_cases,
                   expectation_files=files, results=Path(opt.conformance_results),
                   artifact_dir=Path(opt.artifacts_dir) if opt.artifacts_dir else default_dir(),
                   artifact_cache=not opt.no_artifact_cache,
                   fresh_process_timeout=opt.fresh_process_timeout, required=opt.require,
                   cell_timeout=opt.cell_timeout, eager_timeout=opt.eager_timeout,
                   harness_timeout=opt.harness_timeout,
                   harness_build_dir=Path(opt.harness_build_dir) if opt.harness_build_dir
                   else None,
                   search=search_settings(opt.property_profile, _property_seed(config)),
                   localise=opt.localise)


def _builtin_case(session: ConformanceSession):
    """Whether a case is a built-in one: any name that no --cases module defines (the
    generated families are built in). Read without importing the built-in cases."""
    users = {case.name for _origin, cases in session.user_cases for case in cases}
    return lambda name: name not in users


def _property_seed(config) -> int | None:
    """The command line's seed; on an xdist worker, the one the controller drew."""
    worker = getattr(config, "workerinput", {})
    return worker.get("conformance_property_seed", config.option.property_seed)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """xdist: every worker searches from the controller's seed, the one the header
    prints, and deals the cases by the controller's costs."""
    node.workerinput["conformance_property_seed"] = \
        node.config.stash[SESSION].options.search.seed
    node.workerinput["conformance_case_costs"] = case_costs_for_order(node.config)


def pytest_unconfigure(config):
    if SESSION in config.stash:
        config.stash[SESSION].close()


def pytest_report_header(config):
    exact = builds()
    lines = [f"conformance: {header_line()}",
             f"conformance builds: torch {exact['torch']} (CUDA {exact['cuda']}, commit "
             f"{exact['torch_git']}), torchvision {exact['torchvision']}"]
    if SESSION in config.stash:
        options = config.stash[SESSION].options
        lines.append(f"conformance records: {options.results}")
        lines.append(f"conformance property search: {options.search.describe()}")
    lines.append(f"conformance threads: {threads_line(config)}")
    return lines


def threads_line(config) -> str:
    """The thread budget the cells run under, as the header says it: the controller of a
    pytest-xdist run runs no cell and gives its workers their share."""
    workers = xdist_workers(config)
    threads = chosen_threads(config, workers)
    said = f"{threads} per runtime" if threads else "each runtime's own count"
    if config.option.flush_denormal:
        said += ", denormals flushed"
    return said + (f", in each of {workers} pytest-xdist workers" if workers else "")


def pytest_generate_tests(metafunc):
    if "conformance_spec" in metafunc.fixturenames:
        session = metafunc.config.stash[SESSION]
        cells = session.cells()
        session.generated = True
        params = [pytest.param(spec, id=spec.id, marks=_marks(metafunc.config, session, spec))
                  for spec in cells]
        metafunc.parametrize("conformance_spec", params)


def case_marks(config, session: ConformanceSession, spec: CellSpec) -> list:
    """The case's tags as markers, and `slow` for the compiled paths outside pt2-ci and
    the tuned variants outside tuning-ci (`targets.slow_cell`): the tiers (`-m ci`,
    `-m nightly`) select any plugin's cells of a case alike."""
    case = session.entry(spec.case)
    marks = []
    for tag in sorted(case.tags):
        _register_tag(config, session, tag)
        marks.append(getattr(pytest.mark, tag))
    slow = slow_cell(case.tags, spec.target)
    if slow and "slow" not in case.tags:
        marks.append(pytest.mark.slow)
    # The tiers: `-m ci` is minutes on two cores, `-m nightly` the whole matrix.
    marks += [pytest.mark.nightly] + ([] if slow else [pytest.mark.ci])
    return marks


def _register_tag(config, session: ConformanceSession, tag: str) -> None:
    """A case tag as a marker, registered once (`-m TAG`, `pytest --markers`); a marker
    a plugin registered with its own text (slow, ci, latency, ...) keeps it."""
    if tag in session.registered_tags:
        return
    session.registered_tags.add(tag)
    if not _is_marker(config, tag):
        config.addinivalue_line("markers", f"{tag}: cases tagged {tag!r}")


def _is_marker(config, name: str) -> bool:
    return any(line.split(":")[0].split("(")[0].strip() == name
               for line in config.getini("markers"))


def _marks(config, session: ConformanceSession, spec: CellSpec) -> list:
    marks = [pytest.mark.conformance_check, pytest.mark.xdist_group(spec.case),
             *case_marks(config, session, spec)]
    # The cell itself decides what its row means (CheckCell.judge); looking the row up
    # here marks it as matched, for the warning about rows that match no cell.
    session.expectation(spec)
    return marks


def deselect(config, items: list, dropped: list) -> None:
    """Take `dropped` out of the run, as pytest's own deselection does."""
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(dropped)
        items[:] = [item for item in items if item not in gone]


def pytest_collection_modifyitems(session, config, items):
    conformance = config.stash.get(SESSION, None)
    if not conformance:
        return
    if config.option.shard_costs and not config.option.shard:
        raise pytest.UsageError("--shard-costs deals the cases of --shard K/N: give --shard too")
    if config.option.shard:
        costs = shard_costs(config.option.shard_costs)
        deselect(config, items, shard.outside(items, *shard.parse(config.option.shard), costs))
    if getattr(config.option, "numprocesses", None) or hasattr(config, "workerinput"):
        items[:] = slowest_first(items, case_costs_for_order(config))
    if not conformance.generated:
        return
    for row in conformance.expectations.unmatched():
        warnings.warn(ConformanceWarning(
            f"expectation {row.describe()} matches no cell of the matrix on torch "
            f"{torch_release()}: remove it or fix its patterns"))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session):
    """How many cells this session runs, in each of its records: a report that finds
    fewer records of the session knows that the run ended early."""
    config = session.config
    if config.stash.get(SESSION, None):
        config.stash[SESSION_CELLS] = sum(1 for item in session.items if cell_spec(item))


def selection(config) -> dict:
    """What chose this session's cells: runs of different selections are not compared.
    A shard is not part of it: the shards of a run make one selection together."""
    opt = config.option
    return {"markers": opt.markexpr or None, "keywords": opt.keyword or None}


def case_costs_for_order(config) -> dict[str, float]:
    """The costs xdist deals the cases by: read once, on the controller, before any record
    is written, and handed to every worker (one that replaces a crashed worker collects
    after the results file has changed, and must still order its tests alike)."""
    if hasattr(config, "workerinput"):
        return config.workerinput.get("conformance_case_costs") or {}
    if CASE_COSTS not in config.stash:
        options = config.stash[SESSION].options
        config.stash[CASE_COSTS] = known_costs(options.results, options.search.profile.name)
    return config.stash[CASE_COSTS]


def shard_costs(file: str | None) -> dict[str, float] | None:
    """The cases' recorded times that --shard balances by, when --shard-costs gives them."""
    if not file:
        return None
    try:
        return shard.case_costs(read_records(Path(file)))
    except (OSError, ValueError, KeyError) as exc:
        raise pytest.UsageError(f"--shard-costs {file}: not a records file ({exc})") from None


@pytest.fixture
def conformance_cell(conformance_spec: CellSpec, request) -> CheckCell:
    return make_cell(request, conformance_spec, CheckCell)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    spec = cell_spec(item)
    if spec is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        record = _record(item, report, call, spec)
        report.user_properties.append((RECORD, record))
    return report


def _record(item, report, call, spec: CellSpec) -> dict:
    cell = item.stash.get(CELL, None)
    outcome, message = _outcome(report, call, cell)
    return make_record(_cell_data(item.config, spec, item.nodeid, cell), outcome,
                       call.duration, message)


def crash_record(config, nodeid: str, crash: str) -> dict | None:
    """The record of a cell whose pytest-xdist worker died under it (the kernel killed
    it for memory, a runtime crashed the process): an error, without a verdict, so that
    the cell is neither lost from the run nor counted as a finding of the export."""
    session = config.stash[SESSION]
    name = nodeid.rpartition("[")[2].rstrip("]")
    spec = next((spec for spec in session.cells() if spec.id == name), None)
    if spec is None:  # not a cell: pytest reports the crash of another test itself
        return None
    message = (f"case {spec.case}, target {spec.target.id}, check {spec.check}: the "
               f"pytest-xdist worker running the cell died, and the cell has no verdict "
               f"({crash}); a process the kernel killed for lack of memory is in its log "
               f"(dmesg: 'Out of memory: Killed process')\n  reproduce: pytest '{nodeid}'")
    threads = chosen_threads(config, xdist_workers(config))  # the dead worker's budget
    budget = thread_budget.Budget(threads, config.option.flush_denormal) if threads else None
    data = {**_cell_data(config, spec, nodeid), "budget": budget and budget.describe()}
    return make_record(data, "error", 0.0, message)


def _cell_data(config, spec: CellSpec, nodeid: str, cell=None) -> dict:
    """What a record says of a cell besides its outcome."""
    # The row that applies to the cell: its reason, where it is, and the kind it expects.
    row = cell.row if cell else config.stash[SESSION].expectation(spec)
    return {"case": spec.case, "target": spec.target.id, "path": spec.target.path,
            "runtime": spec.target.runtime, "device": spec.target.device,
            # The backend's settings: its defaults, or its tuning and what that sets.
            "settings": settings_of(spec.target.path, spec.target.runtime),
            # the threads and denormal policy every runtime of the cell had
            "budget": thread_budget.described(),
            "check": spec.check, "nodeid": nodeid,
            "metrics": cell.metrics if cell else {}, "timings": cell.timings if cell else {},
            "artifact": cell.artifact if cell else {},
            "expectation": row.record() if row else None,
            # the CheckFailure's kind (FAILURE_KINDS) of a failed or xfailed check, else None
            "failure_kind": getattr(cell, "failure_kind", None),
            # the case's tags: the report tells a target the case does not have from a
            # cell this run did not select
            "tags": sorted(config.stash[SESSION].entry(spec.case).tags),
            "session_cells": config.stash.get(SESSION_CELLS, None),
            "selection": selection(config),
            **(cell.record_fields() if cell else {})}


def _outcome(report, call, cell=None) -> tuple[str, str]:
    error = str(call.excinfo.value) if call.excinfo else ""
    if error.startswith("UNEXPECTED PASS"):
        return "xpassed", error
    if hasattr(report, "wasxfail"):
        if report.skipped:  # the record keeps the check's whole message, not the xfail's
            return "xfailed", getattr(cell, "failure", "") or error
        return "xpassed", str(report.longrepr)
    if report.skipped:
        return "skipped", str(call.excinfo.value) if call.excinfo else ""
    if report.failed:
        return ("failed" if report.when == "call" else "error"), error or str(report.longrepr)
    return "passed", ""


class Recorder:
    """Writes the records that reports carry; on the controller under xdist."""

    def __init__(self, writer, config):
        self.writer, self.config = writer, config
        self.outcomes: dict[str, collections.Counter] = collections.defaultdict(
            collections.Counter)
        self.expected: collections.Counter = collections.Counter()  # xfails by row
        self.causes: collections.Counter = collections.Counter()  # failures by root cause
        self.costs: list[dict] = []  # each cell's case, path, check and time

    def pytest_runtest_logreport(self, report):
        properties = report.user_properties
        if report.when == "???":  # pytest-xdist's report of a test its dead worker ran
            record = crash_record(self.config, report.nodeid, str(report.longrepr))
            properties = [(RECORD, record)] if record else []
        for name, value in properties:
            if name == RECORD:
                self.writer.write(value)
                self.outcomes[value["target"]][value["outcome"]] += 1
                if value["outcome"] == "xfailed" and value.get("expectation"):
                    self.expected[value["expectation"]["row"]] += 1
                if value["outcome"] in ("failed", "error"):
                    self.causes[failure_cause(value)] += 1
                self.costs.append({key: value[key] for key in ("case", "path", "check",
                                                                "duration_s")})

    def pytest_terminal_summary(self, terminalreporter):
        if not self.writer.count:
            return
        terminalreporter.section("conformance by target")
        for line in outcome_table(self.outcomes):
            terminalreporter.write_line(line)
        if self.expected:
            terminalreporter.section("conformance expected failures, by expectation row")
            for row, count in self.expected.most_common():
                terminalreporter.write_line(f"{count:>5}  {row}")
        shared = [(cause, count) for cause, count in self.causes.most_common() if count > 1]
        if shared:
            terminalreporter.section("conformance failures that share a cause")
            for cause, count in shared:
                terminalreporter.write_line(f"{count:>5} cells  {cause}")
        terminalreporter.section("conformance cost")
        for line in cost_lines(self.costs):
            terminalreporter.write_line(line)
        terminalreporter.config.hook.pytest_conformance_terminal_summary(
            terminalreporter=terminalreporter)
        rerun = (f" (a rerun of run {self.writer.rerun_of}: appended)"
                 if self.writer.rerun_of else "")
        terminalreporter.write_line(f"conformance: {self.writer.count} records written to "
                                    f"{self.writer.file}{rerun}")


OUTCOMES = ("passed", "failed", "error", "xfailed", "xpassed", "skipped")


def outcome_table(outcomes: dict[str, collections.Counter]) -> list[str]:
    """One line per target with its count of each outcome, for the end of the run."""
    width = max(len(target) for target in outcomes)
    lines = [f"{'target':{width}}  " + "  ".join(f"{o:>7}" for o in OUTCOMES)]
    for target in sorted(outcomes):
        counts = outcomes[target]
        lines.append(f"{target:{width}}  " + "  ".join(f"{counts[o]:>7}" for o in OUTCOMES))
    return lines
