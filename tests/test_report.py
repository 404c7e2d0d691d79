"""The nightly report: built from records alone, its HTML structure, the history and
the changes it gates on, and the merge of shards."""
import html.parser
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conformance.report import changes
from conformance.report import cli as report
from conformance.report import data as report_data
from conformance.report import history


def record(case, target, check, outcome, max_abs=None, message="", expectation=None,
           torch="2.14.1"):
    return {"case": case, "target": target, "path": target.split("-")[0],
            "runtime": target.split("-")[-2], "device": target.split("-")[-1], "check": check,
            "outcome": outcome, "message": message,
            "nodeid": f"conformance/test_conformance.py::test_check[{case}-{target}-{check}]",
            "metrics": {"max_abs": max_abs} if max_abs is not None else {},
            "timings": {"export_export_s": 1.5} if target.startswith("export") else {},
            "expectation": {"reason": expectation} if expectation else None,
            "versions": {"torch": torch, "onnx": "1.23.2", "machine": "Linux x86_64"}}


def night(outcome_of_b_trace="passed"):
    return [record("a", "trace-torch-cpu", "matches_eager", "passed", 0.0),
            record("a", "trace-torch-cpu", "generalizes", "xfailed", 1.9, "diverges",
                   "the trace baked a branch"),
            record("a", "export-torch-cpu", "matches_eager", "passed", 1e-6),
            record("b", "trace-torch-cpu", "matches_eager", outcome_of_b_trace, 2.0,
                   "" if outcome_of_b_trace == "passed" else "case b, target trace: differs"),
            record("b", "trace-torch-cuda", "matches_eager", "skipped", message="no CUDA")]


class Page(html.parser.HTMLParser):
    """The parts of the page a reader relies on."""

    def __init__(self):
        super().__init__()
        self.grid_cells, self.external, self.ids, self.in_grid = {}, [], set(), False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.add(attrs.get("id"))
        if tag == "table" and attrs.get("id") == "grid":
            self.in_grid = True
        if self.in_grid and tag == "td" and "data-key" in attrs:
            self.grid_cells[attrs["data-key"]] = (attrs["data-outcome"], attrs.get("title", ""))
        if attrs.get("src") or (attrs.get("href") or "").startswith("http"):
            self.external.append((tag, attrs))

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_grid = False


def parsed(records, found=None) -> Page:
    page = Page()
    page.feed(report_html_of(records, found))
    return page


def report_html_of(records, found=None):
    from conformance.report import html as report_html
    return report_html.render(report_data.summarize(records), found, "nightly")


def test_the_grid_has_a_cell_per_case_and_target_with_its_worst_outcome_and_reasons():
    page = parsed(night("failed"))
    assert page.grid_cells["a|trace-torch-cpu"][0] == "xfailed"  # passed + xfailed
    assert page.grid_cells["b|trace-torch-cpu"][0] == "failed"
    assert page.grid_cells["b|trace-torch-cuda"][0] == "skipped"
    assert "generalizes: xfailed, max abs 1.9 (diverges)" in page.grid_cells["a|trace-torch-cpu"][1]
    assert set(page.grid_cells) == {"a|trace-torch-cpu", "a|export-torch-cpu",
                                    "b|trace-torch-cpu", "b|trace-torch-cuda"}
    assert {"grid", "detail", "cells", "counts"} <= page.ids
    assert page.external == []  # self-contained: nothing fetched from elsewhere


def test_the_summary_counts_pass_rates_and_costs():
    summary = report_data.summarize(night("failed"))
    assert summary["counts"]["failed"] == 1 and summary["counts"]["xfailed"] == 1
    trace = next(r for r in summary["pass_rates"] if r["target"] == "trace-torch-cpu")
    assert (trace["ran"], trace["passed"], trace["pass_rate"]) == (3, 1, pytest.approx(1 / 3))
    assert summary["costs"] == [{"case": "a", "torch.export": 1.5}]


