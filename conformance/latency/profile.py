"""Where a latency target's time goes: a per-operator profile from the target's own
profiler, a chrome trace to open (chrome://tracing, Perfetto) and a table of its top
operators by self time.

Each kind of target is profiled by the tool that sees its operators:

- a Python callable in this process (eager, TorchScript, exported programs,
  torch.compile, AOTInductor in Python): torch.profiler, CPU activity (and CUDA on a
  cuda case), the table from `key_averages`;
- ONNX Runtime (`OnnxCallable`): ONNX Runtime's own profiler, in a separate session of
  the same model with the same options as the timed one (profiling slows every run it
  records), the table from the trace's node events by op type;
- the libtorch harness (`LibtorchModel`): its `profile` request, libtorch's Kineto
  profiler inside the C++ process, the table from the trace's events; when the harness
  cannot start Kineto its trace holds only its own clock's calls, and says so (`tool`).

Every profiled call is one "model call" event (ONNX Runtime's own is "model_run"), so
the self time of that event is the time of a call spent outside any operator: Python
around eager's modules, Inductor's generated kernels, a runtime's own bookkeeping.
Self times are summed over all threads; `share` is a row's part of their sum.

The API: `profile_target` (raises ProfileError), `profile_record` (never raises: the
dict for a latency record's metrics["profile"]), `profile_lines` (the terminal table).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from conformance.calling import split

TOP = 10  # operators a record keeps
WARMUP = 3  # untimed calls before the profiled ones: compiles and first-call costs
CALL_EVENT = "model call"  # the event around each profiled call (harness.cpp's too)
ONNXRUNTIME_CALL_EVENT = "model_run"  # ONNX Runtime's own event around each run
CALL_EVENTS = (CALL_EVENT, ONNXRUNTIME_CALL_EVENT)
TRACE_SUFFIX = ".trace.json"

TORCH_TOOL = "torch.profiler"
ONNXRUNTIME_TOOL = "onnxruntime"
KINETO_TOOL = "libtorch kineto"
CLOCK_TOOL = "harness clock"  # the harness's fallback: its calls only, no operators

# Chrome-trace categories of Kineto's host-side events, and of its device-side ones.
HOST_CATEGORIES = frozenset({"cpu_op", "user_annotation", "cuda_runtime", "cuda_driver"})
DEVICE_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})


class ProfileError(Exception):
    """The target could not be profiled, or its profile shows no operator at all: an
    empty table would read as a model that takes no time."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One event name over all profiled calls: its self time and how often it ran."""

    name: str
    self_us: float
    count: int
    device_us: float | None = None  # self time on the device (CUDA), where measured


@dataclasses.dataclass(frozen=True)
class Profiled:
    """What one profiler gave: its name, and its rows over all profiled calls."""

    tool: str
    rows: list[Row]
    # Whether the trace is meant to show operators: the harness clock's has calls only.
    has_operators: bool = True
    device_us: float | None = None  # all device time, when the tool measures it


