"""Per-operator profiles of latency targets: a model in Python (torch.profiler), in ONNX
Runtime (its own profiler, in a twin session) and in the libtorch harness (Kineto), each
with a chrome trace whose operator events its top table names; a profile without
operator events is an error, not an empty table; and the report shows the top operators."""
import contextlib
import json

import pytest
import torch

from conformance.checks.subject import CaseState, Subject
from conformance.latency import profile
from conformance.latency.profile import Profiled, ProfileError, Row
from conformance.layout import harness_build_dir
from conformance.report import cli as report
from conformance.runtimes import libtorch as harness
from conformance.runtimes import thread_budget
from conformance.targets import Target
from tests import broken_models

RUNS = 7


def subject_of(tmp_path, target: Target, process=None) -> Subject:
    state = CaseState(broken_models.linear_case(), "cpu", tmp_path / "artifacts",
                      harness=(lambda: process) if process else None)
    return Subject(state, target, reproduce="pytest <nodeid>")


def names_in(found: dict) -> list[str]:
    return [row["name"] for row in found["top"]]


def complete_events(trace_file) -> list[dict]:
    """The complete ("X") events of a trace file, opened as any JSON."""
    loaded = json.loads(trace_file.read_text())
    events = loaded["traceEvents"] if isinstance(loaded, dict) else loaded
    return [e for e in events if e.get("ph") == "X"]


def assert_a_sound_profile(found: dict, directory, tool: str) -> list[dict]:
    assert found["tool"] == tool and found["calls"] == RUNS
    assert 0 < len(found["top"]) <= profile.TOP
    shares = [row["share"] for row in found["top"]]
    assert shares == sorted(shares, reverse=True)
    assert 0.8 < sum(shares) <= 1 + len(shares) * 5e-5  # each rounded to 4 decimals
    assert found["profiled_ms_per_call"] > 0
    return complete_events(directory / found["trace"])


# --- torch.profiler ----------------------------------------------------------------------

@pytest.mark.parametrize("path", ["eager", "script", "export"])
def test_a_python_target_gives_a_trace_and_a_table_of_its_aten_operators(tmp_path, path):
    found = profile.profile_target(subject_of(tmp_path, Target(path, "torch")), RUNS,
                                   tmp_path / "profiles", f"linear-{path}-torch-cpu")
    events = assert_a_sound_profile(found, tmp_path / "profiles", "torch.profiler")
    assert found["trace"] == f"linear-{path}-torch-cpu.trace.json"
    addmm = [e for e in events if e["name"] == "aten::addmm"]
    assert len(addmm) == RUNS  # one per profiled call: warm-up calls are not in the trace
    assert sum(e["name"] == profile.CALL_EVENT for e in events) == RUNS
    assert "aten::addmm" in names_in(found) and "aten::tanh" in names_in(found)
    row = found["top"][names_in(found).index("aten::addmm")]
    assert row["count"] == 1 and row["self_ms_per_call"] > 0


def test_a_python_callable_that_runs_no_operator_is_reported_not_tabled(tmp_path):
    profiled = profile.profile_python(lambda x: None, (torch.ones(2),), (),
                                      contextlib.nullcontext, "cpu", RUNS, 1,
                                      tmp_path / "t.json")
    assert [row.name for row in profiled.rows] == [profile.CALL_EVENT]
    with pytest.raises(ProfileError, match="torch.profiler recorded no operator events"):
        profile.describe(profiled, "t.json", RUNS)


# --- ONNX Runtime ------------------------------------------------------------------------

@pytest.mark.parametrize("runtime, op", [("onnxruntime-noopt", "Gemm"),
                                         ("onnxruntime", "FusedGemm")])
def test_onnxruntime_profiles_a_twin_session_and_names_its_nodes(tmp_path, runtime, op):
    pytest.importorskip("onnxruntime")
    subject = subject_of(tmp_path, Target("onnx", runtime, "cpu", 17))
    found = profile.profile_target(subject, RUNS, tmp_path / "profiles", "linear-ort")
    events = assert_a_sound_profile(found, tmp_path / "profiles", "onnxruntime")
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    assert {e["args"]["op_name"] for e in nodes} >= {op}
    runs = [e for e in events if e["name"] == profile.ONNXRUNTIME_CALL_EVENT]
    assert len(runs) == RUNS + profile.WARMUP  # the trace has the warm-up; the table not
    assert op in names_in(found)
    assert found["top"][names_in(found).index(op)]["count"] == 1
    assert subject.loaded(torch.ones(2, 4))[0].shape == (2, 3)  # the timed session still runs