def test_failures_are_grouped_by_root_cause_with_the_real_error_line():
    export_error = ("case c, target {target}, check {check}: the path could not export the "
                    "model\n  the onnx exporter at opset 17 failed on operator aten::<x>: "
                    "UnsupportedOperatorError\n  reproduce: pytest -k 'c and {target}'")
    records = night("failed") + [
        dict(record("c", target, check, "failed", message=export_error.format(
            target=target, check=check)), failure_kind="export-error")
        for target in ("onnx-op17-onnxruntime-cpu", "onnx-op17-onnxruntime-noopt-cpu")
        for check in ("matches_eager", "generalizes")]
    records[3]["metrics"]["tracer_warnings"] = ["x.py:3: Converting a tensor to a Python bool"]
    groups = report_data.summarize(records)["failure_groups"]
    assert [(g["case"], g["cells"]) for g in groups] == [("c", 4), ("b", 1)]
    assert groups[0]["error"] == ("the onnx exporter at opset 17 failed on operator aten::<x>: "
                                  "UnsupportedOperatorError")
    assert groups[0]["kind"] == "export-error" and groups[0]["checks"] == ["generalizes",
                                                                            "matches_eager"]
    assert groups[0]["reproduce"] == "pytest -k 'c and onnx-op17-onnxruntime-cpu'"
    assert groups[1]["tracer_warnings"] == ["x.py:3: Converting a tensor to a Python bool"]
    page = report_html_of(records)
    first_screen = page.split("<section id='first-screen'>")[1].split("</section>")[0]
    assert "<b>4 cells</b>" in first_screen
    assert "aten::&lt;x&gt;" in first_screen and "aten::<x>" not in first_screen  # escaped
    assert "Converting a tensor to a Python bool" in first_screen
    assert page.index("id='first-screen'") < page.index("id='grid'")


def test_merging_shards_gives_the_unsharded_run_and_refuses_conflicts():
    whole = night()
    first, second = whole[:2], whole[2:]
    assert report_data.merge([second, first, first]) == report_data.merge([whole])
    conflicting = [dict(whole[0], outcome="failed")]
    with pytest.raises(report_data.MergeConflict, match="is passed and failed in two files"):
        report_data.merge([whole, conflicting])
    in_runs = [dict(r, run="one", session="one") for r in whole]
    with pytest.raises(report_data.MergeConflict, match="in two runs; a rerun merges into"):
        report_data.merge([in_runs, [dict(conflicting[0], run="two", session="two")]])


def test_a_rerun_merges_into_its_run_the_later_outcome_winning():
    first = [dict(r, run="r1", session="s1", time="2026-11-29T01:00:00") for r in night("failed")]
    rerun = [dict(first[3], session="s2", outcome="passed", time="2026-11-29T02:00:00")]
    merged = report_data.merge([first, rerun])
    again = next(r for r in merged if r["case"] == "b" and r["target"] == "trace-torch-cpu")
    assert again["outcome"] == "passed" and again["session"] == "s2"
    assert again["earlier"] == [{"outcome": "failed", "session": "s1",
                                 "time": "2026-11-29T01:00:00"}]
    assert report_data.merge([rerun, first]) == merged  # the later wins, whatever the order
    assert report_data.reruns(merged) == [{"case": "b", "target": "trace-torch-cpu",
                                           "check": "matches_eager",
                                           "outcomes": ["failed", "passed"]}]
    assert history.identity(merged) == history.identity(first)
    assert history.identity(first).startswith("run:r1@")
    # one CI run id over two stacks (a tox matrix) is two runs, never a rerun
    other_torch = [dict(r, versions={"torch": "2.9.1"}) for r in rerun]
    with pytest.raises(report_data.MergeConflict, match="in two runs"):
        report_data.merge([first, other_torch])
    assert history.identity(first) != history.identity(
        [dict(r, versions={"torch": "2.9.1"}) for r in first])
    mixed = first + [{k: v for k, v in rerun[0].items() if k != "run"}]
    assert history.identity(mixed).startswith("content:")  # old records among new ones


def test_a_retried_session_that_recorded_every_cell_makes_the_run_complete():
    killed = [dict(r, run="r", session="s1", session_cells=5) for r in night()[:2]]
    retried = [dict(r, run="r", session="s2", session_cells=5) for r in night()]
    assert report_data.incomplete_sessions([killed, retried]) == []
    last_failed = [dict(night()[0], run="r", session="s2", session_cells=1)]
    assert report_data.incomplete_sessions([killed, last_failed]) == [
        "session s1 recorded 2 of its 5 cells: the run ended early"]


def test_without_a_baseline_a_failure_without_a_row_or_an_empty_run_fails_the_gate():
    found = changes.compare(None, night("failed"))
    assert found.gate_failures == ["failing without an expectation row (no baseline): b "
                                   "trace-torch-cpu matches_eager (failed): case b, target "
                                   "trace: differs"]
    assert changes.compare(None, []).gate_failures == ["no records: the run checked nothing"]
    assert changes.compare(night(), night("failed")).need_expectation  # listed, and
    assert len(changes.compare(night(), night("failed")).gate_failures) == 1  # new once


