"""Do two latency runs agree? For every cell both measured: each run's speedup with
its interval, whether the two intervals overlap, and the interval of the change between
the runs (the regression gate's statistics, with the between-run spread of each record).
A cell agrees when that interval holds no change at all.

    python -m conformance.latency.agreement RUN1.jsonl RUN2.jsonl [--targets tuned]

exits 1 when a cell differs, 2 when the runs have no cell in common or ran on different
thread budgets. Two runs of one build should agree on all but about one cell in twenty
(the intervals are 95% ones); more disagreements mean the intervals are too narrow for
the machine, and `python -m conformance.latency.run_to_run` measures its spreads anew.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from conformance.latency.run_to_run import Spreads, load, one_run_interval
from conformance.latency.stats import slowdown_interval
from conformance.latency.summary import (CI, between_runs_sd, budget_mismatch, format_table,
                                         interval_text, measured_cells, paired_samples, ratio_text,
                                         run_budget, speedup_ci_of)

AGREE, DIFFER, NO_INTERVAL = "agree", "differ", "no interval"


@dataclasses.dataclass(frozen=True)
class Agreement:
    case: str
    target: str
    speedups: tuple[float, float]
    intervals: tuple[tuple[float, float] | None, tuple[float, float] | None]
    change_ci: tuple[float, float] | None  # the second run's speedup against the first's, %

    @property
    def overlap(self) -> bool | None:
        first, second = self.intervals
        if first is None or second is None:
            return None
        return first[0] <= second[1] and second[0] <= first[1]

    @property
    def verdict(self) -> str:
        if self.change_ci is None:
            return NO_INTERVAL
        return AGREE if self.change_ci[0] <= 0 <= self.change_ci[1] else DIFFER


def agreements(first: list[dict], second: list[dict], select: str = "",
               spreads: Spreads | None = None) -> list[Agreement]:
    """Every cell both runs measured whose target contains `select`; with `spreads`, each
    record's interval made anew from its one-run interval and those spreads (the records'
    own spreads are ignored): how two runs agree under a calibration other than theirs."""
    before, after = measured_cells(first), measured_cells(second)
    found = []
    for (case, target), one in sorted(before.items()):
        other = after.get((case, target))
        if other is None or select not in target:
            continue
        if spreads is not None:
            one, other = (respread(one, target, spreads), respread(other, target, spreads))
        samples = (paired_samples(one), paired_samples(other))
        # the slowdown of the first run against the second as baseline: second / first - 1
        change = (slowdown_interval(samples[1], samples[0],
                                    between_sd=between_runs_sd(other, one))
                  if None not in samples else None)
        found.append(Agreement(case, target, (one["speedup"], other["speedup"]),
                               (speedup_ci_of(one), speedup_ci_of(other)), change))
    return found


def respread(metrics: dict, target: str, spreads: Spreads) -> dict:
    """The record's metrics with the between-run part of `spreads` in place of its own."""
    from conformance.latency.measure import between_runs

    one_run = one_run_interval(metrics)
    if not one_run:
        return metrics
    return {**metrics, **between_runs({**metrics, "speedup_ci": one_run}, target, spreads)}


COLUMNS = ("case", "target", "run 1", CI, "run 2", CI, "overlap", f"change {CI}", "verdict")


def rows(found: list[Agreement]) -> list[tuple]:
    return [(a.case, a.target, ratio_text(a.speedups[0]), interval_text(a.intervals[0]),
             ratio_text(a.speedups[1]), interval_text(a.intervals[1]),
             {True: "yes", False: "NO", None: "-"}[a.overlap],
             (f"{a.change_ci[0]:+.1f}% to {a.change_ci[1]:+.1f}%" if a.change_ci else "-"),
             a.verdict)
            for a in found]


def count_line(found: list[Agreement]) -> str:
    verdicts = [a.verdict for a in found]
    overlapping = sum(1 for a in found if a.overlap)
    return (f"{len(found)} cells: {verdicts.count(AGREE)} agree, {verdicts.count(DIFFER)} "
            f"differ, {verdicts.count(NO_INTERVAL)} without an interval; the two "
            f"intervals overlap in {overlapping}")


def main(argv: list[str] | None = None) -> int:
    from conformance.records import read_records

    parser = argparse.ArgumentParser(description="Whether two latency runs agree on every "
                                     "speedup they both measured, within its interval")
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--targets", default="", metavar="TEXT",
                        help="only the targets whose id contains TEXT (e.g. tuned)")
    parser.add_argument("--run-to-run", type=Path, default=None, metavar="FILE",
                        help="judge with these spreads between runs (a file of python -m "
                             "conformance.latency.run_to_run) instead of the records' own")
    args = parser.parse_args(argv)
    first, second = read_records(args.first), read_records(args.second)
    mismatch = budget_mismatch(first, run_budget(second))
    if mismatch:
        print(f"cannot compare: {mismatch}")
        return 2
    spreads = load(args.run_to_run) if args.run_to_run else None
    found = agreements(first, second, args.targets, spreads)
    if not found:
        print(f"no latency cell measured in both {args.first} and {args.second}")
        return 2
    print("speedup over eager in each run; change: run 2 against run 1 (+ is faster)")
    print("\n".join(format_table(COLUMNS, rows(found))))
    print(count_line(found))
    return 1 if any(a.verdict == DIFFER for a in found) else 0


if __name__ == "__main__":
    sys.exit(main())
