"""Records: one JSON line per check, the only input reports are built from."""
from __future__ import annotations

import json
import time
from pathlib import Path

from conformance.versions import versions


class RecordWriter:
    """Writes records to a JSON-lines file, emptied at the first record of a run.

    A run that checks nothing (the self-tests, `--help`) leaves the file alone.
    """

    def __init__(self, file: Path):
        self.file = Path(file)
        self.count = 0

    def write(self, record: dict) -> None:
        if self.count == 0:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.write_text("")
        with self.file.open("a") as handle:
            handle.write(json.dumps(record, default=str, sort_keys=True) + "\n")
        self.count += 1


def make_record(cell: dict, outcome: str, duration_s: float, message: str = "") -> dict:
    """A record from a cell's data (case, target, check, metrics, timings) and its outcome."""
    return {
        **cell,
        "outcome": outcome,
        "message": message,
        "duration_s": round(duration_s, 6),
        "versions": versions(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_records(file: Path) -> list[dict]:
    return [json.loads(line) for line in Path(file).read_text().splitlines() if line.strip()]
