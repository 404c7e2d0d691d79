"""Latency of a (case, target) against eager, measured interleaved in one run.

Eager and the target take turns, one call each, round after round (the order
alternating), so that whatever else the machine does slows both alike and the
ratio of their medians, the speedup, stays put between runs. Warm-up calls come
first and are never timed: TorchScript's profiling executor optimizes a graph
only after its first runs, and torch.compile compiles in its first call. Only
the call itself is inside the timed region; the libtorch harness times its
calls in C++, so no Python and no file transfer are in its samples.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

from conformance.calling import split
from conformance.checks.subject import Subject
from conformance.latency import run_to_run
from conformance.latency import stats as latency_stats
from conformance.latency.run_to_run import Spreads
from conformance.targets import compile_timing, path_row

# Runtimes with no latency cell, and why: their speed is not what they are for.
NOT_TIMED = {
    "aot_eager": "a diagnostic backend: the captured graphs on eager kernels",
    "onnx-reference": "a pure-numpy oracle for correctness, not a deployment runtime",
}
EAGER_PATH = "eager"


class NotBenchmarked(Exception):
    """The cell is not timed: its artifact does not compute what eager computes."""


@dataclasses.dataclass(frozen=True)
class Method:
    warmup: int = 10  # untimed calls per side before the first sample
    min_rounds: int = 15
    max_rounds: int = 300
    max_time_s: float = 2.0  # time per side the rounds aim at, within the bounds above

    def rounds_for(self, per_call_s: float) -> int:
        wanted = math.ceil(self.max_time_s / max(per_call_s, 1e-9))
        return max(self.min_rounds, min(self.max_rounds, wanted))

    def describe(self) -> dict:
        return dataclasses.asdict(self)


class PythonSide:
    """A callable in this process: one clock pair around each call, in inference mode."""

    def __init__(self, fn: Callable, inputs: tuple, context: Callable, device: str,
                 keywords: tuple[str, ...] = ()):
        self.fn, self.context = fn, context
        self.args, self.kwargs = split(inputs, keywords)
        self.cuda = device == "cuda"

    def samples(self, count: int) -> list[float]:
        import torch

        taken = []
        with torch.inference_mode(), self.context():
            for _ in range(count):
                started = time.perf_counter()
                self.fn(*self.args, **self.kwargs)
                if self.cuda:
                    torch.cuda.synchronize()
                taken.append(time.perf_counter() - started)
        return taken


class HarnessSide:
    """A model loaded in the libtorch harness, which times its own calls in C++; the
    case's context sets the quantized engine that each request hands the harness."""

    def __init__(self, model, inputs: tuple, context: Callable, keywords: tuple[str, ...] = ()):
        self.model, self.inputs, self.context, self.keywords = model, inputs, context, keywords

    def samples(self, count: int) -> list[float]:
        with self.context():
            return self.model.time(self.inputs, warmup=0, runs=count, keywords=self.keywords)


def interleaved(eager, other, method: Method) -> tuple[list[float], list[float]]:
    """Samples of eager and of the other side, taken in alternating turns."""
    eager.samples(method.warmup)
    other.samples(method.warmup)
    first_eager, first_other = eager.samples(1), other.samples(1)
    rounds = method.rounds_for(max(first_eager[0], first_other[0]))
    eager_samples, other_samples = first_eager, first_other
    for turn in range(rounds - 1):
        sides = ((other, other_samples), (eager, eager_samples))
        for side, samples in (sides if turn % 2 == 0 else sides[::-1]):
            samples.extend(side.samples(1))
    return eager_samples, other_samples


def alone(side, method: Method) -> list[float]:
    side.samples(method.warmup)
    first = side.samples(1)
    return first + side.samples(method.rounds_for(first[0]) - 1)


def eager_side(subject: Subject) -> PythonSide:
    state = subject.state
    return PythonSide(state.model, state.example, state.context, state.device, state.keywords)


def target_side(subject: Subject):
    from conformance.runtimes.libtorch import LibtorchModel

    loaded, state = subject.loaded, subject.state
    if isinstance(loaded, LibtorchModel):
        return HarnessSide(loaded, state.example, state.context, state.keywords)
    return PythonSide(loaded, state.example, state.context, state.device, state.keywords)


