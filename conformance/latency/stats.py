"""Statistics of latency samples: order statistics only, robust to the outliers
that a shared machine adds (a sample that met a page fault or a context switch)."""
from __future__ import annotations

import math
from typing import Sequence

# A percentile is reported only when enough samples lie beyond it to mean something:
# p90 from 10 samples (one beyond it), p99 from 100.
PERCENTILE_MIN_SAMPLES = {90: 10, 99: 100}
# IQR / median above this marks a measurement as unstable in the table.
UNSTABLE_SPREAD = 0.10


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: Sequence[float]) -> dict:
    """Median, quartiles, the percentiles the count supports, and the spread."""
    median = quantile(samples, 0.5)
    q1, q3 = quantile(samples, 0.25), quantile(samples, 0.75)
    summary = {"n": len(samples), "min_s": min(samples), "median_s": median,
               "q1_s": q1, "q3_s": q3,
               "iqr_over_median": (q3 - q1) / median if median > 0 else math.inf}
    for percentile, needed in PERCENTILE_MIN_SAMPLES.items():
        summary[f"p{percentile}_s"] = (quantile(samples, percentile / 100)
                                       if len(samples) >= needed else None)
    summary["unstable"] = summary["iqr_over_median"] > UNSTABLE_SPREAD
    return summary


def speedup(eager: Sequence[float], other: Sequence[float]) -> float:
    """How many times faster than eager: the ratio of medians."""
    return quantile(eager, 0.5) / quantile(other, 0.5)


def geometric_mean(values: Sequence[float]) -> float | None:
    """The mean of ratios: 2x faster and 2x slower average to 1x."""
    positive = [v for v in values if v and v > 0]
    if not positive:
        return None
    return math.exp(sum(math.log(v) for v in positive) / len(positive))
