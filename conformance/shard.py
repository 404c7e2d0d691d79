"""Deterministic shards: `--shard K/N` keeps the cells of the cases that fall in
shard K of N. A case's cells stay together, so each shard builds a model once; the
assignment depends on the case name only, the same on every machine and run."""
from __future__ import annotations

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


def outside(items: list, index: int, count: int) -> list:
    """The items of cells, of any plugin, whose case is in another shard."""
    specs = ((item, cell_spec(item)) for item in items)
    return [item for item, spec in specs if spec and shard_of(spec.case, count) != index]
