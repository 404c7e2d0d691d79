"""Deterministic shards: `--shard K/N` keeps the cells of the cases that fall in
shard K of N. A case's cells stay together, so each shard builds a model once.

By default the assignment depends on the case name only (a hash), the same on every
machine and run, but blind to cost: one shard can draw resnet18 and r3d_18 together.
With `--shard-costs RECORDS` (the records of an earlier run of the same tier), cases are
dealt by their recorded time instead, the slowest first, each to the shard with the least
time so far (longest-processing-time scheduling), so N machines finish together; a case
the records lack counts as the median case. Every machine must be given the same records
file. pytest-split balances by recorded durations too, but test by test: it would spread a
case's cells over machines, each building and exporting the model again."""
from __future__ import annotations

import collections
import statistics
import zlib

from conformance.cell import cell_spec


class ShardError(ValueError):
    pass


def parse(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ShardError(f"--shard takes K/N (e.g. 1/2), got {text!r}") from None
    if not 1 <= index <= count:
        raise ShardError(f"--shard {text}: K must be between 1 and N")
    return index, count


def shard_of(case: str, count: int) -> int:
    """The shard, 1 to `count`, that a case belongs to."""
    return zlib.crc32(case.encode()) % count + 1


def case_costs(records: list[dict]) -> dict[str, float]:
    """Each case's recorded time: its cells' `duration_s` summed."""
    costs: dict[str, float] = collections.defaultdict(float)
    for record in records:
        costs[record["case"]] += record.get("duration_s") or 0.0
    return dict(costs)


def balanced(cases: list[str], costs: dict[str, float], count: int) -> dict[str, int]:
    """Each case's shard, 1 to `count`: the slowest case first, each to the shard with the
    least time so far (ties to the lowest shard); a case without a cost counts as the
    median one."""
    known = [costs[case] for case in cases if case in costs]
    fallback = statistics.median(known) if known else 1.0
    totals = [0.0] * count
    assigned = {}
    for case in sorted(set(cases), key=lambda c: (-costs.get(c, fallback), c)):
        shard = min(range(count), key=lambda i: (totals[i], i))
        assigned[case] = shard + 1
        totals[shard] += costs.get(case, fallback)
    return assigned


def outside(items: list, index: int, count: int,
            costs: dict[str, float] | None = None) -> list:
    """The items of cells, of any plugin, whose case is in another shard."""
    specs = [(item, cell_spec(item)) for item in items]
    cases = [spec.case for _, spec in specs if spec]
    shard = balanced(cases, costs, count) if costs is not None else \
        {case: shard_of(case, count) for case in cases}
    return [item for item, spec in specs if spec and shard[spec.case] != index]
