"""Records: one JSON line per check, the only input reports are built from."""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

from conformance.stack import builds
from conformance.versions import versions

# The run a session's records belong to, when several sessions make one run: CI shards
# set it to their workflow's run; a session of its own takes a new one.
RUN_ID_VARIABLE = "CONFORMANCE_RUN_ID"


class RecordWriter:
    """Writes records to a JSON-lines file as cells finish, one complete line each (a
    live feed: `tail -f` follows a run), the file emptied at the first record of a run.

    Every record carries its `run` and its `session` (this pytest invocation). A rerun
    (`rerun=True`: pytest --lf, or --conformance-rerun) appends to the file instead, in
    the run the file holds: the report merges the two sessions, the later outcome of a
    cell winning. A session that checks nothing (the self-tests, `--help`) leaves the file
    alone."""

    def __init__(self, file: Path, rerun: bool = False):
        self.file = Path(file)
        self.count = 0
        self.rerun = rerun
        self.session = uuid.uuid4().hex[:12]
        self.run: str | None = None
        self.rerun_of: str | None = None  # the run this session reran, if it found one

    def write(self, record: dict) -> None:
        if self.count == 0:
            self._begin()
        stamped = {**record, "run": self.run, "session": self.session}
        with self.file.open("a") as handle:
            handle.write(json.dumps(stamped, default=str, sort_keys=True) + "\n")
        self.count += 1

    def _begin(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.rerun_of = run_in_file(self.file) if self.rerun else None
        self.run = self.rerun_of or os.environ.get(RUN_ID_VARIABLE) or self.session
        if not self.rerun:  # a rerun never empties the file, even one it cannot read
            self.file.write_text("")
        elif self.file.exists() and not self.file.read_bytes().endswith(b"\n"):
            with self.file.open("a") as handle:  # after a line a killed run left half written
                handle.write("\n")


def run_in_file(file: Path) -> str | None:
    """The run of a records file's last complete record, if it has one (a killed run can
    leave a last line half written)."""
    try:
        lines = Path(file).read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line).get("run")
        except ValueError:
            continue
    return None


def make_record(cell: dict, outcome: str, duration_s: float, message: str = "") -> dict:
    """A record from a cell's data (case, target, check, metrics, timings) and its outcome."""
    return {
        **cell,
        "outcome": outcome,
        "message": message,
        "duration_s": round(duration_s, 6),
        "versions": versions(),
        "builds": builds(),  # the local build tags package metadata drops (+cpu, +cu130)
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def read_records(file: Path) -> list[dict]:
    """The records of a file; a line that is no complete record (one a killed run left
    half written) is skipped, and said so on stderr."""
    import sys

    records, broken = [], 0
    for line in Path(file).read_text().splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            broken += 1
    if broken:
        print(f"{file}: skipped {broken} line(s) that are no complete record (a run killed "
              f"while writing?)", file=sys.stderr)
    return records


def failure_cause(record: dict) -> str:
    """What a failed cell's message says went wrong, less the cell: one exporter error
    fails every check and runtime of its path with the same words."""
    return f"case {record['case']}, path {record['path']}: {real_error(record)}"


# A check's headline that only says which step failed: the real error is the next line.
STEP_ONLY = ("the path could not export the model",)
RAISED = re.compile(r" raised [\w.]+$")


def headline_and_details(record: dict) -> tuple[str, list[str]]:
    """A failure message's headline (less `case ..., target ..., check ...: `) and the
    lines after it, without the reproduce line."""
    lines = [line.strip() for line in (record.get("message") or "").splitlines() if line.strip()]
    if not lines:
        return "", []
    headline = re.sub(r"^case \S+, target \S+, check \S+: ", "", lines[0])
    return headline, [line for line in lines[1:] if not line.startswith("reproduce:")]


def real_error(record: dict) -> str:
    """The line that says what went wrong: the headline, unless it only names the step
    that failed (an export, a call that raised), then with the error beneath it."""
    headline, details = headline_and_details(record)
    if details and headline in STEP_ONLY:
        return details[0][:300]
    if details and RAISED.search(headline):
        return f"{headline}: {details[0][:300]}"
    return headline or "(no message)"


def reproduce_line(record: dict) -> str:
    """The command a failure message gives to reproduce the cell."""
    for line in (record.get("message") or "").splitlines():
        if line.strip().startswith("reproduce:"):
            return line.strip()[len("reproduce:"):].strip()
    return ""