def profile_target(subject, runs: int, directory: Path, name: str,
                   warmup: int = WARMUP) -> dict:
    """Profile `runs` calls of the subject's target on the case's example, in inference
    mode under the case's context; write the chrome trace to `directory`/<name>.trace.json.

    Returns the record's dict: {"tool", "trace" (the file's name, relative to
    `directory`), "calls", "profiled_ms_per_call", "top": [{"name", "self_ms_per_call",
    "share", "count"}, ...]}. Raises ProfileError when there is no profiler for the
    target or the profile shows no operator; the target's own errors propagate.
    """
    if runs < 1:
        raise ValueError(f"a profile needs at least one call, not {runs}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trace = directory / (_file_name(name) + TRACE_SUFFIX)
    trace.unlink(missing_ok=True)  # an earlier run's trace must not pass for this one's
    profiled = _profiler_for(subject)(runs, warmup, trace)
    if not trace.is_file():
        raise ProfileError(f"{profiled.tool} wrote no trace file {trace}")
    return describe(profiled, trace.name, runs)


def profile_record(subject, runs: int, directory: Path, name: str,
                   warmup: int = WARMUP) -> dict:
    """`profile_target`, or {"error": why} when profiling failed: a profile explains a
    latency, it is not a check, and its failure must not fail the latency cell."""
    try:
        return profile_target(subject, runs, directory, name, warmup)
    except Exception as exc:  # any runtime's failure: recorded and shown, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "profile"


def _profiler_for(subject) -> Callable[[int, int, Path], Profiled]:
    """The profiler that sees the target's operators (see the module's docstring)."""
    from conformance.latency.measure import EAGER_PATH
    from conformance.runtimes.libtorch import LibtorchModel
    from conformance.runtimes.onnx import OnnxCallable

    state = subject.state
    inputs, keywords, context = state.example, state.keywords, state.context
    if subject.target.path == EAGER_PATH:  # eager's own latency cell
        return lambda runs, warmup, trace: profile_python(
            state.model, inputs, keywords, context, state.device, runs, warmup, trace)
    loaded = subject.loaded
    if isinstance(loaded, LibtorchModel):
        return lambda runs, warmup, trace: profile_harness(
            loaded, inputs, keywords, context, runs, warmup, trace)
    if isinstance(loaded, OnnxCallable):
        if loaded.recipe is None:
            raise ProfileError(f"runtime {subject.target.runtime} has no profiler the suite "
                               "knows (it is not ONNX Runtime)")
        return lambda runs, warmup, trace: profile_onnxruntime(
            loaded, inputs, keywords, context, runs, warmup, trace)
    return lambda runs, warmup, trace: profile_python(
        loaded, inputs, keywords, context, state.device, runs, warmup, trace)


# --- torch.profiler: a Python callable in this process ---------------------------------

def profile_python(fn: Callable, inputs: tuple, keywords: tuple[str, ...],
                   context: Callable, device: str, runs: int, warmup: int,
                   trace: Path) -> Profiled:
    """torch.profiler around `runs` calls, each in a "model call" record_function."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.startswith("cuda")
    args, kwargs = split(inputs, keywords)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), context():
        for _ in range(warmup):
            fn(*args, **kwargs)
        _synchronize(cuda)
        with profile(activities=activities) as profiler:
            for _ in range(runs):
                with record_function(CALL_EVENT):
                    fn(*args, **kwargs)
                    _synchronize(cuda)  # the call's kernels are part of the call
    profiler.export_chrome_trace(str(trace))
    return Profiled(TORCH_TOOL, rows_of_key_averages(profiler.key_averages(), cuda))


def _synchronize(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def rows_of_key_averages(averages, cuda: bool = False) -> list[Row]:
    """torch.profiler's averages (one per event name), as rows: self CPU time, calls,
    and on CUDA the self device time."""
    return [Row(event.key, float(event.self_cpu_time_total), int(event.count),
                float(event.self_device_time_total) if cuda else None)
            for event in averages]


# --- ONNX Runtime's profiler -------------------------------------------------------------

def profile_onnxruntime(loaded, inputs: tuple, keywords: tuple[str, ...], context: Callable,
                        runs: int, warmup: int, trace: Path) -> Profiled:
    """ONNX Runtime's own profiler, in a profiling twin of the timed session. Its trace
    has every run of the twin, warm-up ones too; the table counts the last `runs`."""
    import torch

    args, kwargs = split(inputs, keywords)
    with tempfile.TemporaryDirectory(prefix="conformance-ort-profile-") as scratch:
        twin, end = loaded.profiling_twin(Path(scratch) / "onnxruntime")
        with torch.inference_mode(), context():
            for _ in range(warmup + runs):
                twin(*args, **kwargs)
        shutil.move(str(end()), trace)
    return Profiled(ONNXRUNTIME_TOOL, rows_of_onnxruntime_trace(read_trace(trace), runs))


def rows_of_onnxruntime_trace(events: list[dict], runs: int) -> list[Row]:
    """Rows by op type from the node events ("<node>_kernel_time", args.op_name) inside
    the last `runs` model_run events, and the runs' time outside any node as a
    "model_run" row."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == ONNXRUNTIME_CALL_EVENT
                     and e.get("ph") == "X")[-runs:]
    if len(windows) < runs:
        raise ProfileError(f"the ONNX Runtime trace has {len(windows)} {ONNXRUNTIME_CALL_EVENT} "
                           f"events, not the {runs} profiled runs")
    starts = [start for start, _ in windows]
    self_us, counts = collections.Counter(), collections.Counter()
    for event in events:
        if _is_onnxruntime_node(event) and _inside(event, windows, starts):
            op = (event.get("args") or {}).get("op_name") or event["name"]
            self_us[op] += event["dur"]
            counts[op] += 1
    outside = sum(end - start for start, end in windows) - sum(self_us.values())
    rows = [Row(op, float(self_us[op]), counts[op]) for op in self_us]
    return rows + [Row(ONNXRUNTIME_CALL_EVENT, float(max(outside, 0)), len(windows))]