def test_a_run_accepted_by_hand_stays_accepted_when_its_report_is_retried(tmp_path):
    db = history.connect(tmp_path / "history.sqlite")
    run = history.store(db, night("failed"))
    assert history.judge(db, run, ["new failure: b"], accept=True)
    assert history.judge(db, run, ["new failure: b"])  # the retried report step


def test_a_session_that_recorded_fewer_cells_than_it_collected_ended_early():
    whole = [dict(r, run="r", session="s", session_cells=5) for r in night()]
    assert report_data.incomplete_sessions([whole]) == []
    assert report_data.incomplete_sessions([whole[:3], whole[:3]]) == [
        "session s recorded 3 of its 5 cells: the run ended early"]


def test_the_history_compares_a_run_with_the_last_accepted_run_of_the_same_stack(tmp_path):
    db = history.connect(tmp_path / "history.sqlite")
    first = history.store(db, night())
    history.judge(db, first, [])
    other_torch = history.store(db, [dict(r, versions={"torch": "2.9.1"}) for r in night()])
    red = history.store(db, night("failed"))
    assert history.judge(db, red, ["new failure: b"]) is False
    later = history.store(db, [dict(r, time="later") for r in night("failed")])
    assert history.baseline(db, red) == first
    assert history.baseline(db, later) == first  # not the red run before it
    assert history.baseline(db, other_torch) is None
    assert history.records_of(db, first) == night()


def test_the_same_records_are_one_run_however_often_they_are_stored(tmp_path):
    db = history.connect(tmp_path / "history.sqlite")
    records = [dict(r, run="r1", session="s1") for r in night()]
    first = history.store(db, records)
    assert history.store(db, records) == first
    rerun = records[:3] + [dict(records[3], outcome="failed", session="s2")] + records[4:]
    assert history.store(db, rerun) == first  # a rerun merged in: the run, replaced
    assert [r["outcome"] for r in history.records_of(db, first)][3] == "failed"
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)


def test_runs_of_another_selection_of_cells_are_not_compared(tmp_path):
    db = history.connect(tmp_path / "history.sqlite")
    nightly = [dict(r, selection={"markers": "nightly"}) for r in night()]
    history.judge(db, history.store(db, nightly), [])
    ci = history.store(db, [dict(r, selection={"markers": "not slow"}, time="t") for r in night()])
    assert history.baseline(db, ci) is None


def test_runs_with_another_thread_budget_are_not_compared(tmp_path):
    def timed(threads):
        return [dict(r, check="latency", budget={"threads": threads, "flush_denormal": False})
                for r in night()]

    db = history.connect(tmp_path / "history.sqlite")
    one_thread = history.store(db, timed(1))
    history.judge(db, one_thread, [])
    history.judge(db, history.store(db, [dict(r, time="t") for r in timed(4)]), [])
    again = history.store(db, [dict(r, time="t2") for r in timed(1)])
    assert history.baseline(db, again) == one_thread


def test_changes_name_new_failures_fixes_and_rows_to_remove():
    found = changes.compare(night(), night("failed"))
    assert [r["case"] for r in found.new_failures] == ["b"]
    assert [r["case"] for r in found.need_expectation] == ["b"]
    assert found.gate_failures == ["new failure: b trace-torch-cpu matches_eager (failed): "
                                   "case b, target trace: differs"]
    fixed = changes.compare(night("failed"), night())
    assert [r["case"] for r in fixed.fixes] == ["b"] and not fixed.gate_failures
    unexpected = night()
    unexpected[1] = dict(unexpected[1], outcome="xpassed")
    assert changes.compare(night(), unexpected).stale_expectations == [unexpected[1]]


def test_lost_coverage_names_the_cells_gone_and_those_that_now_skip():
    now = [r for r in night() if r["target"] != "export-torch-cpu"]
    now[0] = dict(now[0], outcome="skipped", message="onnxruntime is not installed")
    found = changes.compare(night(), now, ended_early=["session s recorded 3 of its 5 cells: "
                                                       "the run ended early"])
    assert found.lost_coverage == [
        "a trace-torch-cpu matches_eager: now skipped (was passed): onnxruntime is not "
        "installed", "a export-torch-cpu matches_eager: absent (was passed)",
        "session s recorded 3 of its 5 cells: the run ended early"]
    assert all(f"lost coverage: {m}" in found.gate_failures for m in found.lost_coverage)
    assert changes.compare(None, now, ended_early=["x"]).gate_failures == ["lost coverage: x"]


