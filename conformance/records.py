"""Records: one JSON line per check, the only input reports are built from."""
from __future__ import annotations

import json
import re
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


def failure_cause(record: dict) -> str:
    """What a failed cell's message says went wrong, less the cell: one exporter error
    fails every check and runtime of its path with the same words."""
    lines = [line.strip() for line in (record.get("message") or "").splitlines() if line.strip()]
    what = re.sub(r"^case \S+, target \S+, check \S+: ", "", lines[0]) if lines else ""
    detail = lines[1] if len(lines) > 1 and not lines[1].startswith("reproduce:") else ""
    return (f"case {record['case']}, path {record['path']}: {what}"
            + (f" / {detail[:160]}" if detail else ""))
