"""The between-run spread of speedups (conformance/latency/run_to_run.py): its classes,
how it widens an interval and the gate's, its calibration from repeated runs, and the
command that says whether two runs agree."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conformance.latency import agreement, measure, run_to_run, summary
from conformance.latency.summary import NO_REGRESSION, REGRESSION, TOO_NOISY
from tests.test_latency_stats import exactly, metrics_of, paired_rounds, records_file

Z95 = 1.959963984540054


def test_cells_are_classed_by_their_clock_and_the_harness_by_the_length_of_a_call():
    assert run_to_run.cell_class("compile-tuned-inductor-cpu", 1e-6) == "in-process"
    assert run_to_run.cell_class("onnx-op17-onnxruntime-tuned-cpu", 0.02) == "in-process"
    assert run_to_run.cell_class("trace-tuned-libtorch-cpu", 0.02) == "harness"
    assert run_to_run.cell_class("aoti-libtorch-cpu", 99e-6) == "harness-microseconds"
    assert run_to_run.cell_class("aoti-libtorch-cpu", 100e-6) == "harness"


def test_no_spread_leaves_the_interval_and_a_spread_adds_in_quadrature_on_the_log_scale():
    assert run_to_run.widen(2.0, (1.9, 2.2), 0.0) == pytest.approx((1.9, 2.2))
    low, high = run_to_run.widen(2.0, (2.0, 2.0), 0.1)
    assert (low, high) == pytest.approx((2.0 * math.exp(-Z95 * 0.1), 2.0 * math.exp(Z95 * 0.1)))
    low, high = run_to_run.widen(2.0, (1.9, 2.2), 0.02)
    assert math.log(2.0 / low) == pytest.approx(math.hypot(math.log(2.0 / 1.9), Z95 * 0.02))
    assert math.log(high / 2.0) == pytest.approx(math.hypot(math.log(2.2 / 2.0), Z95 * 0.02))
    assert run_to_run.widen(2.0, None, 0.1) is None


def log_ratios(rng, count: int, sigma: float, within_sd: float) -> list[tuple[float, float]]:
    """(z, w) of `count` cells measured in two runs: each run's log speedup misses by a
    draw of the between-run spread and one of its own rounds' noise."""
    w = 2 * within_sd ** 2
    z = rng.normal(0, math.sqrt(w + 2 * sigma ** 2), count)
    return [(float(value), w) for value in z]


def test_the_between_run_variance_is_recovered_from_the_disagreements():
    rng = np.random.default_rng(3)
    estimate = math.sqrt(run_to_run.between_variance(log_ratios(rng, 4000, 0.03, 0.01)))
    assert estimate == pytest.approx(0.03, rel=0.1)


def test_disagreements_the_one_run_intervals_explain_give_no_spread():
    rng = np.random.default_rng(4)
    assert run_to_run.between_variance(log_ratios(rng, 4000, 0.0, 0.05)) < 0.01 ** 2
    assert run_to_run.between_variance([(0.0, 1e-4), (0.001, 1e-4)]) == 0.0


def test_the_spread_makes_nineteen_cells_in_twenty_agree_however_far_the_others_moved():
    steady = [(0.002, 1e-6)] * 90
    moved = [(0.10, 1e-6)] * 10  # a tenth of the cells 10% apart: the spread must cover them
    sigma = math.sqrt(run_to_run.between_variance(steady + moved))
    assert sigma == pytest.approx(math.sqrt((0.10 ** 2 / Z95 ** 2 - 1e-6) / 2), rel=0.01)
    few = [(0.50, 1e-6)] * 3  # three in a hundred, however far: the one in twenty allowed
    assert math.sqrt(run_to_run.between_variance(steady + few)) < 0.002


def test_a_cell_whose_one_run_interval_covers_its_move_needs_no_spread():
    assert run_to_run.between_variance([(0.05, (0.05 / Z95) ** 2)] * 20) == pytest.approx(
        0.0, abs=1e-12)


def record(case: str, target: str, metrics: dict, budget=None) -> dict:
    return {"case": case, "target": target, "path": target.split("-")[0], "check": "latency",
            "outcome": "passed", "budget": budget or {"threads": 1, "flush_denormal": False},
            "versions": {"torch": "x"}, "metrics": metrics}


def measured(rng, ratio: float, count: int = 60, noise: float = 0.02) -> dict:
    return metrics_of(*exactly(ratio, *paired_rounds(rng, count, ratio, noise)))