def _is_onnxruntime_node(event: dict) -> bool:
    # Each node has fence_before, kernel_time and fence_after events; the kernel is its time.
    return (event.get("cat") == "Node" and event.get("ph") == "X"
            and str(event.get("name", "")).endswith("_kernel_time"))


def _inside(event: dict, windows: list[tuple], starts: list) -> bool:
    index = bisect.bisect_right(starts, event["ts"]) - 1
    return index >= 0 and event["ts"] + event["dur"] <= windows[index][1]


# --- the libtorch harness ----------------------------------------------------------------

def profile_harness(model, inputs: tuple, keywords: tuple[str, ...], context: Callable,
                    runs: int, warmup: int, trace: Path) -> Profiled:
    """The harness's `profile` request: Kineto inside the C++ process, or its clock."""
    with context():  # the quantized engine each request hands the harness
        tool, _seconds = model.profile(inputs, warmup, runs, trace, keywords)
    events = read_trace(trace)
    rows, device_us = rows_of_chrome_trace(events)
    return Profiled(tool, rows, has_operators=tool != CLOCK_TOOL, device_us=device_us)


def rows_of_chrome_trace(events: list[dict]) -> tuple[list[Row], float | None]:
    """Rows from a Kineto trace's host events, self time from their nesting on each
    thread; and the summed device events' time (None when there are none)."""
    threads = collections.defaultdict(list)
    device_us = None
    for event in events:
        if event.get("ph") != "X":
            continue
        if event.get("cat") in HOST_CATEGORIES:
            threads[(event.get("pid"), event.get("tid"))].append(event)
        elif event.get("cat") in DEVICE_CATEGORIES:
            device_us = (device_us or 0.0) + float(event.get("dur", 0))
    self_us, counts = collections.Counter(), collections.Counter()
    for thread in threads.values():
        for event, own in _self_times(thread):
            self_us[event["name"]] += own
            counts[event["name"]] += 1
    return [Row(name, self_us[name], counts[name]) for name in self_us], device_us


def _self_times(events: list[dict]) -> list[tuple[dict, float]]:
    """Each event of one thread with its duration less its direct children's."""
    ordered = sorted(events, key=lambda e: (e["ts"], -e.get("dur", 0)))
    ends, own, stack = {}, {}, []
    for index, event in enumerate(ordered):
        start, end = event["ts"], event["ts"] + event.get("dur", 0)
        while stack and ends[stack[-1]] <= start + 1e-3:  # 1 ns of rounding in the trace
            stack.pop()
        if stack:
            own[stack[-1]] -= event.get("dur", 0)
        ends[index], own[index] = end, float(event.get("dur", 0))
        stack.append(index)
    return [(event, max(own[index], 0.0)) for index, event in enumerate(ordered)]


