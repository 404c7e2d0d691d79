"""The latency benchmark: its statistics, its interleaving, its refusal to time a
wrong artifact, its regression gate failing on a deliberately slowed runtime, and, end
to end, pytest-benchmark's view of the same samples and the gate's verdicts in a run.
The statistics alone, without a model, are in test_latency_stats.py."""
import importlib.util
import json
import os
import time

import pytest
import torch

from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.latency import measure as latency
from conformance.latency import stats as latency_stats
from conformance.latency import summary as latency_summary
from conformance.latency.measure import Method, NotBenchmarked
from conformance.runtimes import thread_budget
from conformance.targets import Target
from tests import broken_models
from tests.patching import exporter_of, loader_of, patch_exporter, patch_loader

QUICK = Method(warmup=2, min_rounds=15, max_rounds=40, max_time_s=0.05)


def test_quantiles_interpolate_between_order_statistics():
    samples = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert latency_stats.quantile(samples, 0.5) == 3.0
    assert latency_stats.quantile(samples, 0.25) == 2.0
    assert latency_stats.quantile(samples, 0.9) == pytest.approx(4.6)


def test_percentiles_need_enough_samples_and_a_wide_spread_is_flagged():
    few = latency_stats.summarize([1.0] * 9 + [2.0])
    assert few["p90_s"] is not None and few["p99_s"] is None
    assert latency_stats.summarize([float(i) for i in range(1, 101)])["p99_s"] == \
        pytest.approx(99.01)
    assert not latency_stats.summarize([1.0, 1.0, 1.01, 1.0]).get("unstable")
    assert latency_stats.summarize([1.0, 2.0, 3.0, 4.0])["unstable"]


def test_geometric_mean_of_speedups_treats_faster_and_slower_alike():
    assert latency_stats.geometric_mean([2.0, 0.5]) == pytest.approx(1.0)
    assert latency_stats.geometric_mean([]) is None


class ScriptedSide:
    """A side whose every call takes a fixed time, and which logs the order of calls."""

    def __init__(self, name: str, seconds: float, log: list):
        self.name, self.seconds, self.log = name, seconds, log

    def samples(self, count: int) -> list[float]:
        self.log.extend([self.name] * count)
        return [self.seconds] * count


def test_eager_and_target_take_alternating_turns_after_their_warm_up():
    log = []
    eager, other = ScriptedSide("e", 0.01, log), ScriptedSide("t", 0.02, log)
    method = Method(warmup=3, min_rounds=4, max_rounds=4, max_time_s=1.0)
    eager_samples, other_samples = latency.interleaved(eager, other, method)
    assert log[:6] == ["e"] * 3 + ["t"] * 3  # warm-up, never in the samples
    assert "".join(log[6:]) == "et" + "te" + "et" + "te"  # neither side always goes first
    assert len(eager_samples) == len(other_samples) == 4
    assert latency_stats.speedup(eager_samples, other_samples) == pytest.approx(0.5)


def test_rounds_follow_the_time_budget_within_their_bounds():
    method = Method(warmup=0, min_rounds=10, max_rounds=100, max_time_s=1.0)
    assert method.rounds_for(0.5) == 10
    assert method.rounds_for(0.02) == 50
    assert method.rounds_for(1e-6) == 100


def subject_for(case, path, runtime, tmp_path) -> Subject:
    return Subject(CaseState(case, "cpu", tmp_path), Target(path, runtime, "cpu"),
                   reproduce="pytest <nodeid>")


def slowed_loader(monkeypatch, runtime: str, delay_s: float) -> None:
    """A runtime that computes the right outputs, `delay_s` late."""
    sound = loader_of(runtime)

    def slow(file, device):
        loaded = sound(file, device)

        def call(*inputs):
            time.sleep(delay_s)
            return loaded(*inputs)
        return call

    patch_loader(monkeypatch, runtime, slow)


def test_a_slowed_runtime_measures_slower_than_eager(tmp_path, monkeypatch):
    slowed_loader(monkeypatch, "torch", 0.002)
    subject = subject_for(broken_models.linear_case(), "trace", "torch", tmp_path)
    latency.ensure_correct(subject, None)
    metrics = latency.measure(subject, QUICK)
    assert metrics["median_s"] >= 0.002 and metrics["speedup"] < 0.5
    assert len(metrics["samples_s"]) == len(metrics["eager_samples_s"]) >= QUICK.min_rounds