def test_calibration_measures_each_class_from_runs_of_one_build(tmp_path, capsys):
    rng = np.random.default_rng(5)
    moved = {"trace-torch-cpu": 0.04, "trace-libtorch-cpu": 0.0}
    runs = [[record(f"net{i}", target, measured(rng, 1.5 * math.exp(rng.normal(0, sd))))
             for i in range(30) for target, sd in moved.items()] for _ in range(2)]
    found = run_to_run.calibrate(runs)
    assert found["cells"] == {"in-process": 30, "harness": 30}
    assert found["sigma"]["in-process"] == pytest.approx(0.04, rel=0.35)
    assert found["sigma"]["harness"] < 0.01
    files = []
    for i, run in enumerate(runs):
        files.append(tmp_path / f"run{i}.jsonl")
        files[-1].write_text("".join(json.dumps(r) + "\n" for r in run))
    out = tmp_path / "spreads.json"
    assert run_to_run.main([str(f) for f in files] + ["--out", str(out)]) == 0
    spreads = run_to_run.load(out)
    assert spreads.sigma == found["sigma"] and spreads.source == str(out)
    assert spreads.measured["cells"] == found["cells"]
    assert spreads.measured["versions"] == {"torch": "x"}
    capsys.readouterr()


def test_the_packaged_spreads_name_every_class_and_how_they_were_measured():
    spreads = run_to_run.load()
    assert set(spreads.sigma) == set(run_to_run.CLASSES)
    assert spreads.source == "packaged"
    assert spreads.measured["runs"] and spreads.measured["versions"]["torch"]
    # the harness's calls of microseconds move far more between runs than the others
    assert spreads.sigma["harness-microseconds"] > 5 * spreads.sigma["harness"]


def test_a_spreads_file_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no-such.json"):
        run_to_run.load(tmp_path / "no-such.json")
    (tmp_path / "bad.json").write_text(json.dumps({"sigma": {"gpu": 0.1}}))
    with pytest.raises(ValueError, match="expected a 'sigma' table of the classes"):
        run_to_run.load(tmp_path / "bad.json")


def test_a_cells_record_keeps_both_intervals_and_the_spread_it_used():
    metrics = measured(np.random.default_rng(6), 1.5)
    spreads = run_to_run.Spreads({"in-process": 0.02}, "test", {})
    added = measure.between_runs(metrics, "trace-torch-cpu", spreads)
    assert added["speedup_ci_one_run"] == metrics["speedup_ci"]
    assert added["speedup_ci"] == pytest.approx(
        run_to_run.widen(metrics["speedup"], metrics["speedup_ci"], 0.02))
    assert added["run_to_run"] == {"class": "in-process", "sigma": 0.02, "source": "test"}
    assert measure.between_runs(metrics, "trace-torch-cpu", None) == {}


def with_spread(metrics: dict, sigma: float) -> dict:
    spreads = run_to_run.Spreads({"in-process": sigma}, "test", {})
    return {**metrics, **measure.between_runs(metrics, "trace-torch-cpu", spreads)}


def pair(ratio_before: float, ratio_now: float, seed: int) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    return measured(rng, ratio_before, 300, 0.01), measured(rng, ratio_now, 300, 0.01)


def test_the_gate_counts_the_between_run_spread_before_calling_a_regression():
    before, now = pair(2.0, 2.0 / 1.13, seed=7)  # 13% slower, one-run intervals ~1% wide
    assert summary.judge("net", "t", now, before, 10).verdict == REGRESSION
    judged = summary.judge("net", "t", with_spread(now, 0.03), with_spread(before, 0.03), 10)
    assert judged.verdict == TOO_NOISY
    assert judged.between_sd == pytest.approx(math.hypot(0.03, 0.03))
    assert "the interval includes the spread between runs" in judged.describe()
    # a slowdown far beyond the spread still fails
    before, now = pair(2.0, 1.4, seed=8)
    judged = summary.judge("net", "t", with_spread(now, 0.03), with_spread(before, 0.03), 10)
    assert judged.verdict == REGRESSION


def test_a_baseline_from_before_the_spreads_counts_as_having_this_runs():
    before, now = pair(2.0, 2.0, seed=9)
    assert summary.between_runs_sd(with_spread(now, 0.02), before) == pytest.approx(
        math.hypot(0.02, 0.02))
    assert summary.between_runs_sd(now, before) == 0.0
    judged = summary.judge("net", "t", with_spread(now, 0.02), before, 10)
    assert judged.verdict == NO_REGRESSION


