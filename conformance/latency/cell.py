"""The latency cells: which (case, target) pairs are timed, measuring one of them,
handing its samples to pytest-benchmark, and the regression gate."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from conformance.cell import Cell
from conformance.latency.measure import EAGER_PATH, NOT_TIMED, Method, NotBenchmarked
from conformance.latency.run_to_run import Spreads
from conformance.latency.served_load import LoadSettings
from conformance.latency.summary import CHECK, DEFAULT_MAX_SLOWDOWN, REGRESSION, judge
from conformance.runtimes import thread_budget
from conformance.session import CellSpec, ConformanceSession
from conformance.targets import Target, targets_for


@dataclasses.dataclass
class LatencyOptions:
    method: Method
    baseline: Path | None = None  # the records of an earlier run, for the regression gate
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN
    memory: bool = False  # measure peak memory, one new process per cell
    allocator: dict | None = None  # malloc's fixed thresholds (latency/allocator.py)
    # Where per-operator profiles and their traces go, and how many calls each profiles;
    # None: no profiles.
    profile_dir: Path | None = None
    profile_runs: int = 10
    # each class's spread of speedups between runs, added to every interval
    # (latency/run_to_run.py); None: one-run intervals
    spreads: Spreads | None = None
    # how a serve cell loads its server (latency/served_load.py); None: round trips only
    served_load: LoadSettings | None = None
    # (case, target) -> the baseline record's metrics, raw samples included: the gate
    # bootstraps them
    baseline_cells: dict = dataclasses.field(default_factory=dict)


def latency_cells(session: ConformanceSession) -> list[CellSpec]:
    """One latency cell per case and timed target, and eager's own, per device."""
    cells = []
    for case in session.registry:
        targets = [t for t in targets_for(case.tags) if t.runtime not in NOT_TIMED]
        devices = dict.fromkeys(t.device for t in targets)
        eager = [Target(EAGER_PATH, "torch", device) for device in devices]
        cells += [CellSpec(case.name, target, CHECK) for target in eager + targets]
    return cells


def latency_reproduce(reproduce: str) -> str:
    """The conformance cell's command, made a latency run on this run's budget: without
    --latency the latency cells are deselected, and speedups compare only under the
    same budget."""
    budget = thread_budget.described() or {}
    words = ["--latency"] + ([f"--threads={budget['threads']}"] if budget.get("threads") else [])
    words += ["--flush-denormal"] if budget.get("flush_denormal") else []
    return f"{reproduce} {shlex.join(words)}"


class LatencyCell(Cell):
    """A latency cell being measured: its target timed against eager, interleaved."""

    def __init__(self, spec: CellSpec, session: ConformanceSession, reproduce: str,
                 options: LatencyOptions | None, clock: ReplayClock | None = None):
        super().__init__(spec, session, latency_reproduce(reproduce))
        self.options = options  # the latency run's; None outside one
        self.clock = clock  # pytest-benchmark's timer for this cell (the benchmark marker's)

    def record_fields(self) -> dict:
        """Latencies compare only between runs with the same budget and method."""
        return {"budget": thread_budget.described(),
                "method": self.options.method.describe() if self.options else None,
                "allocator": self.options.allocator if self.options else None}

    def measure(self, benchmark=None) -> None:
        from conformance.checks.catalog import CheckFailure

        try:
            with self.subject() as subject:
                self.time(subject)
        except NotBenchmarked as exc:
            pytest.skip(str(exc))
        except CheckFailure as exc:
            pytest.fail(str(exc), pytrace=False)
        feed_benchmark(benchmark, self.clock, self.spec, self.metrics)
        self.gate()

    def time(self, subject) -> None:
        """The samples and their statistics, and the peak memory when asked. Only an
        artifact that computes what eager computes is timed; an expectation row of its
        matches_eager cell says it does not."""
        from conformance.checks.catalog import run_or_fail
        from conformance.latency import measure as latency

        row = self.session.expectation(dataclasses.replace(self.spec, check="matches_eager"))
        latency.ensure_correct(subject, row.reason if row else None)
        self.metrics = run_or_fail(subject, "latency", "timing the artifact",
                                   lambda: latency.measure(subject, self.options.method,
                                                           self.options.spreads))
        if self.options.served_load and subject.target.runtime == "serve":
            from conformance.latency.served_load import served_load

            self.metrics["served_load"] = run_or_fail(
                subject, "latency", "loading the server with concurrent clients",
                lambda: served_load(subject, self.metrics["eager_median_s"],
                                    self.options.served_load))
        if self.options.memory:
            self.metrics["peak_rss_mib"] = run_or_fail(
                subject, "latency", "measuring peak memory", lambda: self.peak_memory(subject))
        if self.options.profile_dir is not None:
            self.metrics["profile"] = self.profile(subject)

    def profile(self, subject) -> dict:
        """Where the time goes, after the samples are taken: profiling slows every call it
        records. A profile that fails says why in the record; the cell is still timed."""
        from conformance.latency.profile import profile_record

        return profile_record(subject, self.options.profile_runs, self.options.profile_dir,
                              f"{self.spec.case}-{self.spec.target.id}")

    def peak_memory(self, subject) -> float:
        from conformance.latency.memory import peak_rss_mib
        from conformance.layout import harness_build_dir

        opts = self.session.options
        return peak_rss_mib(subject, opts.cases, opts.builtin_cases,
                            opts.harness_build_dir or harness_build_dir(),
                            opts.fresh_process_timeout)

    def gate(self) -> None:
        """Judge the cell against the baseline's: fail a regression; a cell too noisy to
        judge passes, and its record keeps the verdict for the run's summary."""
        options = self.options
        before = options.baseline_cells.get((self.spec.case, self.spec.target.id))
        if options.baseline is None or self.spec.target.path == EAGER_PATH or before is None:
            return
        judgement = judge(self.spec.case, self.spec.target.id, self.metrics, before,
                          options.max_slowdown, options.method.describe())
        self.metrics["regression_gate"] = judgement.record(options.baseline)
        if judgement.verdict == REGRESSION:
            pytest.fail(f"latency regression against {options.baseline}: "
                        f"{judgement.describe()}\n  reproduce: {self.reproduce} "
                        f"{shlex.quote(f'--latency-baseline={options.baseline}')}",
                        pytrace=False)