def write(file, records):
    file.write_text("\n".join(json.dumps(r) for r in records))
    return str(file)


def test_reporting_the_same_failing_records_again_fails_again(tmp_path):
    args = ["--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.sqlite")]
    green = write(tmp_path / "green.jsonl", [dict(r, run="n1") for r in night()])
    red = write(tmp_path / "red.jsonl", [dict(r, run="n2") for r in night("failed")])
    assert report.main([green, *args]) == 0
    assert [report.main([red, *args]) for _ in range(3)] == [1, 1, 1]
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["changes"]["previous_run"] == 1 and written["title"].endswith("(run 2)")
    assert written["changes"]["accepted"] is False
    # the next night is compared with the last accepted one, not with the red one
    next_night = write(tmp_path / "next.jsonl", [dict(r, run="n3") for r in night("failed")])
    assert report.main([next_night, *args]) == 1
    assert report.main([next_night, *args, "--accept"]) == 1  # accepted, still reported
    assert report.main([write(tmp_path / "n4.jsonl", [dict(r, run="n4") for r in
                                                       night("failed")]), *args]) == 0


def test_a_records_file_with_cells_missing_fails_the_gate_and_lists_them(tmp_path, capsys):
    args = ["--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.sqlite")]
    assert report.main([write(tmp_path / "a.jsonl", [dict(r, run="a") for r in night()]),
                        *args]) == 0
    shorter = [dict(r, run="b", session="b", session_cells=5) for r in night()[:3]]
    assert report.main([write(tmp_path / "b.jsonl", shorter), *args]) == 1
    printed = capsys.readouterr().out
    assert "lost coverage: b trace-torch-cpu matches_eager: absent (was passed)" in printed
    assert "lost coverage: session b recorded 3 of its 5 cells: the run ended early" in printed


def test_one_command_writes_the_page_the_summary_and_the_history_and_gates(tmp_path):
    (tmp_path / "one.jsonl").write_text("\n".join(json.dumps(r) for r in night()))
    (tmp_path / "two.jsonl").write_text("\n".join(json.dumps(r) for r in night("failed")))
    args = ["--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.sqlite")]
    assert report.main([str(tmp_path / "one.jsonl"), *args]) == 0
    assert report.main([str(tmp_path / "two.jsonl"), *args]) == 1
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["changes"]["previous_run"] == 1
    assert len(written["changes"]["new_failures"]) == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "**Gate failed** (baseline: run 1; 1 finding)" in summary
    assert "- **1 cell**, case `b`, path `trace`, failed: case b, target trace: differs" in summary
    assert "| trace-torch-cpu | 3 | 1 | 1 | 1 |" in summary
    page = Page()
    page.feed((tmp_path / "out" / "report.html").read_text())
    assert page.grid_cells["b|trace-torch-cpu"][0] == "failed"


def timed(case, target, speedup, torch="2.14.1"):
    return dict(record(case, target, "latency", "passed", torch=torch),
                metrics={"median_s": 0.001, "speedup": speedup, "n": 3})


def test_the_cross_version_report_lists_the_cells_that_change_outcome_first(tmp_path, capsys):
    older = [dict(r, versions={"torch": "2.9.1"},
                  builds={"torch": "2.9.1+cu128", "torchvision": "0.24.1+cu128"})
             for r in night("failed")[1:]] + [timed("a", "trace-torch-cpu", 1.0)]
    newer = [dict(r, builds={"torch": "2.14.1+cu130", "torchvision": "0.29.1+cu130"})
             for r in night()] + [timed("a", "trace-torch-cpu", 2.0)]
    files = [write(tmp_path / "torch2.14.jsonl", newer), write(tmp_path / "torch2.9.jsonl", older)]
    assert report.main([*files, "--by-env", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "versions.json").read_text())
    assert [e["name"] for e in found["environments"]] == ["torch2.9", "torch2.14"]  # oldest first
    assert found["environments"][0]["stack"]["torchvision"] == "0.24.1+cu128"
    # passed on one, failed on the other first; then a cell only one environment ran
    assert [(c["case"], c["check"], c["outcomes"]) for c in found["changed"]] == [
        ("b", "matches_eager", {"torch2.9": "failed", "torch2.14": "passed"}),
        ("a", "matches_eager", {"torch2.9": "absent", "torch2.14": "passed"})]
    assert found["changed"][0]["messages"] == {"torch2.9": "case b, target trace: differs"}
    assert [(c["case"], c["move"]) for c in found["latency_changed"]] == [("a", 2.0)]
    assert found["same_stack"] == []
    printed = capsys.readouterr().out
    assert "## Cells whose outcome differs: 2" in printed
    assert ("- `b` · `trace-torch-cpu` · matches_eager: torch2.9 failed, torch2.14 passed"
            in printed)
    page = (tmp_path / "versions.html").read_text()
    assert "Cells whose outcome differs (2)" in page and "torchvision 0.24.1+cu128" in page


