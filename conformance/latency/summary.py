"""The latency table, built from records alone, and the regression gate.

    python -m conformance.latency.summary results/latency-records.jsonl
    python -m conformance.latency.summary NEW.jsonl --baseline OLD.jsonl --max-slowdown 10

Every speedup comes with a 95% confidence interval, from a paired bootstrap over the
rounds of its cell (eager and the target are timed side by side, one round at a time).

The second form judges each cell by a 95% interval of its slowdown (baseline speedup /
new speedup - 1, in percent), bootstrapped from both runs' samples: a regression when
the whole interval lies beyond the threshold (exit status 1), no regression when its
upper end is at or below it, and otherwise too noisy to judge, listed with a hint and
not failed. A baseline record without samples (an older format) is judged on the point
estimate, and says so. It also fails on cells the baseline measured that are now
failing or not benchmarked. Speedups, not absolute times, are compared: eager is
measured interleaved with each target in the same run, so a machine that is busier or
slower tonight moves both and leaves the ratio alone.

The quantized cases' frames per second are listed beside the Raspberry Pi 4 figures of
PyTorch's quantized-inference tutorial (qnnpack, 2 threads). A run on that budget:

    pytest --latency -k "quantized and qnnpack" --threads 2
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import re
import shlex
import sys
from pathlib import Path

from conformance.latency.stats import (CONFIDENCE, UNSTABLE_SPREAD, geometric_mean,
                                       slowdown_interval, speedup_interval)
from conformance.messages import first_line
from conformance.tuning import DEFAULT

CHECK = "latency"
# What the Raspberry Pi tutorial measured for qnnpack-quantized models on a Pi 4
# (frames per second of the whole loop, torch.jit.script, 2 threads): a point of
# reference for the quantized cases, not a target.
PI4_REFERENCE_FPS = {"mobilenet_v2": 33.7, "resnet18": 9.2, "resnet50": 4.3,
                     "shufflenet_v2_x0_5": 46.7}
PI4_THREADS = 2
PI4_ENGINE = "qnnpack"
# The quantized cases are named quantized_<model>_<engine> (fixtures/vision_zoo.py):
# the model matches a case to its reference figure.
QUANTIZED_CASE = re.compile(r"quantized_(?P<model>.+)_(?P<engine>x86|qnnpack|fbgemm|onednn)")
# Default threshold of the gate: how much slower relative to eager a target may get,
# in percent; the README gives the run-to-run noise it is set against.
DEFAULT_MAX_SLOWDOWN = 10.0
# The gate's verdicts.
REGRESSION, NO_REGRESSION, TOO_NOISY = "regression", "no regression", "too noisy to judge"


def measured(records: list[dict]) -> list[dict]:
    """The latency records that carry a measurement, by case, eager first in each."""
    found = [r for r in records if r.get("check") == CHECK and "median_s" in r.get("metrics", {})]
    return sorted(found, key=lambda r: (r["case"], r["path"] != "eager", r["target"]))


def ms(seconds) -> str:
    return f"{seconds * 1e3:.3f}" if seconds is not None else "-"


def ratio_text(value) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def interval_text(values, unit: str = "") -> str:
    return f"{values[0]:.2f}-{values[1]:.2f}{unit}" if values else "-"


def _cold(metrics: dict) -> str:
    """What making the target cost: its compile, or its export and what the runtime
    prepared from the artifact (an offline optimization), or eager's build."""
    made = (metrics.get("compile_s") or (metrics.get("export_s") or 0)
            + (metrics.get("prepare_s") or 0) or metrics.get("build_s"))
    return f"{made:.1f}" if made else "-"


CI = f"{CONFIDENCE:.0%} CI"
COLUMNS = ("case", "target", "median ms", "p90 ms", "p99 ms", "IQR/med", "speedup", CI,
           "first ms", "load ms", "make s", "peak MiB", "rounds")


