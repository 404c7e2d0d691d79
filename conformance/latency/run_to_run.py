"""How far a speedup moves between two runs of one build: the part of its interval
that one run's samples cannot show.

A cell's bootstrap interval (stats.speedup_interval) resamples the rounds of one cell,
taken over a few seconds in one process. Runs of one commit disagree by more, and by
case: on this machine eager resnet18 ran 25.5 to 26.6 ms a call in every cell of one run
and 27.5 to 31.2 ms in another while ONNX Runtime moved by 6%, so all of resnet18's
speedups moved together by 7 to 10%; calls of microseconds in the libtorch harness land
on one of several speeds per run, 2x apart; most cases stay within 2%. Nothing in one
cell's rounds says which speed the process met, so this part is measured from runs
repeated on the machine and kept as data: for each class of cell, a standard deviation
of the log of the speedup between runs, beyond what the runs' own intervals explain
(`python -m conformance.latency.run_to_run RUN1.jsonl RUN2.jsonl [...]` writes it).
Every speedup's interval and the gate's interval of every slowdown include it; a record
keeps its one-run interval beside it, and which spread it used.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import sys
from pathlib import Path

from conformance.latency import stats as latency_stats

PACKAGED = Path(__file__).with_name("run_to_run.json")

# Calls the harness times in C++ below this land on one of several speeds per run
# (measured: up to 4x apart between two runs of one commit); above it they move like
# calls timed in Python.
HARNESS_FLOOR_S = 100e-6

CLASSES = {
    "in-process": "a call timed in the pytest process (eager, TorchScript, Inductor, "
                  "AOTInductor, ONNX Runtime; a round trip to the serve runtime's server, "
                  "not calibrated apart)",
    "harness": "a call of 100 us or more timed in C++ by the libtorch harness",
    "harness-microseconds": "a call under 100 us timed by the libtorch harness",
}


def cell_class(target: str, median_s: float) -> str:
    """The class of a latency cell: by the clock that times it and, in the harness, by
    the length of its call."""
    if "-libtorch-" not in target:
        return "in-process"
    return "harness" if median_s >= HARNESS_FLOOR_S else "harness-microseconds"


@dataclasses.dataclass(frozen=True)
class Spreads:
    """The between-run spread of each class, and where it was measured."""
    sigma: dict[str, float]  # class -> standard deviation of log(speedup) between runs
    source: str  # the file, or "packaged"
    measured: dict  # how: runs, cells per class, machine and versions

    def of(self, target: str, median_s: float) -> tuple[str, float]:
        """(class, sigma) of a cell; a class the table lacks gets no between-run part,
        and the record says so by its class's absence from `measured`."""
        name = cell_class(target, median_s)
        return name, self.sigma.get(name, 0.0)

    def describe(self, name: str) -> dict:
        return {"class": name, "sigma": self.sigma.get(name, 0.0), "source": self.source}


def load(path: Path | None = None) -> Spreads:
    """The spreads in `path`, a file written by this module's command; the packaged
    calibration by default."""
    file = path or PACKAGED
    try:
        data = json.loads(Path(file).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"run-to-run spreads {file}: {exc}") from None
    unknown = set(data.get("sigma", {})) - set(CLASSES)
    if "sigma" not in data or unknown:
        raise ValueError(f"run-to-run spreads {file}: expected a 'sigma' table of the "
                         f"classes {sorted(CLASSES)}, got {sorted(data.get('sigma', {}))}")
    return Spreads({k: float(v) for k, v in data["sigma"].items()},
                   "packaged" if path is None else str(file), data.get("measured", {}))


def z_score(confidence: float = latency_stats.CONFIDENCE) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def widen(speedup: float, interval: tuple[float, float] | None, sigma: float,
          confidence: float = latency_stats.CONFIDENCE) -> tuple[float, float] | None:
    """One run's interval of a speedup with the between-run part added: on the log
    scale each side's half-width and the between-run one add in quadrature (the two
    are independent)."""
    if interval is None:
        return None
    between = z_score(confidence) * sigma
    low = math.log(speedup) - math.hypot(math.log(speedup) - math.log(interval[0]), between)
    high = math.log(speedup) + math.hypot(math.log(interval[1]) - math.log(speedup), between)
    return math.exp(low), math.exp(high)


# ---- calibration: the spreads from repeated runs ----