def test_the_regression_gate_fails_a_slowed_runtime_against_a_sound_baseline(tmp_path,
                                                                               monkeypatch):
    sound = latency.measure(subject_for(broken_models.linear_case(), "trace", "torch",
                                        tmp_path / "sound"), QUICK)
    slowed_loader(monkeypatch, "torch", 0.002)
    slowed = latency.measure(subject_for(broken_models.linear_case(), "trace", "torch",
                                         tmp_path / "slowed"), QUICK)
    judged = latency_summary.judge("linear", "trace-torch-cpu", slowed, sound, max_slowdown=10)
    assert judged.verdict == latency_summary.REGRESSION
    assert "all of it beyond the 10% threshold" in judged.describe()
    # Measured against itself, a sound run is never a regression (a cell of tens of
    # microseconds may be too noisy to call steady).
    again = latency_summary.judge("linear", "trace-torch-cpu", sound, sound, max_slowdown=10)
    assert again.verdict != latency_summary.REGRESSION


def test_a_measurement_keeps_an_interval_around_its_speedup_and_eager_none(tmp_path):
    case = broken_models.linear_case()
    target = latency.measure(subject_for(case, "trace", "torch", tmp_path / "t"), QUICK)
    low, high = target["speedup_ci"]
    assert low <= target["speedup"] <= high and target["confidence"] == 0.95
    assert latency_stats.speedup_interval(target["eager_samples_s"], target["samples_s"]) == \
        (low, high)  # reproducible from the record's samples
    eager = latency.measure(subject_for(case, "eager", "torch", tmp_path / "e"), QUICK)
    assert eager["speedup"] == 1.0 and eager["speedup_ci"] is None


def test_an_artifact_that_differs_from_eager_is_not_benchmarked(tmp_path, monkeypatch):
    sound = exporter_of("trace")

    def other_weights(model, example, file, options):
        torch.manual_seed(123)
        sound(broken_models.Linear().eval(), example, file, options)

    patch_exporter(monkeypatch, "trace", other_weights)
    subject = subject_for(broken_models.linear_case(), "trace", "torch", tmp_path)
    with pytest.raises(NotBenchmarked, match="does not match eager: case linear, target "
                                             "trace-torch-cpu, check matches_eager"):
        latency.ensure_correct(subject, None)


def test_an_expected_failure_is_not_benchmarked_and_a_crash_fails(tmp_path, monkeypatch):
    subject = subject_for(broken_models.linear_case(), "trace", "torch", tmp_path)
    with pytest.raises(NotBenchmarked, match="expected failure here \\(known bad\\)"):
        latency.ensure_correct(subject, "known bad")

    def crashing(file, device):
        raise RuntimeError("the runtime fell over")

    patch_loader(monkeypatch, "torch", crashing)
    crashed = subject_for(broken_models.linear_case(), "script", "torch", tmp_path / "crash")
    with pytest.raises(CheckFailure, match="the runtime fell over"):
        latency.ensure_correct(crashed, None)


def test_the_budget_sets_torch_threads_and_onnxruntime_session_options():
    import onnxruntime as ort

    before = torch.get_num_threads()
    try:
        thread_budget.install(thread_budget.Budget(threads=1))
        assert torch.get_num_threads() == 1
        options = ort.SessionOptions()
        thread_budget.installed().onnxruntime_options(options)
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
        assert options.get_session_config_entry("session.set_denormal_as_zero") == "0"
    finally:
        thread_budget.install(None)
        torch.set_num_threads(before)