def two_runs(tmp_path, shift: float, sigma: float = 0.0) -> tuple[str, str]:
    rng = np.random.default_rng(10)
    cells = {("net", "trace-tuned-torch-cpu"): 1.5, ("net", "trace-torch-cpu"): 1.2,
             ("other", "onnx-op17-onnxruntime-tuned-cpu"): 1.8}
    first = {cell: with_spread(measured(rng, ratio, 300, 0.01), sigma)
             for cell, ratio in cells.items()}
    second = {cell: with_spread(measured(rng, ratio * (shift if cell[0] == "other" else 1),
                                         300, 0.01), sigma)
              for cell, ratio in cells.items()}
    return (records_file(tmp_path / "one.jsonl", first),
            records_file(tmp_path / "two.jsonl", second))


def test_two_runs_of_one_build_agree(tmp_path, capsys):
    one, two = two_runs(tmp_path, shift=1.0)
    assert agreement.main([one, two]) == 0
    out = capsys.readouterr().out
    assert "3 cells: 3 agree, 0 differ, 0 without an interval; the two intervals overlap in 3" \
        in out


def test_a_speedup_that_moved_beyond_its_intervals_differs_and_fails(tmp_path, capsys):
    one, two = two_runs(tmp_path, shift=0.9)
    assert agreement.main([one, two, "--targets", "tuned"]) == 1
    lines = capsys.readouterr().out.splitlines()
    moved = next(line for line in lines if line.startswith("other"))
    assert moved.split()[-1] == "differ" and " NO " in moved
    assert lines[-1].startswith("2 cells: 1 agree, 1 differ")
    change = next(a for a in agreement.agreements(*map(_read, (one, two)), "tuned")
                  if a.case == "other").change_ci
    assert change[0] <= -10.0 * 0.9 and change[1] < 0  # about -10%, and surely below 0


def test_the_between_run_spread_can_make_the_same_move_agree(tmp_path, capsys):
    """The broken input of the test above, with intervals that carry a spread of 5%:
    a 10% move between runs is within it."""
    one, two = two_runs(tmp_path, shift=0.9, sigma=0.05)
    assert agreement.main([one, two]) == 0
    capsys.readouterr()


def test_runs_with_nothing_in_common_or_other_budgets_are_not_compared(tmp_path, capsys):
    one, two = two_runs(tmp_path, shift=1.0)
    assert agreement.main([one, two, "--targets", "no-such-target"]) == 2
    other = records_file(tmp_path / "other.jsonl",
                         {("net", "t-cpu"): measured(np.random.default_rng(1), 1.0)},
                         budget={"threads": 2, "flush_denormal": False})
    assert agreement.main([one, other]) == 2
    assert "cannot compare: the baseline ran with thread budget" in capsys.readouterr().out


def _read(path: str) -> list[dict]:
    from conformance.records import read_records

    return read_records(path)


def test_the_table_says_which_spreads_widened_its_intervals():
    rng = np.random.default_rng(11)
    records = [record("net", "trace-torch-cpu", with_spread(measured(rng, 1.5), 0.012)),
               record("net", "trace-libtorch-cpu", measured(rng, 1.2))]
    lines = summary.summary_lines(records)
    assert ("; 95% CI: paired bootstrap over the rounds, widened by the spread between runs "
            "(in-process 1.2%; from test)") in "\n".join(lines)
    assert "widened" not in "\n".join(summary.summary_lines(records[1:]))


def test_a_cell_too_noisy_for_the_spread_between_runs_is_not_told_to_take_more_rounds():
    before, now = pair(2.0, 2.0 / 1.10, seed=12)
    judged = summary.judge("net", "t", with_spread(now, 0.05), with_spread(before, 0.05), 10)
    assert judged.verdict == TOO_NOISY
    assert "the spread between runs makes most of it" in judged.hint
    assert "more rounds narrow it" not in judged.describe()


def test_two_runs_can_be_judged_under_another_calibration(tmp_path, capsys):
    """The runs of the test above (a 10% move, no spread in their records) judged with a
    spreads file of 5%: the move is within it; with 0.1% it still differs."""
    one, two = two_runs(tmp_path, shift=0.9)
    wide, narrow = tmp_path / "wide.json", tmp_path / "narrow.json"
    for file, sigma in ((wide, 0.05), (narrow, 0.001)):
        file.write_text(json.dumps({"sigma": {name: sigma for name in run_to_run.CLASSES}}))
    assert agreement.main([one, two, "--run-to-run", str(wide)]) == 0
    assert agreement.main([one, two, "--run-to-run", str(narrow)]) == 1
    capsys.readouterr()
