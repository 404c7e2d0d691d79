"""Run history: every run's records in one SQLite database.

A run is stored once, by its identity (the `run` its records carry): reporting the same
records again, or the run merged with a rerun of some of its cells, replaces its records
and keeps its place. It is stored with its environment (the versions of the stack, the
machine, the thread budget, the selection of cells) and a comparability key made of
them, and with whether it was accepted: a run whose gate passed (or that was accepted by
hand) is the baseline of the next runs with the same key. So tonight's torch 2.14.1 run
is compared with the last accepted torch 2.14.1 nightly, not with a tox environment of
another torch version, not with a red run, and not with itself.
"""
from __future__ import annotations

import collections
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
CREATE TABLE IF NOT EXISTS verdicts (
    run_id INTEGER PRIMARY KEY REFERENCES runs(id),
    identity TEXT NOT NULL UNIQUE,
    accepted INTEGER NOT NULL DEFAULT 0,
    gate TEXT NOT NULL DEFAULT '[]'
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
    """The environment of a run, as its records give it: the versions, the thread budget
    and the selection of cells (that of most records: a rerun's session selects fewer)."""
    versions = next((r.get("versions") for r in records if r.get("versions")), {}) or {}
    selections = collections.Counter(json.dumps(r.get("selection"), sort_keys=True)
                                     for r in records if r.get("selection"))
    chosen = json.loads(selections.most_common(1)[0][0]) if selections else None
    return {"versions": versions, "budget": run_budget(records), "selection": chosen}


def comparable_key(env: dict) -> str:
    versions = env.get("versions", {})
    parts = {k: versions.get(k) for k in COMPARABLE} | {"budget": env.get("budget")}
    if env.get("selection"):
        parts["selection"] = env["selection"]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def identity(records: list[dict]) -> str:
    """Which run these records are: the runs they name, on this stack (one CI run id can
    cover a tox matrix, a GPU job, a latency job); records that name none (written before
    runs were named) are known by their content."""
    runs = sorted({r["run"] for r in records if r.get("run")})
    stack = comparable_key(environment(records))
    if runs and all(r.get("run") for r in records):
        return f"run:{'+'.join(runs)}@{stack}"
    lines = sorted(json.dumps(r, sort_keys=True, default=str) for r in records)
    return "content:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def connect(file: Path) -> sqlite3.Connection:
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(file)
    db.executescript(SCHEMA)
    with db:  # a history kept before verdicts were: each of its runs was a baseline
        db.execute("INSERT INTO verdicts (run_id, identity, accepted) SELECT id, "
                   "'stored:' || id, 1 FROM runs WHERE id NOT IN (SELECT run_id FROM verdicts)")
    return db


def store(db: sqlite3.Connection, records: list[dict], label: str = "") -> int:
    """Store a run, or replace the records of the run it already is; its id. Records are
    keyed by node id: a run holds one per cell."""
    env, known = environment(records), identity(records)
    found = db.execute("SELECT run_id FROM verdicts WHERE identity = ?", (known,)).fetchone()
    with db:
        if found:
            run_id = found[0]
            db.execute("DELETE FROM records WHERE run_id = ?", (run_id,))
            db.execute("UPDATE runs SET comparable = ?, environment = ? WHERE id = ?",
                       (comparable_key(env), json.dumps(env), run_id))
        else:
            run_id = db.execute(
                "INSERT INTO runs (stored, label, comparable, environment) VALUES (?, ?, ?, ?)",
                (time.strftime("%Y-%m-%dT%H:%M:%S%z"), label, comparable_key(env),
                 json.dumps(env))).lastrowid
            db.execute("INSERT INTO verdicts (run_id, identity) VALUES (?, ?)", (run_id, known))
        db.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(run_id, r["nodeid"], r["case"], r["target"], r["check"], r["outcome"],
                         json.dumps(r, sort_keys=True)) for r in records])
    return run_id


def judge(db: sqlite3.Connection, run_id: int, gate: list[str], accept: bool = False) -> bool:
    """Keep the gate's verdict of a run: accepted (a baseline for later runs) when it
    passed, or when accepted by hand, now or by an earlier report of the same run (a
    retried report step does not take it back). Whether it is accepted."""
    before = db.execute("SELECT accepted, gate FROM verdicts WHERE run_id = ?",
                        (run_id,)).fetchone()
    by_hand = bool(before and before[0] and json.loads(before[1]))
    accepted = accept or not gate or by_hand
    with db:
        db.execute("UPDATE verdicts SET accepted = ?, gate = ? WHERE run_id = ?",
                   (int(accepted), json.dumps(gate), run_id))
    return accepted


def baseline(db: sqlite3.Connection, run_id: int) -> int | None:
    """The latest accepted run stored before `run_id` with the same comparability key."""
    row = db.execute("SELECT comparable FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        raise KeyError(f"no run {run_id} in the history")
    found = db.execute("SELECT runs.id FROM runs JOIN verdicts ON verdicts.run_id = runs.id "
                       "WHERE comparable = ? AND runs.id < ? AND accepted = 1 "
                       "ORDER BY runs.id DESC LIMIT 1", (row[0], run_id)).fetchone()
    return found[0] if found else None


def records_of(db: sqlite3.Connection, run_id: int) -> list[dict]:
    rows = db.execute("SELECT record FROM records WHERE run_id = ? ORDER BY rowid", (run_id,))
    return [json.loads(text) for (text,) in rows]


def trend(db: sqlite3.Connection, run_id: int, summarize, limit: int = 30) -> list[dict]:
    """The last `limit` runs of this run's stack up to it, oldest first, each as
    `summarize(records)` makes it, with its id, label, when it was stored and whether it
    was accepted."""
    comparable = db.execute("SELECT comparable FROM runs WHERE id = ?", (run_id,)).fetchone()
    rows = db.execute("SELECT runs.id, stored, label, accepted FROM runs JOIN verdicts ON "
                      "verdicts.run_id = runs.id WHERE comparable = ? AND runs.id <= ? "
                      "ORDER BY runs.id DESC LIMIT ?", (comparable[0], run_id, limit)).fetchall()
    return [{"run": run, "stored": stored, "label": label, "accepted": bool(accepted),
             **summarize(records_of(db, run))} for run, stored, label, accepted in reversed(rows)]