def test_environments_that_ran_one_stack_are_flagged_and_keep_a_column_each(tmp_path):
    files = [write(tmp_path / f"{name}.jsonl", records) for name, records in
             (("torch2.14", night()), ("torch-newest", night("failed")))]
    assert report.main([*files, "--by-env", "--out", str(tmp_path)]) == 0
    found = json.loads((tmp_path / "versions.json").read_text())
    assert found["same_stack"] == [["torch2.14", "torch-newest"]]
    row = next(r for r in found["rows"] if (r["case"], r["target"]) == ("b", "trace-torch-cpu"))
    assert row["outcomes"] == {"torch2.14": "passed", "torch-newest": "failed"}
    assert "**torch2.14 and torch-newest ran the same stack**" in (
        tmp_path / "versions.md").read_text()


def test_make_versions_without_tox_records_says_to_run_tox_first(tmp_path):
    shutil.copy(Path(__file__).resolve().parent.parent / "Makefile", tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").write_text("")  # newer than pyproject.toml
    done = subprocess.run(["make", "-s", "versions"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "no records in results/tox/; run tox first" in done.stderr


def test_a_sparkline_draws_the_history_with_gaps_on_a_fixed_scale():
    import re

    from conformance.report.plots import box_pair, sparkline

    drawn = sparkline([0.5, None, 1.0, 0.0], width=66, height=26, low=0.0, high=1.0)
    lines = re.findall(r"points='([^']*)'", drawn)
    assert lines == ["3.0,13.0", "43.0,3.0 63.0,23.0"]  # the absent run leaves a gap
    assert "cx='63.0' cy='23.0'" in drawn  # the last run marked
    assert sparkline([None, None]) == ""
    box = box_pair([0.001, 0.002, 0.003], [0.004, 0.005, 0.010], width=104)
    # one logarithmic axis: the target's median left of eager's, the slowest at the right end
    medians = [float(x) for x in re.findall(r"<line x1='([\d.]+)' x2='\1' y1", box)]
    assert medians[0] < medians[1] and "x2='102.0'" in box


def test_the_page_draws_each_targets_pass_rate_over_the_history_and_latency_samples(tmp_path):
    args = ["--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.sqlite")]
    timed = dict(record("b", "trace-torch-cpu", "latency", "passed"),
                 metrics={"median_s": 0.002, "p90_s": 0.003, "iqr_over_median": 0.1,
                          "speedup": 2.0, "n": 3, "samples_s": [0.002, 0.002, 0.003],
                          "eager_samples_s": [0.004, 0.004, 0.005]})
    for run, outcome in (("n1", "passed"), ("n2", "failed"), ("n3", "passed")):
        report.main([write(tmp_path / f"{run}.jsonl",
                           [dict(r, run=run) for r in night(outcome) + [timed]]), *args])
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    rates = [point["pass_rates"]["trace-torch-cpu"] for point in written["changes"]["trend"]]
    assert rates == [pytest.approx(2 / 3), pytest.approx(1 / 3), pytest.approx(2 / 3)]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "aria-label='trace-torch-cpu: pass rate over the last 3 runs'" in page
    assert "<svg class='box'" in page and "median 2.000 ms, eager 4.000 ms" in page


def test_a_cell_this_run_did_not_select_is_told_from_a_target_the_case_does_not_have():
    records = [dict(r, tags=[]) for r in night()] + [
        dict(record("b", "trace-serve-cpu", "matches_eager", "passed"), tags=["http"])]
    for r in records:
        if r["case"] == "b":
            r["tags"] = ["http"]
    page = parsed(records)
    grid = report_data.summarize(records)["grid"]
    # a has no serve target (no `http` tag); b has an export target this run did not run
    assert "a|trace-serve-cpu" not in grid["unselected"]
    assert "b|export-torch-cpu" in grid["unselected"]
    html_text = report_html_of(records)
    assert "b on export-torch-cpu: not run in this selection" in html_text
    assert "a on trace-serve-cpu: the case has no such target" in html_text
    assert page.grid_cells["b|trace-serve-cpu"][0] == "passed"


def test_where_the_time_goes_sums_each_cases_and_paths_cells_with_their_share():
    from conformance.cost import cost_by, cost_lines

    records = [dict(r, duration_s=seconds) for r, seconds in zip(night(), (1, 2, 3, 4, 0))]
    cases = cost_by(records, "case")
    assert [(c["case"], c["seconds"], c["cells"]) for c in cases] == [("a", 6, 3), ("b", 4, 2)]
    assert sum(c["share"] for c in cases) == pytest.approx(1.0)
    assert cost_lines(records)[1] == "slowest cases: a 6 s (60%), b 4 s (40%)"
    assert cost_lines(records)[2] == "slowest paths: trace 7 s (70%), export 3 s (30%)"
    page = report_html_of(records)
    assert "id='cost'" in page and "<td class='name'>trace</td><td>7.0</td>" in page


def test_mismatches_of_a_path_are_one_cause_named_by_the_module_where_they_diverge():
    diverged = {"module": "layer2.1.relu", "kind": "TracedDiffers", "max_abs": 1.1,
                "onnx_node": "/layer2/layer2.1/relu/LeakyRelu", "onnx_op": "LeakyRelu"}
    records = [dict(record("r", target, check, "failed", message=f"case r, target {target}, "
                           f"check {check}: {headline}"), failure_kind="mismatch",
                    metrics={"max_abs": 1.1, "diverges_at": diverged})
               for target in ("onnx-op17-onnxruntime-cpu", "onnx-op17-onnxruntime-noopt-cpu")
               for check, headline in (("matches_eager", "the outputs differ on the example"),
                                       ("generalizes", "it diverges on the probe input"))]
    (group,) = report_data.summarize(records)["failure_groups"]
    assert group["cells"] == 4 and group["error"] == (
        "the artifact's outputs differ from eager, first at module layer2.1.relu (TracedDiffers)")
    assert ("module layer2.1.relu (TracedDiffers), max abs error 1.1; ONNX node "
            "/layer2/layer2.1/relu/LeakyRelu (LeakyRelu)") in report_html_of(records)


def test_a_rerun_after_a_kill_appends_to_the_run_even_past_a_half_written_line(tmp_path):
    from conformance.records import RecordWriter

    file = tmp_path / "records.jsonl"
    first = RecordWriter(file)
    first.write({"nodeid": "a", "outcome": "passed"})
    with file.open("a") as handle:
        handle.write('{"nodeid": "b", "outc')  # the run was killed mid-line
    rerun = RecordWriter(file, rerun=True)
    rerun.write({"nodeid": "b", "outcome": "passed"})
    lines = file.read_text().splitlines()
    assert rerun.rerun_of == first.run and len(lines) == 3
    assert json.loads(lines[-1])["run"] == first.run
    from conformance.records import read_records

    assert [r["nodeid"] for r in read_records(file)] == ["a", "b"]  # the broken line skipped


def test_the_summary_without_a_baseline_lists_the_failures_and_escapes_their_text(tmp_path):
    records = night("failed")
    records[3]["message"] = "case b, target trace, check c: raised at <module> line 3"
    args = ["--out", str(tmp_path / "out"), "--history", str(tmp_path / "h.sqlite")]
    assert report.main([write(tmp_path / "a.jsonl", records), *args]) == 1
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "## Failures, grouped by cause" in summary and "&lt;module>" in summary
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Gate failed: 1 failure without an expectation row" in page
    cells = page.split("id='cells'>")[1].split("</script>")[0]
    assert "<" not in cells and "\\u003cmodule>" in cells


def test_a_box_plot_of_samples_at_the_clocks_resolution_is_drawn():
    from conformance.report.plots import box_pair

    assert "<svg class='box'" in box_pair([0.0, 0.0, 1e-6], [1e-6, 2e-6, 3e-6])