def test_the_profiling_twin_has_the_timed_sessions_model_and_options(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from conformance.runtimes import onnx as onnx_runtime

    subject = subject_of(tmp_path, Target("onnx", "onnxruntime-noopt", "cpu", 17))
    file = subject.artifact.file
    thread_budget.install(thread_budget.Budget(threads=1))
    try:
        loaded = onnx_runtime.load_onnxruntime_noopt(file, "cpu")
    finally:
        thread_budget.install(None)
    options = loaded.recipe.options()  # made after the budget was uninstalled
    assert loaded.recipe.file == file and options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    twin, end = loaded.profiling_twin(tmp_path / "twin")
    assert twin.recipe == loaded.recipe and twin(torch.ones(2, 4))[0].shape == (2, 3)
    written = end()  # where the prefix says, not ONNX Runtime's default in the cwd
    assert written.parent == tmp_path and written.name.startswith("twin_")


def test_an_onnxruntime_trace_without_node_events_is_an_error():
    runs = [{"cat": "Session", "name": "model_run", "ph": "X", "ts": 10 * i, "dur": 5}
            for i in range(RUNS)]
    rows = profile.rows_of_onnxruntime_trace(runs, RUNS)
    with pytest.raises(ProfileError, match="onnxruntime recorded no operator events"):
        profile.describe(Profiled("onnxruntime", rows), "t.json", RUNS)
    with pytest.raises(ProfileError, match=f"has {RUNS} model_run events, not the {RUNS + 1}"):
        profile.rows_of_onnxruntime_trace(runs, RUNS + 1)


def test_the_reference_evaluator_has_no_profiler_and_the_record_says_why(tmp_path):
    pytest.importorskip("onnx")
    subject = subject_of(tmp_path, Target("onnx", "onnx-reference", "cpu", 17))
    found = profile.profile_record(subject, RUNS, tmp_path / "profiles", "ref")
    assert "has no profiler" in found["error"]


# --- the libtorch harness ----------------------------------------------------------------

@pytest.fixture
def process(request):
    """The harness, skipped without cmake or a compiler as test_harness's tests are,
    unless the run says --require=libtorch."""
    problem = harness.toolchain_problem()
    if problem and "libtorch" in request.config.option.require:
        pytest.fail(f"--require libtorch: {problem}")
    if problem:
        pytest.skip(problem)
    started = harness.Harness(harness_build_dir(), timeout_s=300)
    yield started
    started.close()


def test_the_harness_profiles_torchscript_with_kineto(tmp_path, process):
    subject = subject_of(tmp_path, Target("script", "libtorch"), process)
    found = profile.profile_target(subject, RUNS, tmp_path / "profiles", "linear-libtorch")
    events = assert_a_sound_profile(found, tmp_path / "profiles", profile.KINETO_TOOL)
    operators = [e for e in events if e.get("cat") == "cpu_op"]
    assert sum(e["name"] == "aten::addmm" for e in operators) == RUNS
    assert sum(e["name"] == profile.CALL_EVENT for e in events) == RUNS
    assert "aten::addmm" in names_in(found)
    # The harness serves on afterwards: the profiler was switched off.
    assert subject.loaded(torch.ones(2, 4)).shape == (2, 3)
    again = profile.profile_target(subject, RUNS, tmp_path / "profiles", "again")
    assert again["tool"] == profile.KINETO_TOOL


# --- traces and the record ---------------------------------------------------------------

def event(name, ts, dur, tid=1, cat="cpu_op"):
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 1, "tid": tid}


def test_self_time_is_an_events_time_less_its_childrens_on_its_own_thread():
    events = [event("model call", 0, 100, cat="user_annotation"), event("aten::linear", 10, 50),
              event("aten::addmm", 20, 30), event("aten::tanh", 70, 20),
              event("aten::addmm", 20, 40, tid=2),  # another thread: not a child
              event("PyTorch Profiler (0)", 0, 1000, cat="Trace"),
              {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1}]
    rows, device = profile.rows_of_chrome_trace(events)
    assert {r.name: (r.self_us, r.count) for r in rows} == {
        "model call": (30, 1), "aten::linear": (20, 1), "aten::addmm": (70, 2),
        "aten::tanh": (20, 1)}
    assert device is None


def test_the_harness_clock_fallback_is_a_profile_of_calls_only_and_says_so():
    rows, _ = profile.rows_of_chrome_trace([event(profile.CALL_EVENT, 10 * i, 8,
                                                  cat="user_annotation") for i in range(RUNS)])
    found = profile.describe(Profiled(profile.CLOCK_TOOL, rows, has_operators=False),
                             "t.json", RUNS)
    assert found["tool"] == "harness clock"
    assert found["top"] == [{"name": "model call", "self_ms_per_call": 0.008, "share": 1.0,
                             "count": 1.0}]
    with pytest.raises(ProfileError, match="libtorch kineto recorded no operator events"):
        profile.describe(Profiled(profile.KINETO_TOOL, rows), "t.json", RUNS)


