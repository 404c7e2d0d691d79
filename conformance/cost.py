"""Where a run's time goes: the time of its cells summed per case, per path and per
check, with each one's share of the whole, so the tiers' budgets stay visible as the zoo
grows. The records hold each cell's time (`duration_s`: its test's call, in which it
builds, exports and runs what it needs); the end of a run and the report list the
largest."""
from __future__ import annotations

import collections

TOP = 8  # rows per table at the end of a run


def cost_by(records: list[dict], key: str, top: int | None = None) -> list[dict]:
    """The cells' time summed per value of `key` ("case", "path", "check"), largest
    first, with its share of the total and its count of cells."""
    seconds, cells = collections.Counter(), collections.Counter()
    for record in records:
        seconds[record[key]] += record.get("duration_s") or 0.0
        cells[record[key]] += 1
    total = sum(seconds.values()) or 1.0
    return [{key: name, "seconds": spent, "share": spent / total, "cells": cells[name]}
            for name, spent in seconds.most_common(top)]


def cost_lines(records: list[dict], top: int = TOP) -> list[str]:
    """The slowest cases and paths as text, for the end of a run."""
    total = sum(r.get("duration_s") or 0.0 for r in records)
    lines = [f"{total:.0f} s of cell time in {len(records)} cells (under pytest-xdist, "
             f"summed over the workers)"]
    for key in ("case", "path"):
        lines.append(f"slowest {key}s: " + ", ".join(
            f"{row[key]} {row['seconds']:.0f} s ({row['share']:.0%})"
            for row in cost_by(records, key, top)))
    return lines
