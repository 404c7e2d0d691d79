"""The latency benchmark: its statistics, its interleaving, its refusal to time a
wrong artifact, and its regression gate failing on a deliberately slowed runtime."""
import json
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
    baseline = {("linear", "trace-torch-cpu"): sound["speedup"]}
    message = latency_summary.regression("linear", "trace-torch-cpu", slowed["speedup"],
                                         baseline, max_slowdown=10)
    assert message and "beyond the 10% threshold" in message
    assert latency_summary.regression("linear", "trace-torch-cpu", sound["speedup"], baseline,
                                      max_slowdown=10) is None


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
    assert any("quantized_mobilenet_v2_x86" in line and line.endswith("40.0") for line in lines)
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