def test_summary_lists_each_measured_cell_and_geometric_means(tmp_path):
    def record(case, target, path, speedup, median):
        return {"case": case, "target": target, "path": path, "check": "latency",
                "metrics": {"median_s": median, "speedup": speedup, "n": 20,
                            "iqr_over_median": 0.02, "p90_s": median, "p99_s": None},
                "budget": {"threads": 1, "flush_denormal": False}}

    records = [record("a", "eager-torch-cpu", "eager", 1.0, 0.01),
               record("a", "trace-torch-cpu", "trace", 2.0, 0.005),
               record("b", "trace-torch-cpu", "trace", 0.5, 0.02),
               record("quantized_mobilenet_v2_x86", "trace-torch-cpu", "trace", 1.0, 0.025)]
    lines = latency_summary.summary_lines(records)
    assert any(line.startswith("a ") and "2.00x" in line for line in lines)
    assert any(line.startswith("trace-torch-cpu") and "1.00x" in line and line.endswith("3")
               for line in lines)
    assert any(line.startswith("quantized_mobilenet_v2_x86") and line.split()[-2:] == [
        "40.0", "33.7"] for line in lines)
    file = tmp_path / "new.jsonl"
    file.write_text("\n".join(json.dumps(r) for r in records))
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(record("a", "trace-torch-cpu", "trace", 3.0, 0.003)))
    assert latency_summary.main([str(file)]) == 0
    # a: 3.0x then 2.0x is 50% slower relative to eager
    assert latency_summary.main([str(file), "--baseline", str(old), "--max-slowdown", "60"]) == 0
    assert latency_summary.main([str(file), "--baseline", str(old)]) == 1
    other_budget = record("a", "trace-torch-cpu", "trace", 2.0, 0.005)
    other_budget["budget"] = {"threads": 2, "flush_denormal": False}
    old.write_text(json.dumps(other_budget))
    assert latency_summary.main([str(file), "--baseline", str(old)]) == 2


def test_a_cell_the_baseline_measured_and_this_run_could_not_is_lost():
    baseline = [{"case": "a", "target": "t", "path": "trace", "check": "latency",
                 "metrics": {"median_s": 0.01, "speedup": 1.0}}]
    now = [{"case": "a", "target": "t", "path": "trace", "check": "latency", "metrics": {},
            "outcome": "skipped", "message": "not benchmarked: the artifact does not match"}]
    assert latency_summary.lost(now, baseline) == [
        "case a, target t: measured in the baseline, skipped now: not benchmarked: the "
        "artifact does not match"]
    assert latency_summary.lost([], baseline) == []  # not selected this time: no loss