def table_rows(records: list[dict]) -> list[tuple]:
    """One row per measured (case, target); eager's own row has no interval."""
    rows = []
    for r in measured(records):
        m = r["metrics"]
        spread = f"{m['iqr_over_median']:.3f}" + (" !" if m.get("unstable") else "")
        rows.append((r["case"], r["target"], ms(m["median_s"]), ms(m.get("p90_s")),
                     ms(m.get("p99_s")), spread, ratio_text(m.get("speedup")),
                     interval_text(m.get("speedup_ci")),
                     ms(m.get("first_call_s")), ms(m.get("load_s")), _cold(m),
                     f"{m['peak_rss_mib']:.0f}" if m.get("peak_rss_mib") else "-", str(m["n"])))
    return rows


def format_table(header: tuple, rows: list[tuple]) -> list[str]:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    line = lambda row: "  ".join(str(x).rjust(w) if i > 1 else str(x).ljust(w)  # noqa: E731
                                 for i, (x, w) in enumerate(zip(row, widths)))
    return [line(header)] + [line(row) for row in rows]


def geomean_values(records: list[dict]) -> list[tuple[str, float, int]]:
    """Per backend, the geometric mean of its speedups over eager across cases."""
    speedups = collections.defaultdict(list)
    for r in measured(records):
        if r["path"] != "eager":
            speedups[r["target"]].append(r["metrics"]["speedup"])
    return [(target, geometric_mean(values), len(values))
            for target, values in sorted(speedups.items())]


def geomean_rows(records: list[dict]) -> list[tuple]:
    return [(target, ratio_text(value), str(count))
            for target, value, count in geomean_values(records)]


def reference_model(case: str) -> tuple[str, str] | None:
    """(model, engine) of a quantized case that has a Raspberry Pi 4 figure, else None."""
    found = QUANTIZED_CASE.fullmatch(case)
    if found and found["model"] in PI4_REFERENCE_FPS:
        return found["model"], found["engine"]
    return None


def _threads(record: dict):
    return (record.get("budget") or {}).get("threads")


FPS_COLUMNS = ("case", "target", "engine", "threads", "fps", "Pi 4 fps")


def fps_rows(records: list[dict]) -> list[tuple]:
    """Frames per second (batch 1, one over the median) of the quantized cases that have
    a reference, each beside its model's Raspberry Pi 4 figure."""
    rows = []
    for r in measured(records):
        matched = reference_model(r["case"])
        if matched:
            model, engine = matched
            rows.append((r["case"], r["target"], engine, str(_threads(r) or "-"),
                         f"{1 / r['metrics']['median_s']:.1f}", f"{PI4_REFERENCE_FPS[model]:g}"))
    return rows


def fps_notes(records: list[dict]) -> list[str]:
    """What the reference is, and whether this run's budget is the reference's."""
    notes = [f"reference, not a target: the Raspberry Pi 4 figures of the quantized-inference "
             f"tutorial (torch.jit.script, {PI4_ENGINE}, {PI4_THREADS} threads, frames per "
             f"second of its whole loop)"]
    others = sorted({str(_threads(r)) for r in measured(records)
                     if reference_model(r["case"]) and _threads(r) != PI4_THREADS})
    if others:
        notes.append(f"note: this run's thread budget is {', '.join(others)}, the reference's "
                     f"{PI4_THREADS}; for a like budget: "
                     f"pytest --latency -k \"quantized and {PI4_ENGINE}\" --threads {PI4_THREADS}")
    return notes


LOAD_COLUMNS = ("case", "target", "requests/s", "x eager", "p50 ms", "p90 ms", "p99 ms",
                "batches of 2+")


def served_load_rows(records: list[dict]) -> list[tuple]:
    """The serve cells' load (latency/served_load.py): throughput, beside eager's one call
    after another in this process, and the percentiles of a request's round trip."""
    rows = []
    for r in measured(records):
        load = r["metrics"].get("served_load")
        if load:
            batched = sum(n for size, n in load["batches"].items() if int(size) > 1)
            rows.append((r["case"], r["target"], f"{load['throughput_rps']:.1f}",
                         ratio_text(load["throughput_over_eager"]), ms(load["p50_s"]),
                         ms(load["p90_s"]), ms(load["p99_s"]),
                         f"{batched} of {sum(load['batches'].values())}"))
    return rows


