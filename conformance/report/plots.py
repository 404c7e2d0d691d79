"""Inline SVG drawings for the report: the page stays one file that works offline, and a
line or a box is a few elements, so no plotting library (and no script) is needed.

`sparkline` draws one series over the history (a pass rate, a speedup), `box_pair` the
distribution of a latency cell's samples beside eager's on one axis."""
from __future__ import annotations

import html
import math

LINE = "#1e88e5"
EAGER = "#9e9e9e"


def sparkline(values: list[float | None], width: int = 120, height: int = 24,
              low: float | None = None, high: float | None = None, label: str = "") -> str:
    """The series as a line, oldest left, its last point marked; a run without a value
    (the target absent that night) leaves a gap. `low`/`high` fix the scale (a pass rate:
    0 to 1); else it spans the values."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    low = min(known) if low is None else low
    high = max(known) if high is None else high
    span = (high - low) or 1.0
    step = (width - 6) / max(len(values) - 1, 1)
    points = [(3 + i * step, height - 3 - (v - low) / span * (height - 6))
              if v is not None else None for i, v in enumerate(values)]
    paths, current = [], []
    for point in points + [None]:
        if point is None:
            if current:
                paths.append(current)
            current = []
        else:
            current.append(point)
    lines = "".join(f"<polyline fill='none' stroke='{LINE}' stroke-width='1.5' points='"
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in path) + "'/>" for path in paths)
    last = next(p for p in reversed(points) if p is not None)
    title = html.escape(label or ", ".join("-" if v is None else f"{v:.3g}" for v in values))
    return (f"<svg class='spark' width='{width}' height='{height}' role='img' "
            f"aria-label='{title}'><title>{title}</title>{lines}"
            f"<circle cx='{last[0]:.1f}' cy='{last[1]:.1f}' r='2.5' fill='{LINE}'/></svg>")


def five_numbers(samples: list[float]) -> list[float]:
    """min, first quartile, median, third quartile, max."""
    from conformance.latency.stats import quantile

    return [quantile(samples, q) for q in (0.0, 0.25, 0.5, 0.75, 1.0)]


def box_pair(target: list[float], eager: list[float], width: int = 160,
             height: int = 26) -> str:
    """Two box plots on one logarithmic axis: the target's samples (blue) above eager's
    (grey), whiskers from the fastest to the slowest sample."""
    if not target or not eager:
        return ""
    # a sample of 0 s (a clock's resolution) on a logarithmic axis: the smallest time kept
    boxes = [[max(v, 1e-9) for v in five_numbers(samples)] for samples in (target, eager)]
    low = math.log(min(b[0] for b in boxes))
    high = math.log(max(b[4] for b in boxes))
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return 2 + (math.log(value) - low) / span * (width - 4)
    parts = [_box(numbers, x, top, colour) for numbers, top, colour in
             ((boxes[0], 2, LINE), (boxes[1], height / 2 + 1, EAGER))]
    title = html.escape(f"median {boxes[0][2] * 1e3:.3f} ms, eager {boxes[1][2] * 1e3:.3f} ms;"
                        f" whiskers: fastest to slowest sample")
    return (f"<svg class='box' width='{width}' height='{height}' role='img' "
            f"aria-label='{title}'><title>{title}</title>{''.join(parts)}</svg>")


def _box(numbers: list[float], x, top: float, colour: str) -> str:
    lo, q1, median, q3, hi = (x(v) for v in numbers)
    size = 10
    middle = top + size / 2
    return (f"<line x1='{lo:.1f}' x2='{hi:.1f}' y1='{middle:.1f}' y2='{middle:.1f}' "
            f"stroke='{colour}'/><rect x='{q1:.1f}' y='{top:.1f}' width='{max(q3 - q1, 1):.1f}' "
            f"height='{size}' fill='{colour}' fill-opacity='0.35' stroke='{colour}'/>"
            f"<line x1='{median:.1f}' x2='{median:.1f}' y1='{top:.1f}' y2='{top + size:.1f}' "
            f"stroke='{colour}' stroke-width='2'/>")