def test_a_file_that_is_no_trace_is_an_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"no": "events"}')
    with pytest.raises(ProfileError, match="no chrome trace"):
        profile.read_trace(tmp_path / "bad.json")
    with pytest.raises(ProfileError, match="cannot read the trace"):
        profile.read_trace(tmp_path / "missing.json")


SOUND = {"tool": "libtorch kineto", "trace": "linear-script-libtorch-cpu.trace.json",
         "calls": 20, "profiled_ms_per_call": 0.01,
         "top": [{"name": "aten::addmm", "self_ms_per_call": 0.004, "share": 0.4, "count": 1},
                 {"name": "model call", "self_ms_per_call": 0.003, "share": 0.3, "count": 1},
                 {"name": "aten::tanh", "self_ms_per_call": 0.003, "share": 0.3, "count": 1}]}


def latency_record(target: str, found: dict | None) -> dict:
    metrics = {"median_s": 1e-3, "p90_s": 1.1e-3, "p99_s": None, "iqr_over_median": 0.02,
               "speedup": 1.5, "first_call_s": 2e-3, "load_s": 0.1, "n": 20}
    return {"case": "linear", "target": target, "path": target.split("-")[0],
            "runtime": target.split("-")[-2], "device": "cpu", "check": "latency",
            "outcome": "passed", "message": "", "timings": {}, "expectation": None,
            "nodeid": f"conformance/latency/test_latency.py::test_latency[linear-{target}-latency]",
            "metrics": dict(metrics, **({"profile": found} if found else {})),
            "versions": {"torch": "2.14.1"}, "budget": {"threads": 1, "flush_denormal": False}}


def test_profile_lines_give_each_targets_top_operators_or_why_there_are_none():
    records = [latency_record("script-libtorch-cpu", SOUND),
               latency_record("onnx-op17-onnx-reference-cpu", {"error": "ProfileError: none"}),
               latency_record("trace-torch-cpu", None)]
    lines = profile.profile_lines(records, top=2)
    assert lines[0].startswith("linear  onnx-op17-onnx-reference-cpu  (not profiled: Profile")
    assert "libtorch kineto, 20 calls" in lines[1] and SOUND["trace"] in lines[1]
    assert lines[3].split() == ["0.0040", "40.0%", "1", "aten::addmm"]
    assert len(lines) == 5 and "aten::tanh" not in "\n".join(lines)


def test_the_report_shows_the_top_operators_of_a_profiled_record_and_links_its_trace(
        tmp_path):
    records = [latency_record("script-libtorch-cpu", SOUND),
               latency_record("onnx-op17-onnx-reference-cpu", {"error": "ProfileError: none"}),
               latency_record("trace-torch-cpu", None)]
    (tmp_path / "run.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "report"
    assert report.main([str(tmp_path / "run.jsonl"), "--out", str(out),
                        "--profiles", str(tmp_path / "profiles")]) == 0
    page = (out / "report.html").read_text()
    block = page[page.index("data-key='linear|script-libtorch-cpu'"):]
    block = block[:block.index("</div>")]
    assert "aten::addmm" in block and "40.0%" in block and "aten::tanh" in block
    assert f"href='../profiles/{SOUND['trace']}'" in block
    assert "not profiled: ProfileError: none" in page
    assert "data-key='linear|trace-torch-cpu'" not in page  # no profile, no block
    summary = (out / "summary.md").read_text()
    assert "## Where the time goes" in summary and f"trace `{SOUND['trace']}`" in summary
    assert "| `aten::addmm` | 0.0040 | 40.0% | 1 |" in summary
    written = json.loads((out / "report.json").read_text())
    assert written["latency"]["profiles"][1]["profile"] == SOUND
    # Without the folder of the traces, the page names the trace without a link.
    assert report.main([str(tmp_path / "run.jsonl"), "--out", str(tmp_path / "bare")]) == 0
    assert (f"<code class='trace'>{SOUND['trace']}</code>"
            in (tmp_path / "bare" / "report.html").read_text())


def test_a_row_of_the_record_is_per_model_call():
    found = profile.describe(Profiled("torch.profiler", [Row("aten::addmm", 300.0, 6),
                                                         Row("model call", 100.0, 3)]),
                             "t.json", 3)
    assert found["top"][0] == {"name": "aten::addmm", "self_ms_per_call": 0.1, "share": 0.75,
                               "count": 2.0}
    assert found["profiled_ms_per_call"] == pytest.approx(400 / 3 / 1e3, abs=1e-6)