def one_run_interval(metrics: dict) -> list[float] | None:
    """A record's interval from its own rounds: `speedup_ci_one_run`, or `speedup_ci` in a
    record from before the between-run part (which has no `run_to_run`)."""
    return metrics.get("speedup_ci_one_run") or (
        None if metrics.get("run_to_run") else metrics.get("speedup_ci"))


def one_run_sd(metrics: dict) -> float | None:
    """The standard deviation of a cell's log speedup within its run, from its one-run
    interval (its width on the log scale over two z-scores)."""
    interval = one_run_interval(metrics)
    if not interval:
        return None
    return (math.log(interval[1]) - math.log(interval[0])) / (2 * z_score())


def paired_cells(first: list[dict], second: list[dict]) -> list[tuple[str, float, float]]:
    """(class, log ratio of the two speedups, the one-run variances summed) of every
    cell both runs measured with an interval."""
    from conformance.latency.summary import measured_cells

    before, after = measured_cells(first), measured_cells(second)
    found = []
    for (case, target), one in sorted(before.items()):
        other = after.get((case, target))
        sds = (one_run_sd(one), one_run_sd(other)) if other else (None, None)
        if None in sds:
            continue
        found.append((cell_class(target, one["median_s"]),
                      math.log(one["speedup"] / other["speedup"]), sds[0] ** 2 + sds[1] ** 2))
    return found


def calibrate(runs: list[list[dict]]) -> dict:
    """The spreads from two or more runs of one build. For each class, over every pair
    of runs and every cell both measured, the log ratio z of the two speedups has
    variance w (what the runs' own intervals explain) + 2 sigma^2 (each run brings its
    share). sigma is the smallest value with which 95% of those cells agree: |z| within
    z95 * sqrt(w + 2 sigma^2), the test of the agreement command and the gate. Not a
    mean of squares: the moves between runs are not normal (a case's cells move
    together, by 7 to 10% for resnet18 here, while most cases stay within 2%), and a
    spread fitted to their variance left one cell in ten disagreeing where the
    intervals promise one in twenty."""
    per_class: dict[str, list[tuple[float, float]]] = {}
    for first, second in itertools.combinations(runs, 2):
        for name, log_ratio, within in paired_cells(first, second):
            per_class.setdefault(name, []).append((log_ratio, within))
    sigma = {name: round(math.sqrt(between_variance(pairs)), 4)
             for name, pairs in sorted(per_class.items())}
    return {"sigma": sigma, "cells": {name: len(pairs) for name, pairs in per_class.items()}}


def between_variance(pairs: list[tuple[float, float]],
                     confidence: float = latency_stats.CONFIDENCE) -> float:
    """sigma^2 with which a `confidence` share of the (z, w) pairs agree: each pair's
    own need, (z^2 / z_conf^2 - w) / 2 (0 when its one-run intervals already cover it),
    at the `confidence` quantile of the pairs."""
    critical = z_score(confidence) ** 2
    needs = [max(0.0, (z * z / critical - w) / 2) for z, w in pairs]
    return latency_stats.quantile(needs, confidence)


def provenance(runs: list[list[dict]], files: list[Path]) -> dict:
    """What the calibration rests on: each run's file name, first record's time and
    count of measured cells, the versions, budget and allocator of the first run, and
    the processor the calibration ran on (the runs' own, when run where they were)."""
    from conformance.latency.summary import measured_cells

    firsts = [next((r for r in run if r.get("check") == "latency"), {}) for run in runs]
    return {"runs": [{"file": file.name, "started": first.get("time"),
                      "cells": len(measured_cells(run))}
                     for file, first, run in zip(files, firsts, runs)],
            "versions": firsts[0].get("versions"), "budget": firsts[0].get("budget"),
            "allocator": firsts[0].get("allocator"),
            "processor": processor_name(), "cores": os.cpu_count()}


def processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    from conformance.records import read_records

    parser = argparse.ArgumentParser(description="Measure how far speedups move between "
                                     "runs of one build, per class of latency cell, from "
                                     "the records of two or more latency runs")
    parser.add_argument("records", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the spreads here (JSON), for "
                        "--latency-run-to-run; default: print them")
    args = parser.parse_args(argv)
    if len(args.records) < 2:
        parser.error("give the records of at least two runs")
    runs = [read_records(path) for path in args.records]
    found = calibrate(runs)
    if not found["sigma"]:
        print("no cell was measured, with an interval, in two of these runs")
        return 2
    data = {"sigma": found["sigma"],
            "measured": {"cells": found["cells"], **provenance(runs, args.records)}}
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
