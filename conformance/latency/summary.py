"""The latency table, built from records alone, and the regression gate.

    python -m conformance.latency.summary results/latency-records.jsonl
    python -m conformance.latency.summary NEW.jsonl --baseline OLD.jsonl --max-slowdown 10

The second form exits 1 when a target got more than the threshold slower relative
to eager since the baseline run (baseline speedup / new speedup - 1, in percent),
or when a cell the baseline measured is now failing or not benchmarked. Speedups,
not absolute times, are compared: eager is measured interleaved with each target in
the same run, so a machine that is busier or slower tonight moves both and leaves
the ratio alone.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

from conformance.latency.stats import UNSTABLE_SPREAD, geometric_mean
from conformance.messages import first_line

CHECK = "latency"
# What the Raspberry Pi tutorial measured for qnnpack-quantized models on a Pi 4
# (frames per second of the whole loop, torch.jit.script, 2 threads): a point of
# reference for the quantized cases, not a target.
PI4_REFERENCE_FPS = {"mobilenet_v2": 33.7, "resnet18": 9.2, "resnet50": 4.3,
                     "shufflenet_v2_x0_5": 46.7}
# The cases whose frames per second are listed beside that reference.
FPS_CASES = ("quantized_mobilenet_v2_x86", "quantized_mobilenet_v2_qnnpack")
# Default threshold of the gate: how much slower relative to eager a target may get,
# in percent; the README gives the run-to-run noise it is set against.
DEFAULT_MAX_SLOWDOWN = 10.0


def measured(records: list[dict]) -> list[dict]:
    """The latency records that carry a measurement, by case, eager first in each."""
    found = [r for r in records if r.get("check") == CHECK and "median_s" in r.get("metrics", {})]
    return sorted(found, key=lambda r: (r["case"], r["path"] != "eager", r["target"]))


def ms(seconds) -> str:
    return f"{seconds * 1e3:.3f}" if seconds is not None else "-"


def _ratio(value) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def _cold(metrics: dict) -> str:
    made = metrics.get("compile_s") or metrics.get("export_s") or metrics.get("build_s")
    return f"{made:.1f}" if made else "-"


COLUMNS = ("case", "target", "median ms", "p90 ms", "p99 ms", "IQR/med", "speedup",
           "first ms", "load ms", "make s", "peak MiB", "rounds")


def table_rows(records: list[dict]) -> list[tuple]:
    """One row per measured (case, target)."""
    rows = []
    for r in measured(records):
        m = r["metrics"]
        spread = f"{m['iqr_over_median']:.3f}" + (" !" if m.get("unstable") else "")
        rows.append((r["case"], r["target"], ms(m["median_s"]), ms(m.get("p90_s")),
                     ms(m.get("p99_s")), spread, _ratio(m.get("speedup")),
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
    return [(target, _ratio(value), str(count))
            for target, value, count in geomean_values(records)]


def fps_rows(records: list[dict]) -> list[tuple]:
    """Frames per second (batch 1, one over the median) of the quantized cases."""
    return [(r["case"], r["target"], f"{1 / r['metrics']['median_s']:.1f}")
            for r in measured(records) if r["case"] in FPS_CASES]


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
                     f"{UNSTABLE_SPREAD:g}")
    fps = fps_rows(records)
    if fps:
        lines += ["", "quantized mobilenet_v2, frames per second on this machine:"]
        lines += format_table(("case", "target", "fps"), fps)
        lines.append("reference, not a target: the Raspberry Pi 4 tutorial (qnnpack, 2 threads) "
                     + ", ".join(f"{k} {v} fps" for k, v in PI4_REFERENCE_FPS.items()))
    return lines


def speedups(records: list[dict]) -> dict[tuple[str, str], float]:
    return {(r["case"], r["target"]): r["metrics"]["speedup"]
            for r in measured(records) if r["path"] != "eager"}


def slowdown(baseline_speedup: float, speedup: float) -> float:
    """How much slower than in the baseline, in percent (negative: faster)."""
    return (baseline_speedup / speedup - 1) * 100


def regression(case: str, target: str, speedup: float, baseline: dict, max_slowdown: float
               ) -> str | None:
    """Why this speedup is a regression against the baseline, or None."""
    before = baseline.get((case, target))
    if before is None:
        return None
    lost = slowdown(before, speedup)
    if lost <= max_slowdown:
        return None
    return (f"case {case}, target {target}: speedup over eager {speedup:.3f}x, was {before:.3f}x "
            f"in the baseline: {lost:.1f}% slower relative to eager, beyond the "
            f"{max_slowdown:g}% threshold")


def regressions(records: list[dict], baseline_records: list[dict], max_slowdown: float
                ) -> list[str]:
    baseline = speedups(baseline_records)
    found = (regression(case, target, value, baseline, max_slowdown)
             for (case, target), value in sorted(speedups(records).items()))
    return [message for message in found if message]


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


def comparison_rows(records: list[dict], baseline_records: list[dict]) -> list[tuple]:
    baseline = speedups(baseline_records)
    return [(case, target, _ratio(baseline[(case, target)]), _ratio(value),
             f"{-slowdown(baseline[(case, target)], value):+.1f}%")
            for (case, target), value in sorted(speedups(records).items())
            if (case, target) in baseline]


def main(argv: list[str] | None = None) -> int:
    from conformance.records import read_records

    parser = argparse.ArgumentParser(description="Print the latency table of a run's records; "
                                     "with --baseline, compare and gate on slowdowns")
    parser.add_argument("records", type=Path)
    parser.add_argument("--baseline", type=Path, help="the records of an earlier run")
    parser.add_argument("--max-slowdown", type=float, default=DEFAULT_MAX_SLOWDOWN,
                        metavar="PERCENT", help="fail beyond this loss of speedup over eager "
                        "(default %(default)s)")
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
    print("\nspeedup over eager, baseline -> this run:")
    print("\n".join(format_table(("case", "target", "baseline", "now", "change"),
                                 comparison_rows(records, before))))
    found = regressions(records, before, args.max_slowdown) + lost(records, before)
    for message in found:
        print("REGRESSION " + message)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