class Wide(torch.nn.Module):
    """64 MiB of weights: a peak that a tiny model does not have."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4096, 4096)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("runtime", ["torch", "libtorch"])
def test_peak_memory_comes_from_a_process_of_its_own_and_sees_the_weights(tmp_path, runtime):
    from conformance.cases import Case, random_inputs
    from conformance.latency.memory import peak_rss_mib
    from conformance.layout import harness_build_dir
    from conformance.runtimes import libtorch as harness

    if runtime == "libtorch" and harness.toolchain_problem():
        pytest.skip(harness.toolchain_problem())
    peaks = {}  # the libtorch figure comes from a harness of its own, not the session's
    for case in (broken_models.linear_case(), Case("wide", Wide, random_inputs((2, 4096)))):
        subject = Subject(CaseState(case, "cpu", tmp_path), Target("trace", runtime, "cpu"))
        peaks[case.name] = peak_rss_mib(subject, [], False, harness_build_dir(), 300)
    # The suite's own process is far larger than either: a figure inherited from it
    # (getrusage's maxrss survives exec) would make both equal.
    assert 60 < peaks["wide"] - peaks["linear"] < 200, peaks


# ---- end to end, through pytester: pytest-benchmark's view and the in-run gate ----

TINY_CASES = '''
import torch
from conformance import Case, random_inputs


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.linear(x)


class Random(Small):
    """Other outputs on every call: no artifact matches eager, so none is timed."""

    def forward(self, x):
        return self.linear(x) + torch.rand(2)


class Lambda(Small):
    """TorchScript compiles no lambda: the script cell fails before any sample."""

    def forward(self, x):
        return (lambda y: self.linear(y))(x)


NAMES = {"small": Small, "other": Small, "random": Random, "lambda": Lambda,
         "slowed": Small, "noisy": Small, "steady": Small}
CASES = [Case(name, kind, example=random_inputs((3, 4))) for name, kind in NAMES.items()]
'''
LATENCY_TEST = "def test_latency(latency_cell, benchmark):\n    latency_cell.measure(benchmark)\n"
QUICK_RUN = ("--latency", "--threads=1", "--latency-warmup=1", "--latency-min-rounds=8",
             "--latency-max-rounds=8")


# pytest-benchmark draws its histograms (one per group) with pygal, an optional
# dependency; they are drawn from the JSON, in a process of their own: pygal imports the
# importlib_metadata backport, after which importlib.metadata in this process finds no
# pytest11 entry point, and an in-process pytester run no plugin of the suite.
HISTOGRAMS = importlib.util.find_spec("pygal") is not None


@pytest.fixture
def latency_run(pytester, monkeypatch):
    pytester.makepyfile(my_models=TINY_CASES, test_timing=LATENCY_TEST)
    # The run inside is a session of its own, not an xdist worker: pytest-benchmark reads
    # this variable, left over from the worker that runs this test, and disables itself.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)

    def run(*args):
        return pytester.runpytest("--no-builtin-cases", "--cases", "my_models.py",
                                  "--conformance-results", "records.jsonl", "-p", "no:randomly",
                                  "--artifacts-dir=artifacts", *QUICK_RUN, *args)

    return run


def written_records(pytester) -> dict[str, dict]:
    lines = (pytester.path / "records.jsonl").read_text().splitlines()
    return {record["nodeid"].split("::")[-1]: record for record in map(json.loads, lines)}


def test_pytest_benchmark_gets_the_measured_samples_grouped_by_case(latency_run, pytester):
    import subprocess
    import sys
    from pathlib import Path

    result = latency_run("-k", "(small or other or random or lambda) and (eager-torch-cpu or "
                         "trace-torch-cpu or script-torch-cpu)", "--benchmark-json=bench.json")
    # random: both artifacts differ from eager (skipped); lambda: the script cell fails
    result.assert_outcomes(passed=9, skipped=2, failed=1)
    records = written_records(pytester)
    benchmarks = json.loads((pytester.path / "bench.json").read_text())["benchmarks"]
    measured = {name for name, r in records.items() if r["outcome"] == "passed"}
    assert {b["name"] for b in benchmarks} == measured  # no entry of a skipped or failed cell
    for bench in benchmarks:
        metrics = records[bench["name"]]["metrics"]
        assert bench["group"] == records[bench["name"]]["case"]
        assert bench["stats"]["data"] == metrics["samples_s"]  # replayed bit for bit
        assert bench["stats"]["median"] == metrics["median_s"]
        assert bench["stats"]["iqr"] == metrics["q3_s"] - metrics["q1_s"]  # one IQR
        assert bench["extra_info"]["speedup_ci"] == metrics["speedup_ci"]
    assert "fixture was not used" not in result.stdout.str() + result.stderr.str()
    histogram = ["--histogram=hist"] if HISTOGRAMS else []
    compare = subprocess.run([Path(sys.executable).parent / "pytest-benchmark", "compare",
                              "bench.json", "--group-by=group", *histogram], cwd=pytester.path,
                             capture_output=True, text=True, check=True)
    for case, count in (("small", 3), ("other", 3), ("lambda", 2), ("random", 1)):
        assert f"benchmark '{case}': {count} tests" in compare.stdout
    if not HISTOGRAMS:
        return
    assert sorted(p.name for p in pytester.path.glob("hist-*.svg")) == [
        "hist-lambda.svg", "hist-other.svg", "hist-random.svg", "hist-small.svg"]


def baseline_metrics(rng, eager_s: float, target_s: float, noise: float) -> dict:
    eager = [float(s) for s in eager_s * rng.lognormal(0, noise, 20)]
    other = [float(s) for s in target_s * rng.lognormal(0, noise, 20)]
    return {**latency_stats.summarize(other), "speedup": latency_stats.speedup(eager, other),
            "samples_s": other, "eager_samples_s": eager}


def test_the_in_run_gate_fails_a_regression_and_lists_a_cell_too_noisy_to_judge(latency_run,
                                                                                pytester):
    import numpy as np

    rng = np.random.default_rng(0)
    cells = {"slowed": baseline_metrics(rng, 1e-3, 1e-6, 0.01),  # 1000x then
             "noisy": baseline_metrics(rng, 1e-3, 1e-3, 1.5),  # anything from 0.2x to 5x
             "steady": baseline_metrics(rng, 1e-6, 1e-3, 0.01)}  # 0.001x then
    (pytester.path / "baseline.jsonl").write_text("".join(
        json.dumps({"case": case, "target": "trace-torch-cpu", "path": "trace",
                    "check": "latency", "outcome": "passed", "metrics": metrics,
                    "budget": {"threads": 1, "flush_denormal": False}}) + "\n"
        for case, metrics in cells.items()))
    result = latency_run("-k", "(slowed or noisy or steady) and trace-torch-cpu",
                         "--latency-baseline=baseline.jsonl")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "latency regression against baseline.jsonl: case slowed, target trace-torch-cpu: "
        "speedup over eager *x, was 99*x in the baseline (95% CIs *x now, *x then): "
        "*% slower relative to eager, 95% CI *% to *%, all of it beyond the 10% threshold "
        "(the interval includes the spread between runs, a standard deviation of *%)",
        "  reproduce: pytest 'test_timing.py::test_latency[[]slowed-trace-torch-cpu-latency[]]' "
        "* --latency --threads=1 --latency-baseline=baseline.jsonl"])
    result.stdout.fnmatch_lines([
        "regression gate against baseline.jsonl, threshold 10%: 1 regression, 1 too noisy to "
        "judge, 1 no regression",
        "TOO NOISY TO JUDGE (not failed) case noisy, target trace-torch-cpu: *, across the 10% "
        "threshold: too noisy to judge; more rounds narrow it: this run stopped at "
        "--latency-max-rounds=8*"])
    gates = {r["case"]: r["metrics"]["regression_gate"] for r in written_records(pytester).values()}
    assert {case: gate["verdict"] for case, gate in gates.items()} == {
        "slowed": "regression", "noisy": "too noisy to judge", "steady": "no regression"}


def complete_operator_events(trace_file, calls: tuple[str, ...] = ("model call", "model_run")
                             ) -> list[dict]:
    """The trace's complete events of operators (not the events around each call)."""
    found = json.loads(trace_file.read_text())
    events = found["traceEvents"] if isinstance(found, dict) else found
    return [e for e in events if e.get("ph") == "X" and e.get("name") not in calls
            and e.get("cat") in ("cpu_op", "Node")]


