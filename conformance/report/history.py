"""Run history: every run's records in one SQLite database.

A run is stored with its environment (the versions of the stack, the machine, the
thread budget) and a comparability key made of them: the report compares a run
with the latest earlier run that has the same key, so that tonight's torch 2.14.1
run is compared with last night's torch 2.14.1 run, not with a tox environment
of another torch version.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from conformance.latency.summary import run_budget

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stored TEXT NOT NULL,
    label TEXT NOT NULL,
    comparable TEXT NOT NULL,
    environment TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    nodeid TEXT NOT NULL,
    case_name TEXT NOT NULL,
    target TEXT NOT NULL,
    check_name TEXT NOT NULL,
    outcome TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (run_id, nodeid)
);
"""
# What makes two runs comparable: the same stack on the same kind of machine, and the
# same thread budget (speedups measured with 1 thread and with 4 are not comparable).
COMPARABLE = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "python",
              "compiler", "machine")


def environment(records: list[dict]) -> dict:
    """The environment of a run, as its records give it."""
    versions = next((r.get("versions") for r in records if r.get("versions")), {}) or {}
    return {"versions": versions, "budget": run_budget(records)}


def comparable_key(env: dict) -> str:
    versions = env.get("versions", {})
    parts = {k: versions.get(k) for k in COMPARABLE} | {"budget": env.get("budget")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def connect(file: Path) -> sqlite3.Connection:
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(file)
    db.executescript(SCHEMA)
    return db


def store(db: sqlite3.Connection, records: list[dict], label: str = "") -> int:
    """Store a run; its id. Records are keyed by node id: a run holds one per cell."""
    env = environment(records)
    with db:
        cursor = db.execute(
            "INSERT INTO runs (stored, label, comparable, environment) VALUES (?, ?, ?, ?)",
            (time.strftime("%Y-%m-%dT%H:%M:%S%z"), label, comparable_key(env), json.dumps(env)))
        run_id = cursor.lastrowid
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(run_id, r["nodeid"], r["case"], r["target"], r["check"], r["outcome"],
                         json.dumps(r, sort_keys=True)) for r in records])
    return run_id


def previous(db: sqlite3.Connection, run_id: int) -> int | None:
    """The latest run before `run_id` with the same comparability key."""
    row = db.execute("SELECT comparable FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise KeyError(f"no run {run_id} in the history")
    found = db.execute("SELECT id FROM runs WHERE comparable = ? AND id < ? ORDER BY id DESC "
                       "LIMIT 1", (row[0], run_id)).fetchone()
    return found[0] if found else None


def records_of(db: sqlite3.Connection, run_id: int) -> list[dict]:
    rows = db.execute("SELECT record FROM records WHERE run_id = ? ORDER BY rowid", (run_id,))
    return [json.loads(text) for (text,) in rows]