# --- traces and the record ---------------------------------------------------------------

def read_trace(file: Path) -> list[dict]:
    """The events of a chrome trace: the JSON object form ({"traceEvents": [...]},
    torch's and Kineto's) or the array form (ONNX Runtime's)."""
    try:
        loaded = json.loads(Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise ProfileError(f"cannot read the trace {file}: {exc}") from None
    events = loaded.get("traceEvents") if isinstance(loaded, dict) else loaded
    if not isinstance(events, list):
        raise ProfileError(f"{file} is no chrome trace: it has no list of events")
    return events


def describe(profiled: Profiled, trace_name: str, runs: int) -> dict:
    """The record's dict of a profile: its top rows by self time, per model call."""
    operators = [row for row in profiled.rows if row.name not in CALL_EVENTS]
    if profiled.has_operators and not any(row.count for row in operators):
        raise ProfileError(f"{profiled.tool} recorded no operator events in {runs} calls "
                           f"(trace {trace_name}): nothing says where the time goes")
    total = sum(row.self_us for row in profiled.rows)
    ranked = sorted(profiled.rows, key=lambda row: (-row.self_us, row.name))[:TOP]
    found = {"tool": profiled.tool, "trace": trace_name, "calls": runs,
             "profiled_ms_per_call": round(total / runs / 1e3, 6),
             "top": [_top_row(row, runs, total) for row in ranked]}
    if profiled.device_us is not None:
        found["device_ms_per_call"] = round(profiled.device_us / runs / 1e3, 6)
    return found


def _top_row(row: Row, runs: int, total: float) -> dict:
    found = {"name": row.name, "self_ms_per_call": round(row.self_us / runs / 1e3, 6),
             "share": round(row.self_us / total, 4) if total else 0.0,
             "count": round(row.count / runs, 3)}
    if row.device_us is not None:
        found["self_device_ms_per_call"] = round(row.device_us / runs / 1e3, 6)
    return found


# --- the terminal table ------------------------------------------------------------------

def profiled_records(records: list[dict]) -> list[dict]:
    """The records whose metrics carry a profile (or why profiling failed), by case
    and target."""
    found = [r for r in records if isinstance((r.get("metrics") or {}).get("profile"), dict)]
    return sorted(found, key=lambda r: (r["case"], r.get("path") != "eager", r["target"]))


def profile_heading(profile: dict) -> str:
    """What made a profile, in one line: the tool, the calls, the time they took (the
    trace's name is shown beside it by each rendering)."""
    if "error" in profile:
        return f"not profiled: {profile['error']}"
    device = (f", {profile['device_ms_per_call']:.3f} ms on the device"
              if profile.get("device_ms_per_call") is not None else "")
    return (f"{profile['tool']}, {profile['calls']} calls, "
            f"{profile['profiled_ms_per_call']:.3f} ms profiled per call{device}")


def profile_lines(records: list[dict], top: int = 5) -> list[str]:
    """The top operators of each profiled (case, target), for the terminal."""
    lines: list[str] = []
    for record in profiled_records(records):
        profile = record["metrics"]["profile"]
        trace = f"; trace {profile['trace']}" if profile.get("trace") else ""
        lines.append(f"{record['case']}  {record['target']}  ({profile_heading(profile)}{trace})")
        rows = profile.get("top") or []
        if rows:
            lines += ["    " + line for line in _top_table(rows[:top])]
    return lines


def _top_table(rows: list[dict]) -> list[str]:
    cells = [(f"{r['self_ms_per_call']:.4f}", f"{100 * r['share']:.1f}%", f"{r['count']:g}",
              r["name"]) for r in rows]
    header = ("self ms/call", "share", "count/call", "operator")
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(3)]
    return ["  ".join([*(row[i].rjust(widths[i]) for i in range(3)), row[3]])
            for row in [header, *cells]]

