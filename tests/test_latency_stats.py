"""The latency statistics without a model: one IQR with pytest-benchmark, speedup
intervals that cover the ratio they estimate, and the regression gate's three verdicts
on synthetic records (a real slowdown, a noisy pair, a steady pair), each shown failing
where its input is broken."""
import json

import numpy as np
import pytest
from pytest_benchmark.stats import Stats
from scipy.stats import bootstrap

from conformance.latency import stats, summary
from conformance.latency.summary import NO_REGRESSION, REGRESSION, TOO_NOISY


def benchmark_stats(samples) -> Stats:
    found = Stats()
    for sample in samples:
        found.update(sample)
    return found


def old_quartiles(samples) -> tuple[float, float]:
    """The suite's former definition: linear interpolation between order statistics."""
    return stats.quantile(samples, 0.25), stats.quantile(samples, 0.75)


# ---- one IQR ----

@pytest.mark.parametrize("count", [*range(1, 41), 99, 100, 101, 102, 300])
def test_quartiles_median_and_iqr_are_pytest_benchmarks(count):
    rng = np.random.default_rng(count)
    samples = [round(float(s), 9) for s in rng.lognormal(np.log(1e-3), 0.3, count)]
    theirs, ours = benchmark_stats(samples), stats.summarize(samples)
    assert (ours["q1_s"], ours["q3_s"]) == (theirs.q1, theirs.q3)
    assert ours["median_s"] == theirs.median
    assert ours["q3_s"] - ours["q1_s"] == theirs.iqr


def test_the_iqr_comparison_catches_another_quartile_definition():
    """The comparison above is not vacuous: the suite's former quartiles (linear
    interpolation) differ from pytest-benchmark's on most counts."""
    rng = np.random.default_rng(0)
    differing = 0
    for count in range(4, 40):
        samples = list(rng.lognormal(0, 0.3, count))
        q1, q3 = old_quartiles(samples)
        differing += (q3 - q1) != benchmark_stats(samples).iqr
    assert differing > 30


# ---- the speedup's interval ----

def paired_rounds(rng, count: int, ratio: float, noise: float = 0.05, machine: float = 0.0):
    """Rounds of eager and a target `ratio` times faster: lognormal noise of each call,
    and a factor of the machine per round (a busy spell) that slows both of its calls.
    The target's median is eager's over `ratio` exactly: both sides are lognormal."""
    spell = rng.lognormal(0, machine, count) if machine else np.ones(count)
    eager = 1e-3 * spell * rng.lognormal(0, noise, count)
    other = 1e-3 / ratio * spell * rng.lognormal(0, noise, count)
    return [float(s) for s in eager], [float(s) for s in other]


def test_the_speedup_interval_covers_the_ratio_it_estimates():
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(100):
        low, high = stats.speedup_interval(*paired_rounds(rng, 60, ratio=1.5))
        covered += low <= 1.5 <= high
    assert 88 <= covered <= 100  # about 95 of 100 for a 95% interval


def test_the_speedup_interval_excludes_a_ratio_it_does_not_estimate():
    eager, other = paired_rounds(np.random.default_rng(2), 100, ratio=1.3)
    low, high = stats.speedup_interval(eager, other)
    assert low <= 1.3 <= high and not low <= 1.5 <= high


def test_pairing_keeps_the_machines_spells_out_of_the_interval():
    """Rounds slowed alike on both sides leave the ratio alone: resampled in pairs the
    interval stays narrow; resampled as two unrelated samples it would not."""
    eager, other = paired_rounds(np.random.default_rng(3), 100, ratio=2.0, noise=0.02,
                                 machine=0.5)
    low, high = stats.speedup_interval(eager, other)
    unpaired = bootstrap((eager, other), stats._ratio_of_medians, vectorized=True,
                         n_resamples=2000, method="percentile",
                         rng=np.random.default_rng(0)).confidence_interval
    assert low <= 2.0 <= high
    assert (unpaired.high - unpaired.low) > 4 * (high - low)


def test_the_interval_is_reproducible_and_needs_two_rounds():
    eager, other = paired_rounds(np.random.default_rng(4), 30, ratio=1.2)
    assert stats.speedup_interval(eager, other) == stats.speedup_interval(eager, other)
    assert stats.speedup_interval(eager[:1], other[:1]) is None
    assert stats.speedup_interval(eager, other[:-1]) is None  # not paired


def test_a_cell_of_300_rounds_takes_tens_of_milliseconds():
    import time

    eager, other = paired_rounds(np.random.default_rng(5), 300, ratio=1.68)
    stats.speedup_interval(eager, other)  # scipy's import
    started = time.perf_counter()
    stats.speedup_interval(eager, other)
    assert time.perf_counter() - started < 0.5  # about 0.02 s on 2 cores