def served_load_lines(records: list[dict]) -> list[str]:
    rows = served_load_rows(records)
    if not rows:
        return []
    first = next(r["metrics"]["served_load"] for r in measured(records)
                 if r["metrics"].get("served_load"))
    return ["", f"served under load: {first['requests']} requests from {first['clients']} "
                f"concurrent clients, batches of up to {first['max_batch']} "
                f"(waiting {first['max_wait_ms']:g} ms), every answer checked:"] + \
        format_table(LOAD_COLUMNS, rows)


def summary_lines(records: list[dict]) -> list[str]:
    rows = table_rows(records)
    if not rows:
        return []
    lines = format_table(COLUMNS, rows)
    lines += ["", "geometric mean of the speedup over eager, per backend:"]
    lines += format_table(("backend", "speedup", "cases"), geomean_rows(records))
    budget = run_budget(records)
    if budget:
        lines.append(f"thread budget {budget.get('threads')}, flush denormal "
                     f"{budget.get('flush_denormal')}; '!' marks IQR/median above "
                     f"{UNSTABLE_SPREAD:g}; {CI}: paired bootstrap over the rounds"
                     + between_runs_note(records))
    lines += settings_lines(records)
    lines += served_load_lines(records)
    fps = fps_rows(records)
    if fps:
        lines += ["", "quantized models, frames per second on this machine beside a Raspberry "
                      "Pi 4:"]
        lines += format_table(FPS_COLUMNS, fps)
        lines += fps_notes(records)
    return lines + gate_lines(records)


def between_runs_note(records: list[dict]) -> str:
    """What the intervals add to the bootstrap: each class's spread between runs, and
    where it was measured (run_to_run.py)."""
    spreads = {}
    for r in measured(records):
        used = r["metrics"].get("run_to_run")
        if used:
            spreads[used["class"]] = used
    if not spreads:
        return ""
    source = "; ".join(sorted({used["source"] for used in spreads.values()}))
    return (", widened by the spread between runs (" + ", ".join(
        f"{name} {used['sigma']:.1%}" for name, used in sorted(spreads.items()))
        + f"; from {source})")


def settings_lines(records: list[dict]) -> list[str]:
    """What each tuned variant of the table sets (conformance/tuning.py says why); the
    other targets run at their defaults."""
    tuned = {}
    for r in measured(records):
        settings = dict(r.get("settings") or {})
        name = settings.pop("tuning", DEFAULT)
        if name != DEFAULT:
            tuned[name] = settings
    if not tuned:
        return []
    return ["tuned variants (the other targets at their defaults):"] + [
        f"  {name}: " + "; ".join(f"{key} = {value}" for key, value in settings.items())
        for name, settings in sorted(tuned.items())]


# ---- the regression gate ----

def measured_cells(records: list[dict]) -> dict[tuple[str, str], dict]:
    """The metrics of each measured (case, target) other than eager's own."""
    return {(r["case"], r["target"]): r["metrics"]
            for r in measured(records) if r["path"] != "eager"}


def speedups(records: list[dict]) -> dict[tuple[str, str], float]:
    return {cell: metrics["speedup"] for cell, metrics in measured_cells(records).items()}


def slowdown(baseline_speedup: float, speedup: float) -> float:
    """How much slower than in the baseline, in percent (negative: faster)."""
    return (baseline_speedup / speedup - 1) * 100


def paired_samples(metrics: dict) -> tuple[list, list] | None:
    """A record's paired (eager, target) samples; None for a record that keeps none."""
    eager, other = metrics.get("eager_samples_s"), metrics.get("samples_s")
    return (eager, other) if eager and other else None


def speedup_ci_of(metrics: dict) -> tuple[float, float] | None:
    """The record's interval, or one made from its samples (a record of a run before
    the intervals); None without samples."""
    if metrics.get("speedup_ci"):
        return tuple(metrics["speedup_ci"])
    samples = paired_samples(metrics)
    return speedup_interval(*samples) if samples else None


