"""The latency cells of the plugin: options, the thread budget, measuring one cell,
handing its samples to pytest-benchmark, and the regression gate.

`pytest --latency` runs the latency cells and nothing else; without it they are
deselected, so the conformance run never pays for them.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conformance.runtimes import threads as budget
from conformance.latency.measure import Method, NotBenchmarked
from conformance.latency.summary import (DEFAULT_MAX_SLOWDOWN, budget_mismatch, regression,
                                         speedups)
from conformance.keys import SESSION


class LatencyUsageError(Exception):
    """A command line that would give latencies nobody should trust."""


def add_latency_options(group) -> None:
    group.addoption("--latency", action="store_true",
                    help="run the latency benchmarks (test_latency) instead of the conformance "
                         "matrix; each target is timed against eager, interleaved")
    group.addoption("--threads", type=int, default=None, metavar="N",
                    help="intra-op threads of every runtime: torch, ONNX Runtime, the libtorch "
                         "harness (default: 1 in a latency run, each runtime's own otherwise)")
    group.addoption("--flush-denormal", action="store_true",
                    help="read and write denormal floats as zero in every runtime")
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


def latency_options(config):
    from conformance.session import LatencyOptions

    opt = config.option
    if not opt.latency:
        return None
    if getattr(opt, "numprocesses", None) or getattr(opt, "dist", "no") != "no":
        raise LatencyUsageError("--latency runs in one process: parallel workers (-n, "
                                "pytest-xdist) would take each other's cores; drop -n")
    method = Method(warmup=opt.latency_warmup, min_rounds=opt.latency_min_rounds,
                    max_rounds=opt.latency_max_rounds, max_time_s=opt.latency_time)
    if method.min_rounds < 1 or method.max_rounds < method.min_rounds or method.warmup < 0:
        raise LatencyUsageError(f"latency rounds must satisfy 1 <= min <= max and warm-up "
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
        raise LatencyUsageError(f"--latency-baseline {baseline}: no such file")
    if baseline.resolve() == results.resolve():
        raise LatencyUsageError(f"--latency-baseline {baseline} is this run's own results "
                                f"file, which the run empties: copy it elsewhere first")
    records = read_records(baseline)
    mismatch = budget_mismatch(records, budget.described())
    if mismatch:
        raise LatencyUsageError(f"--latency-baseline {baseline}: {mismatch}")
    return speedups(records)


def install_budget(config) -> None:
    """The same threads and denormal policy for every runtime of this process."""
    opt = config.option
    if opt.threads is None and not opt.latency and not opt.flush_denormal:
        return  # a conformance run leaves every runtime its default
    if opt.threads is not None and opt.threads < 1:
        raise LatencyUsageError(f"--threads must be at least 1, got {opt.threads}")
    import torch

    threads = opt.threads or (1 if opt.latency else torch.get_num_threads())
    budget.install(budget.Budget(threads, opt.flush_denormal))


def other_run_items(config, items: list) -> list:
    """The latency cells, or under --latency the conformance cells: not this run's."""
    unwanted = "conformance_spec" if config.option.latency else "latency_spec"
    return [i for i in items if hasattr(i, "callspec") and unwanted in i.callspec.params]


def latency_record_fields(config) -> dict:
    options = config.stash[SESSION].options.latency
    return {"budget": budget.described(),
            "method": options.method.describe() if options else None}


class LatencyCell:
    """A latency cell being measured: keeps what the record needs, like a check's Cell."""

    def __init__(self, spec, session, reproduce: str):
        self.spec, self.session, self.reproduce = spec, session, reproduce
        self.metrics: dict = {}
        self.timings: dict = {}
        self.artifact: dict = {}

    def measure(self, benchmark=None) -> None:
        from conformance.latency import measure as latency
        from conformance.checks.catalog import CheckFailure, run_or_fail

        options = self.session.options.latency
        if benchmark is not None:
            benchmark._mode = "conformance latency"  # used, even when skipped or failed
        subject = self.session.subject(self.spec, self.reproduce)
        row = self.session.expectations.lookup(self.spec.case, self.spec.target.id,
                                               "matches_eager")
        try:
            latency.ensure_correct(subject, row.reason if row else None)
            self.metrics = run_or_fail(subject, "latency", "timing the artifact",
                                       lambda: latency.measure(subject, options.method))
            if options.memory:
                self.metrics["peak_rss_mib"] = run_or_fail(
                    subject, "latency", "measuring peak memory", lambda: self.peak_memory(subject))
        except NotBenchmarked as exc:
            pytest.skip(str(exc))
        except CheckFailure as exc:
            pytest.fail(str(exc), pytrace=False)
        finally:
            self.timings = subject.timings
            self.artifact = subject.artifact_summary()
        feed_benchmark(benchmark, self.spec, self.metrics)
        self.gate(options)

    def peak_memory(self, subject) -> float:
        from conformance.exporters.cache import harness_build_dir
        from conformance.latency.memory import peak_rss_mib

        opts = self.session.options
        return peak_rss_mib(subject, opts.cases, opts.builtin_cases,
                            opts.harness_build_dir or harness_build_dir(),
                            opts.fresh_process_timeout)

    def gate(self, options) -> None:
        if options.baseline is None or self.spec.target.path == "eager":
            return
        message = regression(self.spec.case, self.spec.target.id, self.metrics["speedup"],
                             options.baseline_speedups, options.max_slowdown)
        if message:
            pytest.fail(f"latency regression against {options.baseline}: {message}\n"
                        f"  reproduce: {self.reproduce}", pytrace=False)


def feed_benchmark(benchmark, spec, metrics: dict) -> None:
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
        **(budget.described() or {})})