def test_the_slowdown_interval_covers_the_slowdown_between_two_runs():
    rng = np.random.default_rng(6)
    before, after = paired_rounds(rng, 100, ratio=2.0), paired_rounds(rng, 100, ratio=1.6)
    low, high = stats.slowdown_interval(before, after)
    assert low <= 25.0 <= high  # 2.0 / 1.6 - 1
    assert low > 10.0
    assert stats.slowdown_interval((before[0][:1], before[1][:1]), after) is None


# ---- the gate's verdicts ----

def metrics_of(eager, other) -> dict:
    return {**stats.summarize(other), "speedup": stats.speedup(eager, other),
            "samples_s": other, "eager_samples_s": eager,
            "speedup_ci": list(stats.speedup_interval(eager, other))}


def exactly(ratio: float, eager: list, other: list) -> tuple[list, list]:
    """The rounds rescaled so that their speedup is `ratio` to the last digit: the
    verdicts below then depend on the noise alone, not on where it put the medians."""
    scale = stats.speedup(eager, other) / ratio
    return eager, [s * scale for s in other]


def run_pair(ratio_before: float, ratio_now: float, noise: float, count: int = 100,
             seed: int = 7) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    return (metrics_of(*exactly(ratio_before, *paired_rounds(rng, count, ratio_before, noise))),
            metrics_of(*exactly(ratio_now, *paired_rounds(rng, count, ratio_now, noise))))


# A noisy pair whose point estimate is 15% slower: beyond a 10% threshold, within noise.
NOISY = dict(ratio_before=2.0, ratio_now=2.0 / 1.15, noise=0.6, count=20)


def test_a_real_slowdown_fails_and_says_everything_needed():
    before, now = run_pair(2.0, 1.6, noise=0.03)
    judged = summary.judge("net", "trace-torch-cpu", now, before, max_slowdown=10)
    assert judged.verdict == REGRESSION and judged.slowdown_ci[0] > 10
    message = judged.describe()
    assert message.startswith(f"case net, target trace-torch-cpu: speedup over eager "
                              f"{now['speedup']:.3f}x, was {before['speedup']:.3f}x")
    low, high = judged.slowdown_ci
    assert f"95% CI {low:.1f}% to {high:.1f}%, all of it beyond the 10% threshold" in message
    assert _ci(now) in message and _ci(before) in message


def _ci(metrics: dict) -> str:
    low, high = metrics["speedup_ci"]
    return f"{low:.2f}-{high:.2f}x"


def test_a_steady_pair_passes():
    before, now = run_pair(2.0, 2.0, noise=0.03)
    judged = summary.judge("net", "t", now, before, max_slowdown=10)
    assert judged.verdict == NO_REGRESSION and judged.slowdown_ci[1] <= 10


def test_a_noisy_pair_is_too_noisy_to_judge_and_says_how_to_narrow_it():
    before, now = run_pair(**NOISY)
    judged = summary.judge("net", "t", now, before, max_slowdown=10,
                           method={"max_time_s": 2.0, "max_rounds": 300})
    low, high = judged.slowdown_ci
    assert judged.verdict == TOO_NOISY and low <= 10 < high
    assert "too noisy to judge; more rounds narrow it (20 now): raise --latency-time=2" \
        in judged.describe()
    capped = summary.judge("net", "t", now, before, max_slowdown=10,
                           method={"max_time_s": 2.0, "max_rounds": 20})
    assert "--latency-max-rounds=20" in capped.describe()


def test_the_point_estimate_alone_would_fail_the_noisy_pair():
    """What the intervals change: the same noisy pair, judged on its point estimate
    (a baseline without samples), fails on the flat threshold, and says it was judged so."""
    before, now = run_pair(**NOISY)
    old_format = {"speedup": before["speedup"]}
    judged = summary.judge("net", "t", now, old_format, max_slowdown=10)
    assert judged.slowdown_ci is None and judged.verdict == REGRESSION
    assert ("judged on the point estimates: the baseline's record keeps no samples (an "
            "older format)") in judged.describe()


