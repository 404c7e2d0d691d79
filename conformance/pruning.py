"""Pruning the artifact cache: every key a changed model, exporter or stack leaves
behind stays on disk until something removes it (a year of nightly runs keeps every
export of every case the code ever made).

A run that reuses an artifact, or an export failure kept for its key, marks it used by
touching the facts kept beside it; pruning removes each artifact, with its facts, kept
failure and lock, that no run has used for the given number of days:

    python -m conformance.pruning --unused-days 14 [--artifacts-dir DIR] [--dry-run]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

# What the cache keeps beside an artifact, longest first: "x.onnx.failed.json" is a
# kept failure of "x.onnx", not the facts of "x.onnx.failed".
SIDECARS = (".failed.json", ".json", ".lock")
DAY_S = 86400.0


@dataclasses.dataclass
class Entry:
    """One key's files in the cache: the artifact (a file or a folder) and its sidecars."""
    artifact: Path
    files: list[Path]

    def last_used(self) -> float:
        return max(f.stat().st_mtime for f in self.files)

    def size(self) -> int:
        return sum(_size(f) for f in self.files)


def mark_used(artifact: Path) -> None:
    """Say that a run reused the artifact, or the failure kept for its key: the time of
    the sidecars beside it is the key's last use."""
    for suffix in (".json", ".failed.json"):
        try:
            os.utime(artifact.with_name(artifact.name + suffix))
        except OSError:  # none of that kind, or a read-only cache (never pruned)
            pass


def entries(directory: Path) -> list[Entry]:
    """The keys in an artifact cache: one folder per case, its files named by key."""
    grouped: dict[Path, list[Path]] = {}
    for file in sorted(Path(directory).glob("*/*")):
        grouped.setdefault(_artifact_of(file), []).append(file)
    return [Entry(artifact, files) for artifact, files in grouped.items()]


def _artifact_of(file: Path) -> Path:
    name = file.name
    if name.startswith(".") and name.endswith(".partial"):  # a write under way or cut short
        name = name[1:].rsplit(".", 2)[0]
    for suffix in SIDECARS:
        if name.endswith(suffix):
            return file.with_name(name[:-len(suffix)])
    return file.with_name(name)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def _remove(entry: Entry) -> None:
    from conformance.exporters.artifact import remove_artifact

    for file in entry.files:
        remove_artifact(file)


@dataclasses.dataclass
class Pruned:
    removed: list[Entry]  # the keys unused for the days given (left in place by a dry run)
    kept: list[Entry]
    freed: int  # the bytes of the removed keys


def prune(directory: Path, unused_days: float, dry_run: bool = False,
          now: float | None = None) -> Pruned:
    """Remove every key unused for `unused_days`."""
    cutoff = (time.time() if now is None else now) - unused_days * DAY_S
    removed, kept = [], []
    for entry in entries(directory):
        (removed if entry.last_used() < cutoff else kept).append(entry)
    freed = sum(entry.size() for entry in removed)  # before the files go
    if not dry_run:
        for entry in removed:
            _remove(entry)
    return Pruned(removed, kept, freed)


def main(argv: list[str] | None = None) -> int:
    from conformance.layout import default_dir

    parser = argparse.ArgumentParser(prog="python -m conformance.pruning",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts-dir", type=Path, default=default_dir())
    parser.add_argument("--unused-days", type=float, default=14.0,
                        help="remove what no run has used for this many days (default 14)")
    parser.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    args = parser.parse_args(argv)
    if args.unused_days < 0:
        parser.error("--unused-days must be at least 0")
    pruned = prune(args.artifacts_dir, args.unused_days, args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{args.artifacts_dir}: {verb} {len(pruned.removed)} artifacts unused for "
          f"{args.unused_days:g} days ({pruned.freed / 1e9:.2f} GB); kept {len(pruned.kept)} "
          f"({sum(entry.size() for entry in pruned.kept) / 1e9:.2f} GB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
