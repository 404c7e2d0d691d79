"""The latency cells: which (case, target) pairs are timed, measuring one of them,
handing its samples to pytest-benchmark, and the regression gate."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conformance.cell import Cell
from conformance.latency.measure import EAGER_PATH, NOT_TIMED, Method, NotBenchmarked
from conformance.latency.summary import CHECK, DEFAULT_MAX_SLOWDOWN, regression
from conformance.runtimes import thread_budget
from conformance.session import CellSpec, ConformanceSession
from conformance.targets import Target, targets_for


@dataclasses.dataclass
class LatencyOptions:
    method: Method
    baseline: Path | None = None  # the records of an earlier run, for the regression gate
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN
    memory: bool = False  # measure peak memory, one new process per cell
    baseline_speedups: dict = dataclasses.field(default_factory=dict)  # (case, target) -> x




def latency_cells(session: ConformanceSession) -> list[CellSpec]:
    """One latency cell per case and timed target, and eager's own, per device."""
    cells = []
    for case in session.registry:
        targets = [t for t in targets_for(case.tags) if t.runtime not in NOT_TIMED]
        devices = dict.fromkeys(t.device for t in targets)
        eager = [Target(EAGER_PATH, "torch", device) for device in devices]
        cells += [CellSpec(case.name, target, CHECK) for target in eager + targets]
    return cells


class LatencyCell(Cell):
    """A latency cell being measured: its target timed against eager, interleaved."""

    def __init__(self, spec: CellSpec, session: ConformanceSession, reproduce: str,
                 options: LatencyOptions | None):
        super().__init__(spec, session, reproduce)
        self.options = options  # the latency run's; None outside one

    def record_fields(self) -> dict:
        """Latencies compare only between runs with the same budget and method."""
        return {"budget": thread_budget.described(),
                "method": self.options.method.describe() if self.options else None}

    def measure(self, benchmark=None) -> None:
        from conformance.checks.catalog import CheckFailure

        if benchmark is not None:
            benchmark._mode = "conformance latency"  # used, even when skipped or failed
        try:
            with self.subject() as subject:
                self.time(subject)
        except NotBenchmarked as exc:
            pytest.skip(str(exc))
        except CheckFailure as exc:
            pytest.fail(str(exc), pytrace=False)
        feed_benchmark(benchmark, self.spec, self.metrics)
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
                                   lambda: latency.measure(subject, self.options.method))
        if self.options.memory:
            self.metrics["peak_rss_mib"] = run_or_fail(
                subject, "latency", "measuring peak memory", lambda: self.peak_memory(subject))

    def peak_memory(self, subject) -> float:
        from conformance.latency.memory import peak_rss_mib
        from conformance.layout import harness_build_dir

        opts = self.session.options
        return peak_rss_mib(subject, opts.cases, opts.builtin_cases,
                            opts.harness_build_dir or harness_build_dir(),
                            opts.fresh_process_timeout)

    def gate(self) -> None:
        options = self.options
        if options.baseline is None or self.spec.target.path == EAGER_PATH:
            return
        message = regression(self.spec.case, self.spec.target.id, self.metrics["speedup"],
                             options.baseline_speedups, options.max_slowdown)
        if message:
            pytest.fail(f"latency regression against {options.baseline}: {message}\n"
                        f"  reproduce: {self.reproduce}", pytrace=False)


def feed_benchmark(benchmark, spec: CellSpec, metrics: dict) -> None:
    """Give pytest-benchmark the samples, so its table, --benchmark-save, --benchmark-json
    and --benchmark-compare-fail see the same numbers as the suite's records."""
    if benchmark is None or not benchmark.enabled:
        return
    stats = benchmark._make_stats(1)  # one call per sample
    for sample in metrics["samples_s"]:
        stats.update(sample)
    benchmark.group = spec.case
    benchmark.extra_info.update({
        "target": spec.target.id, "speedup": metrics["speedup"],
        "eager_median_s": metrics["eager_median_s"], "p90_s": metrics.get("p90_s"),
        "p99_s": metrics.get("p99_s"), "iqr_over_median": metrics["iqr_over_median"],
        **(thread_budget.described() or {})})