def records_file(path, cells: dict, budget=None) -> str:
    """A records file of one measured cell per (case, target): metrics."""
    lines = [json.dumps({"case": case, "target": target, "path": target.split("-")[0],
                         "check": "latency", "outcome": "passed", "nodeid": f"x.py::{case}",
                         "budget": budget or {"threads": 1, "flush_denormal": False},
                         "metrics": metrics})
             for (case, target), metrics in cells.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_command_line_gate_fails_a_regression_and_lists_a_noisy_cell(tmp_path, capsys):
    slow_before, slow_now = run_pair(2.0, 1.6, noise=0.03, seed=8)
    noisy_before, noisy_now = run_pair(**NOISY, seed=9)
    steady_before, steady_now = run_pair(2.0, 2.0, noise=0.03, seed=10)
    old = records_file(tmp_path / "old.jsonl", {("slow", "trace-torch-cpu"): slow_before,
                                                 ("noisy", "trace-torch-cpu"): noisy_before,
                                                 ("steady", "trace-torch-cpu"): steady_before})
    new = records_file(tmp_path / "new.jsonl", {("slow", "trace-torch-cpu"): slow_now,
                                                 ("noisy", "trace-torch-cpu"): noisy_now,
                                                 ("steady", "trace-torch-cpu"): steady_now})
    assert summary.main([new, "--baseline", old]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION case slow, target trace-torch-cpu" in out
    assert f"reproduce: pytest --latency x.py::slow --threads=1 --latency-baseline={old}" in out
    assert "TOO NOISY TO JUDGE (not failed) case noisy, target trace-torch-cpu" in out
    assert "case steady" not in "".join(line for line in out.splitlines()
                                        if line.startswith(("REGRESSION", "TOO NOISY")))
    # Without the real slowdown, the noisy cell alone does not fail the comparison.
    new = records_file(tmp_path / "new.jsonl", {("noisy", "trace-torch-cpu"): noisy_now,
                                                 ("steady", "trace-torch-cpu"): steady_now})
    assert summary.main([new, "--baseline", old]) == 0
    assert "TOO NOISY TO JUDGE" in capsys.readouterr().out


def test_the_runs_summary_lists_the_gates_verdicts_from_its_records():
    noisy_before, noisy_now = run_pair(**NOISY)
    judged = summary.judge("noisy", "t", noisy_now, noisy_before, 10)
    record = {"case": "noisy", "target": "t", "path": "trace", "check": "latency",
              "metrics": {**noisy_now, "median_s": 1e-3, "iqr_over_median": 0.5,
                          "regression_gate": judged.record("old.jsonl")}}
    point = summary.judge("old", "t", noisy_now, {"speedup": 1.0}, 10)
    old_record = {**record, "case": "old",
                  "metrics": {**record["metrics"], "regression_gate": point.record("old.jsonl")}}
    lines = summary.gate_lines([record, old_record])
    assert lines[1] == ("regression gate against old.jsonl, threshold 10%: 0 regression, "
                        "1 too noisy to judge, 1 no regression")
    assert any(line.startswith("TOO NOISY TO JUDGE (not failed) case noisy") for line in lines)
    assert ("judged on the point estimate: case old, target t: the baseline's record keeps "
            "no samples (an older format)") in lines
    assert summary.gate_lines([{**record, "metrics": noisy_now | {"median_s": 1}}]) == []


# ---- the table ----

def fps_record(case: str, target: str, median_s: float, threads: int) -> dict:
    return {"case": case, "target": target, "path": target.split("-")[0], "check": "latency",
            "metrics": {"median_s": median_s, "speedup": 1.0, "n": 20, "iqr_over_median": 0.02},
            "budget": {"threads": threads, "flush_denormal": False}}


def test_quantized_cases_are_listed_beside_their_models_reference():
    records = [fps_record("quantized_resnet18_qnnpack", "script-torch-cpu", 0.05, 2),
               fps_record("quantized_shufflenet_v2_x0_5_qnnpack", "script-torch-cpu", 0.01, 2),
               fps_record("quantized_mobilenet_v2_x86", "script-torch-cpu", 0.025, 2),
               fps_record("quantized_resnet34_qnnpack", "script-torch-cpu", 0.05, 2),  # no figure
               fps_record("resnet18", "script-torch-cpu", 0.05, 2)]
    rows = summary.fps_rows(records)
    assert [row[0] for row in rows] == ["quantized_mobilenet_v2_x86",
                                        "quantized_resnet18_qnnpack",
                                        "quantized_shufflenet_v2_x0_5_qnnpack"]
    assert rows[1] == ("quantized_resnet18_qnnpack", "script-torch-cpu", "qnnpack", "2",
                       "20.0", "9.2")
    assert rows[2][-2:] == ("100.0", "46.7") and rows[0][2:] == ("x86", "2", "40.0", "33.7")
    assert not any(note.startswith("note:") for note in summary.fps_notes(records))


def test_a_budget_other_than_the_references_is_noted():
    records = [fps_record("quantized_resnet50_qnnpack", "trace-torch-cpu", 0.2, 1)]
    notes = summary.fps_notes(records)
    assert notes[-1] == ("note: this run's thread budget is 1, the reference's 2; for a like "
                         "budget: pytest --latency -k \"quantized and qnnpack\" --threads 2")
    assert summary.fps_rows(records)[0][3:] == ("1", "5.0", "4.3")


def test_the_table_shows_each_speedup_with_its_interval():
    record = fps_record("a", "trace-torch-cpu", 0.01, 1)
    record["metrics"].update(speedup=1.68, speedup_ci=[1.641, 1.712])
    eager = fps_record("a", "eager-torch-cpu", 0.01, 1)
    header, eager_row, row = summary.format_table(summary.COLUMNS, summary.table_rows(
        [record, eager]))
    assert "speedup" in header and "95% CI" in header
    assert "1.68x  1.64-1.71" in row
    assert "1.00x          -" in eager_row  # eager's own cell has no interval
