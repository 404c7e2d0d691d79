"""Statistics of latency samples: order statistics only, robust to the outliers
that a shared machine adds (a sample that met a page fault or a context switch),
and bootstrap intervals for the ratios the suite reports and gates on.

Quartiles follow pytest-benchmark's definition (its `Stats.q1`/`q3`), so the suite's
table and pytest-benchmark's show the same IQR for the same samples. scipy is imported
only when an interval is computed: a conformance run never needs it.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

# A percentile is reported only when enough samples lie beyond it to mean something:
# p90 from 10 samples (one beyond it), p99 from 100.
PERCENTILE_MIN_SAMPLES = {90: 10, 99: 100}
# IQR / median above this marks a measurement as unstable in the table.
UNSTABLE_SPREAD = 0.10

# The bootstrap behind every interval. The percentile method, not BCa: BCa's
# acceleration comes from a jackknife, which is not consistent for a median (deleting
# one sample moves it by at most one order statistic), and the percentile interval
# needs no more than the resampled ratios. With 2000 resamples an end of a 95%
# interval moves by about 1% of the interval's width from one seed to another, and a
# cell's interval costs about 20 ms at 300 pairs (2 cores). A fixed seed makes a
# record's interval reproducible from its samples.
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(samples: Sequence[float]) -> float:
    """The median as pytest-benchmark computes it (statistics.median)."""
    if not samples:
        raise ValueError("no samples")
    return statistics.median(samples)


def quartiles(samples: Sequence[float]) -> tuple[float, float]:
    """(q1, q3) as pytest_benchmark.stats.Stats computes them, so that both tables show
    one IQR: with an even count the medians of the lower and upper halves (Wikipedia's
    "method 2"), with an odd count a weighted mean of the order statistics around the
    quarter points ("method 3"), and the sample itself when there is one."""
    data = sorted(samples)
    count = len(data)
    if count == 0:
        raise ValueError("no samples")
    if count == 1:
        return data[0], data[0]
    if count % 2 == 0:
        return statistics.median(data[:count // 2]), statistics.median(data[count // 2:])
    n, remainder = divmod(count, 4)
    if remainder == 1:
        return (0.25 * data[n - 1] + 0.75 * data[n],
                0.75 * data[3 * n] + 0.25 * data[3 * n + 1])
    return (0.75 * data[n] + 0.25 * data[n + 1],
            0.25 * data[3 * n + 1] + 0.75 * data[3 * n + 2])


def summarize(samples: Sequence[float]) -> dict:
    """Median, quartiles, the percentiles the count supports, and the spread."""
    middle = median(samples)
    q1, q3 = quartiles(samples)
    summary = {"n": len(samples), "min_s": min(samples), "median_s": middle,
               "q1_s": q1, "q3_s": q3,
               "iqr_over_median": (q3 - q1) / middle if middle > 0 else math.inf}
    for percentile, needed in PERCENTILE_MIN_SAMPLES.items():
        summary[f"p{percentile}_s"] = (quantile(samples, percentile / 100)
                                       if len(samples) >= needed else None)
    summary["unstable"] = summary["iqr_over_median"] > UNSTABLE_SPREAD
    return summary


def speedup(eager: Sequence[float], other: Sequence[float]) -> float:
    """How many times faster than eager: the ratio of medians."""
    return median(eager) / median(other)


def _ratio_of_medians(eager, other, axis=-1):
    import numpy as np

    return np.median(eager, axis=axis) / np.median(other, axis=axis)


def _bootstrap(eager: Sequence[float], other: Sequence[float], rng, confidence: float,
               resamples: int):
    """scipy's paired bootstrap of the speedup: a resample draws rounds, and a round
    brings both of its samples, eager's and the target's, taken side by side. Pairing
    keeps what the interleaving cancels (a slow spell of the machine slows both samples
    of its rounds) out of the interval."""
    from scipy.stats import bootstrap

    return bootstrap((eager, other), _ratio_of_medians, paired=True, vectorized=True,
                     n_resamples=resamples, confidence_level=confidence,
                     method="percentile", rng=rng)


def _pairs(eager: Sequence[float] | None, other: Sequence[float] | None) -> bool:
    """Whether the samples can be bootstrapped: two rounds or more, in pairs."""
    return bool(eager) and bool(other) and len(eager) == len(other) >= 2


def speedup_interval(eager: Sequence[float], other: Sequence[float],
                     confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                     seed: int = SEED) -> tuple[float, float] | None:
    """A `confidence` interval of the speedup, from the paired rounds of one cell;
    None when there are fewer than two rounds (or the sides do not pair up)."""
    import numpy as np

    if not _pairs(eager, other):
        return None
    result = _bootstrap(eager, other, np.random.default_rng(seed), confidence, resamples)
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def slowdown_interval(baseline: tuple[Sequence[float], Sequence[float]],
                      now: tuple[Sequence[float], Sequence[float]],
                      confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                      seed: int = SEED, between_sd: float = 0.0
                      ) -> tuple[float, float] | None:
    """A `confidence` interval of the slowdown, baseline speedup / new speedup - 1 in
    percent, from each run's (eager, target) rounds; None when either run has fewer
    than two rounds. The runs are independent, so each is resampled on its own (rounds
    of one run pair with nothing in the other), from one generator: its second draw
    picks other rounds than its first, even when both runs have the same count.
    `between_sd`, the standard deviation of the log of the ratio that comes from the
    runs being different runs (latency/run_to_run.py), is added to each resample as a
    normal draw: the resamples then spread as a run's rounds and the runs both do."""
    import numpy as np

    if not (_pairs(*baseline) and _pairs(*now)):
        return None
    rng = np.random.default_rng(seed)
    before = _bootstrap(*baseline, rng, confidence, resamples).bootstrap_distribution
    after = _bootstrap(*now, rng, confidence, resamples).bootstrap_distribution
    log_ratios = np.log(before / after)
    if between_sd > 0:
        log_ratios = log_ratios + rng.normal(0.0, between_sd, size=log_ratios.shape)
    slowdowns = np.expm1(log_ratios) * 100
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(slowdowns, [tail, 100 - tail])
    return float(low), float(high)


def geometric_mean(values: Sequence[float]) -> float | None:
    """The mean of ratios: 2x faster and 2x slower average to 1x."""
    positive = [v for v in values if v and v > 0]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))