@dataclasses.dataclass(frozen=True)
class Judgement:
    """The gate's verdict on one cell against the baseline, and what it rests on."""
    case: str
    target: str
    verdict: str  # REGRESSION, NO_REGRESSION or TOO_NOISY
    speedup: float
    speedup_ci: tuple[float, float] | None
    baseline_speedup: float
    baseline_speedup_ci: tuple[float, float] | None
    slowdown_pct: float  # the point estimate
    slowdown_ci: tuple[float, float] | None  # None: judged on the point estimate
    max_slowdown: float
    point_reason: str = ""  # why there is no interval
    hint: str = ""  # how to narrow the interval of a cell too noisy to judge
    between_sd: float = 0.0  # the between-run part of the slowdown's interval (log scale)

    def describe(self) -> str:
        """The cell, both speedups with their intervals, the slowdown and the verdict."""
        head = (f"case {self.case}, target {self.target}: speedup over eager "
                f"{self.speedup:.3f}x, was {self.baseline_speedup:.3f}x in the baseline "
                f"({CI}s {interval_text(self.speedup_ci, 'x')} now, "
                f"{interval_text(self.baseline_speedup_ci, 'x')} then): ")
        if self.slowdown_ci is None:
            return head + (f"{self.slowdown_pct:.1f}% slower relative to eager, "
                           f"{'beyond' if self.verdict == REGRESSION else 'within'} the "
                           f"{self.max_slowdown:g}% threshold (judged on the point "
                           f"estimates: {self.point_reason})")
        low, high = self.slowdown_ci
        where = {REGRESSION: "all of it beyond", NO_REGRESSION: "all of it within",
                 TOO_NOISY: "across"}[self.verdict]
        text = (head + f"{self.slowdown_pct:.1f}% slower relative to eager, {CI} "
                f"{low:.1f}% to {high:.1f}%, {where} the {self.max_slowdown:g}% threshold")
        if self.verdict == TOO_NOISY:
            text += f": too noisy to judge; {self.hint}"
        if self.between_sd:
            text += (f" (the interval includes the spread between runs, a standard "
                     f"deviation of {self.between_sd:.1%})")
        return text

    def record(self, baseline: object) -> dict:
        """What a latency record keeps of the gate (`regression_gate` in its metrics)."""
        return {"baseline": str(baseline), "verdict": self.verdict,
                "slowdown_pct": self.slowdown_pct,
                "slowdown_ci": list(self.slowdown_ci) if self.slowdown_ci else None,
                "confidence": CONFIDENCE, "max_slowdown": self.max_slowdown,
                "baseline_speedup": self.baseline_speedup,
                "baseline_speedup_ci": (list(self.baseline_speedup_ci)
                                        if self.baseline_speedup_ci else None),
                "point_reason": self.point_reason or None, "between_runs_sd": self.between_sd,
                "message": self.describe()}


def more_samples_hint(metrics: dict, method: dict | None) -> str:
    """How to narrow a wide interval: more rounds, by raising whichever of the round cap
    and the time budget stopped this run (`method`: the record's, when it has one)."""
    rounds = metrics.get("n") or len(metrics.get("samples_s") or ())
    if method and rounds >= method.get("max_rounds", rounds + 1):
        return (f"more rounds narrow it: this run stopped at --latency-max-rounds={rounds}; "
                f"raise it (and --latency-time), or quiet the machine")
    seconds = f"={method['max_time_s']:g}" if method and "max_time_s" in method else ""
    return (f"more rounds narrow it ({rounds} now): raise --latency-time{seconds} or "
            f"--latency-min-rounds, or quiet the machine")


def narrowing_hint(metrics: dict, method: dict | None, interval: tuple[float, float],
                   between_sd: float) -> str:
    """More rounds, unless most of the interval is the spread between runs, which more
    rounds do not narrow."""
    from conformance.latency.run_to_run import z_score

    between_half = 100 * z_score() * between_sd
    if between_half > (interval[1] - interval[0]) / 4:
        return (f"the spread between runs makes most of it (about +-{between_half:.0f}% "
                f"alone, measured for this class of cell): more rounds barely narrow it; "
                f"a threshold beyond that, or a cell with longer calls, can be judged")
    return more_samples_hint(metrics, method)