def test_latency_profile_writes_a_trace_per_target_and_the_top_operators(latency_run,
                                                                        pytester):
    result = latency_run("-k", "small and not other and (eager-torch-cpu or trace-torch-cpu or "
                         "onnx-op17-onnxruntime-cpu or trace-libtorch-cpu)",
                         "--latency-profile=profiles", "--latency-profile-runs=3")
    result.assert_outcomes(passed=4)
    for shown in ("*where the time goes*", "*small*trace-torch-cpu*", "*aten::addmm*",
                  "*small*onnx-op17-onnxruntime-cpu*", "*Gemm*"):
        result.stdout.fnmatch_lines([shown])  # in any order: the table follows the run
    for name, record in written_records(pytester).items():
        found = record["metrics"]["profile"]
        assert "error" not in found, (name, found)
        operators = complete_operator_events(pytester.path / "profiles" / found["trace"])
        assert operators, f"{name}: no operator event in {found['trace']}"
        assert found["top"] and found["calls"] == 3
    onnx = next(r for n, r in written_records(pytester).items() if "onnxruntime" in n)
    assert any(row["name"] in ("Gemm", "FusedGemm", "MatMul")
               for row in onnx["metrics"]["profile"]["top"])


def test_the_table_names_the_settings_of_each_tuned_variant_it_lists():
    from conformance.latency.summary import settings_lines
    from conformance.tuning import settings_of

    def record(path, runtime):
        return {"check": "latency", "case": "m", "path": path, "runtime": runtime,
                "target": f"{path}-{runtime}-cpu", "settings": settings_of(path, runtime),
                "metrics": {"median_s": 1e-3, "n": 15}}

    lines = settings_lines([record("compile", "inductor"), record("compile-tuned", "inductor")])
    assert lines == ["tuned variants (the other targets at their defaults):",
                     "  compile-tuned: torch._inductor.config.freezing = True"]
    assert settings_lines([record("trace", "torch")]) == []


def test_a_latency_run_fixes_mallocs_thresholds_for_itself_and_its_children(monkeypatch):
    from conformance.latency import allocator

    for name in allocator.ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    # mallopt takes an int: a larger value wraps, and a trim threshold of 0 trims the
    # heap at every free (eager of super_resolution_net ran twice as slow with it)
    assert all(0 < value < 2**31 for value in allocator.THRESHOLDS.values())
    fixed = allocator.fix_thresholds()
    if allocator._glibc() is None:
        assert fixed is None
        return
    assert fixed == {"malloc": "glibc", **allocator.THRESHOLDS}
    assert {name: os.environ[name] for name in allocator.ENVIRONMENT} == allocator.ENVIRONMENT


def test_every_latency_record_says_how_malloc_was_set(latency_run, pytester):
    latency_run("-k", "small and not other and eager-torch-cpu").assert_outcomes(passed=1)
    (record,) = written_records(pytester).values()
    assert record["allocator"]["mmap_threshold"] == 32 * 1024 * 1024