class ReplayClock:
    """pytest-benchmark's timer for a latency cell (the `timer` of its benchmark marker):
    it replays the samples the cell measured, so pytest-benchmark's statistics, JSON,
    saved runs, comparisons and histograms hold exactly those samples.

    The suite takes its samples itself, eager and the target interleaved and the
    libtorch harness timed in C++, which pytest-benchmark's own loop cannot do. Its
    public `pedantic` call reads the timer once before and once after each call of its
    target; the target here only steps to the next sample, so the first read gives 0.0
    and the second the sample: each duration is `sample - 0.0`, the sample itself,
    bit for bit. Nothing of pytest-benchmark's loop is timed.
    """

    def __init__(self):
        self._now = 0.0
        self._pending: Iterator[float] = iter(())

    def __call__(self) -> float:
        now, self._now = self._now, 0.0
        return now

    def step(self) -> None:
        """The replayed 'call': the next read of the clock gives the next sample. Past
        the last sample it gives 0 (pytest-benchmark calls its target once more under
        --benchmark-cprofile, or once only under --benchmark-disable)."""
        self._now = next(self._pending, 0.0)

    def replay(self, benchmark, samples: Sequence[float]) -> None:
        self._pending = iter(samples)
        benchmark.pedantic(self.step, rounds=len(samples), iterations=1, warmup_rounds=0)

    def __str__(self) -> str:  # pytest-benchmark's JSON names the timer of each benchmark
        return "conformance.latency: replay of the samples measured by the suite"


def feed_benchmark(benchmark, clock: ReplayClock | None, spec: CellSpec, metrics: dict) -> None:
    """Give pytest-benchmark the samples, so its table, --benchmark-save, --benchmark-json
    and --benchmark-compare-fail see the same numbers as the suite's records. Its group,
    the case, comes from the benchmark marker set at collection; eager's own cell is a
    benchmark of its case's group too."""
    if benchmark is None or clock is None:
        return
    benchmark.extra_info.update({
        "target": spec.target.id, "speedup": metrics["speedup"],
        "speedup_ci": metrics.get("speedup_ci"), "confidence": metrics.get("confidence"),
        "speedup_ci_one_run": metrics.get("speedup_ci_one_run"),
        "eager_median_s": metrics["eager_median_s"], "p90_s": metrics.get("p90_s"),
        "p99_s": metrics.get("p99_s"), "iqr_over_median": metrics["iqr_over_median"],
        **(thread_budget.described() or {})})
    clock.replay(benchmark, metrics["samples_s"])