def judge(case: str, target: str, metrics: dict, baseline: dict, max_slowdown: float,
          method: dict | None = None) -> Judgement:
    """The gate's verdict on a cell's metrics against its baseline record's metrics:
    by the interval of the slowdown where both keep their samples, else by the point
    estimate."""
    point = slowdown(baseline["speedup"], metrics["speedup"])
    now, before = paired_samples(metrics), paired_samples(baseline)
    between = between_runs_sd(metrics, baseline)
    interval = slowdown_interval(before, now, between_sd=between) if now and before else None
    if interval is None:
        verdict = REGRESSION if point > max_slowdown else NO_REGRESSION
    elif interval[0] > max_slowdown:
        verdict = REGRESSION
    elif interval[1] <= max_slowdown:
        verdict = NO_REGRESSION
    else:
        verdict = TOO_NOISY
    return Judgement(case, target, verdict, metrics["speedup"], speedup_ci_of(metrics),
                     baseline["speedup"], speedup_ci_of(baseline), point, interval,
                     max_slowdown, "" if interval else _no_interval(before, now),
                     narrowing_hint(metrics, method, interval, between)
                     if verdict == TOO_NOISY else "", between if interval else 0.0)


def between_runs_sd(metrics: dict, baseline: dict) -> float:
    """The standard deviation of the log of the change that comes from the two being
    different runs: each record's between-run spread (run_to_run.py), in quadrature; a
    record from before the spreads counts as having this run's."""
    now = (metrics.get("run_to_run") or {}).get("sigma", 0.0)
    before = (baseline.get("run_to_run") or {}).get("sigma", now)
    return math.hypot(now, before)


def _no_interval(before, now) -> str:
    """Why the slowdown has no interval, for the message of a point-estimate verdict."""
    if not before:
        return "the baseline's record keeps no samples (an older format)"
    if not now:
        return "this run's record keeps no samples"
    return "fewer than two paired rounds"


def judgements(records: list[dict], baseline_records: list[dict], max_slowdown: float
               ) -> list[Judgement]:
    """A verdict for every cell measured in both runs."""
    baseline = measured_cells(baseline_records)
    methods = {(r["case"], r["target"]): r.get("method") for r in measured(records)}
    return [judge(case, target, metrics, baseline[(case, target)], max_slowdown,
                  methods.get((case, target)))
            for (case, target), metrics in sorted(measured_cells(records).items())
            if (case, target) in baseline]


def regressions(records: list[dict], baseline_records: list[dict], max_slowdown: float
                ) -> list[str]:
    """The messages of the cells that regressed."""
    return [j.describe() for j in judgements(records, baseline_records, max_slowdown)
            if j.verdict == REGRESSION]


def lost(records: list[dict], baseline_records: list[dict]) -> list[str]:
    """Cells the baseline measured that this run recorded without a measurement: now
    failing, or skipped as not matching eager. Cells this run did not select are no loss."""
    now = speedups(records)
    recorded = {(r["case"], r["target"]): r for r in records if r.get("check") == CHECK}
    found = []
    for case, target in sorted(speedups(baseline_records)):
        record = recorded.get((case, target))
        if record and (case, target) not in now:
            why = first_line(record.get("message") or "")
            found.append(f"case {case}, target {target}: measured in the baseline, "
                         f"{record['outcome']} now" + (f": {why}" if why else ""))
    return found


def gate_lines(records: list[dict]) -> list[str]:
    """The in-run gate's verdicts, which its records keep: a count per verdict, and the
    cells that it could not judge or judged on point estimates (a regression fails its
    cell, and pytest reports it)."""
    gated = [(r, r["metrics"]["regression_gate"]) for r in measured(records)
             if r["metrics"].get("regression_gate")]
    if not gated:
        return []
    first = gated[0][1]
    counts = collections.Counter(gate["verdict"] for _, gate in gated)
    lines = ["", f"regression gate against {first['baseline']}, threshold "
                 f"{first['max_slowdown']:g}%: "
                 + ", ".join(f"{counts[v]} {v}" for v in (REGRESSION, TOO_NOISY, NO_REGRESSION))]
    lines += [f"TOO NOISY TO JUDGE (not failed) {gate['message']}"
              for _, gate in gated if gate["verdict"] == TOO_NOISY]
    lines += [f"judged on the point estimate: case {r['case']}, target {r['target']}: "
              f"{gate['point_reason']}" for r, gate in gated if gate["slowdown_ci"] is None]
    return lines