def ensure_correct(subject: Subject, expected_failure: str | None) -> None:
    """A wrong result is never benchmarked: the example must match eager first.

    Raises NotBenchmarked when the outputs differ (or an expectation row says they
    do); an artifact that cannot be made or run raises matches_eager's CheckFailure,
    a failure of the latency cell as of the conformance cell.
    """
    from conformance.checks.catalog import CheckFailure, matches_eager

    if subject.target.path == EAGER_PATH:
        return
    if expected_failure:
        raise NotBenchmarked(f"not benchmarked: matches_eager is an expected failure here "
                             f"({expected_failure})")
    try:
        # the cell is skipped, not failed: where the artifact diverges is the conformance
        # cell's to say
        matches_eager(dataclasses.replace(subject, localise="never")
                      if dataclasses.is_dataclass(subject) else subject)
    except CheckFailure as failure:
        if not failure.metrics:  # nothing was compared: the artifact did not run
            raise
        first = str(failure).splitlines()
        raise NotBenchmarked("not benchmarked: the artifact does not match eager: "
                             + " / ".join(line.strip() for line in first[:3])) from None


def measure(subject: Subject, method: Method, spreads: Spreads | None = None) -> dict:
    """Samples, their statistics and the speedup over eager, with the cold costs; the
    speedup's interval includes the between-run spread of the cell's class in `spreads`
    (none without). Call `ensure_correct` first."""
    if subject.target.path == EAGER_PATH:
        subject.state.eager("example", subject.state.example)  # the timed first call
        eager = alone(eager_side(subject), method)
        return {**timing_metrics(eager, eager, compared=False), **cold_costs(subject)}
    eager, other = interleaved(eager_side(subject), target_side(subject), method)
    metrics = timing_metrics(eager, other)
    return {**metrics, **between_runs(metrics, subject.target.id, spreads),
            **cold_costs(subject)}


def between_runs(metrics: dict, target: str, spreads: Spreads | None) -> dict:
    """The speedup's interval with the between-run part of its class (run_to_run.py
    says why one run's samples cannot show it), the one-run interval beside it, and
    which spread was added."""
    if spreads is None or metrics["speedup_ci"] is None:
        return {}
    name, sigma = spreads.of(target, metrics["median_s"])
    widened = run_to_run.widen(metrics["speedup"], metrics["speedup_ci"], sigma)
    return {"speedup_ci": list(widened), "speedup_ci_one_run": metrics["speedup_ci"],
            "run_to_run": spreads.describe(name)}


def timing_metrics(eager: list[float], other: list[float], compared: bool = True) -> dict:
    """Statistics of the target's samples, its speedup over eager with a confidence
    interval from this run's rounds, and the raw samples of both sides. Samples are
    kept to the nanosecond, which is what the clocks resolve, and every figure comes
    from the samples as kept: the record recomputes to itself, and pytest-benchmark, fed
    the same samples, shows the same median and IQR.

    Eager's own cell (`compared=False`) has speedup 1 and no interval: its samples are
    compared with themselves, and an interval [1, 1] would read as a measurement with
    no noise at all."""
    eager_kept = [round(s, 9) for s in eager]
    other_kept = [round(s, 9) for s in other]
    interval = latency_stats.speedup_interval(eager_kept, other_kept) if compared else None
    return {**latency_stats.summarize(other_kept),
            "speedup": latency_stats.speedup(eager_kept, other_kept),
            "speedup_ci": list(interval) if interval else None,
            "confidence": latency_stats.CONFIDENCE if interval else None,
            "eager_median_s": latency_stats.median(eager_kept),
            "samples_s": other_kept, "eager_samples_s": eager_kept}


def cold_costs(subject: Subject) -> dict:
    """What comes before the steady state: making, loading and first running the artifact."""
    timings, target = subject.state.timings, subject.target
    if target.path == EAGER_PATH:
        return {"build_s": timings.get("build_s"), "first_call_s": timings.get("eager_s")}
    if not path_row(target.path).saves_file:  # compiled lazily: the first call compiles
        compiled = timings.get(compile_timing(target))
        return {"compile_s": compiled, "first_call_s": compiled}
    artifact = subject.artifact
    return {"export_s": artifact.export_seconds or None, "export_cached": artifact.cached,
            "load_s": timings.get(f"load_{target.path_id}_{target.runtime}_s"),
            # what the runtime made of the artifact before its first load (an offline
            # optimization): next to nothing when an earlier run made it
            "prepare_s": timings.get(f"prepare_{target.path_id}_{target.runtime}_s"),
            "first_call_s": timings.get(f"run_{target.path_id}_{target.runtime}_s")}