def budget_mismatch(records: list[dict], wanted: dict | None) -> str | None:
    """Why these records cannot be compared with a run on the `wanted` thread budget."""
    seen = {json.dumps(r["budget"], sort_keys=True) for r in records if r.get("budget")}
    other = sorted(b for b in seen if b != json.dumps(wanted, sort_keys=True))
    if other:
        return f"the baseline ran with thread budget {', '.join(other)}, this run with {wanted}"
    return None


def run_budget(records: list[dict]) -> dict | None:
    return next((r["budget"] for r in records if r.get("check") == CHECK and r.get("budget")),
                None)


def reproduce_command(record: dict | None, baseline: Path) -> str:
    """The latency run of one cell, on the record's budget, gated against the baseline."""
    if not record or not record.get("nodeid"):
        return ""
    budget = record.get("budget") or {}
    words = ["pytest", "--latency", record["nodeid"]]
    words += [f"--threads={budget['threads']}"] if budget.get("threads") else []
    words += ["--flush-denormal"] if budget.get("flush_denormal") else []
    return shlex.join(words + [f"--latency-baseline={baseline}"])


COMPARISON_COLUMNS = ("case", "target", "baseline", CI, "now", CI, "change",
                      f"slowdown {CI}", "verdict")


def comparison_rows(found: list[Judgement]) -> list[tuple]:
    return [(j.case, j.target, ratio_text(j.baseline_speedup), interval_text(j.baseline_speedup_ci),
             ratio_text(j.speedup), interval_text(j.speedup_ci), f"{0.0 - j.slowdown_pct:+.1f}%",
             (f"{j.slowdown_ci[0]:+.1f}% to {j.slowdown_ci[1]:+.1f}%" if j.slowdown_ci
              else "point estimate"), j.verdict)
            for j in found]


def compare(records: list[dict], baseline_records: list[dict], baseline: Path,
            max_slowdown: float) -> tuple[list[str], bool]:
    """The comparison's lines, and whether it fails: a regression or a lost cell. A cell
    too noisy to judge is listed, with a hint, and does not fail."""
    found = judgements(records, baseline_records, max_slowdown)
    lines = ["", "speedup over eager, baseline -> this run (change: + is faster):"]
    lines += format_table(COMPARISON_COLUMNS, comparison_rows(found))
    by_cell = {(r["case"], r["target"]): r for r in measured(records)}
    failed = False
    for j in found:
        if j.verdict == REGRESSION:
            failed = True
            again = reproduce_command(by_cell.get((j.case, j.target)), baseline)
            lines.append(f"REGRESSION {j.describe()}" + (f"\n  reproduce: {again}" if again
                                                         else ""))
        elif j.verdict == TOO_NOISY:
            lines.append(f"TOO NOISY TO JUDGE (not failed) {j.describe()}")
    for message in lost(records, baseline_records):
        failed = True
        lines.append(f"REGRESSION {message}")
    return lines, failed


def main(argv: list[str] | None = None) -> int:
    from conformance.records import read_records

    parser = argparse.ArgumentParser(description="Print the latency table of a run's records; "
                                     "with --baseline, compare and gate on slowdowns")
    parser.add_argument("records", type=Path)
    parser.add_argument("--baseline", type=Path, help="the records of an earlier run")
    parser.add_argument("--max-slowdown", type=float, default=DEFAULT_MAX_SLOWDOWN,
                        metavar="PERCENT", help="fail when the whole 95%% interval of the loss "
                        "of speedup over eager lies beyond this (default %(default)s)")
    args = parser.parse_args(argv)
    records = read_records(args.records)
    lines = summary_lines(records)
    print("\n".join(lines) if lines else f"no latency records in {args.records}")
    if not args.baseline:
        return 0
    before = read_records(args.baseline)
    mismatch = budget_mismatch(before, run_budget(records))
    if mismatch:
        print(f"cannot compare: {mismatch}")
        return 2
    lines, failed = compare(records, before, args.baseline, args.max_slowdown)
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
