"""What a report shows, computed from records alone: the matrix of outcomes, pass
rates, export and compile times, latency, the environment. The HTML page, the
Markdown summary and the JSON report are three renderings of this one summary.
"""
from __future__ import annotations

import collections

from conformance.cost import cost_by
from conformance.exporters.table import PATHS
from conformance.latency import profile as latency_profile
from conformance.latency import summary as latency_summary
from conformance.records import RUN_ID_VARIABLE
from conformance.report.causes import failure_groups
from conformance.report.history import environment

# Worst first: a cell of the grid takes the worst outcome of its checks.
SEVERITY = ("error", "failed", "xpassed", "xfailed", "passed", "skipped")
# The timings each export path's row names as its cost.
COST_TIMINGS = {key: label for row in PATHS.values() for key, label in row.cost_timings.items()}


class MergeConflict(Exception):
    """Two record files disagree about the same cell."""


def merge(record_sets: list[list[dict]]) -> list[dict]:
    """Records of several processes, shards or sessions as one run: one record per cell.

    A cell found again in a later session of the same run (a rerun: pytest --lf, a
    retried shard) takes the later outcome, and its record lists the earlier ones under
    `earlier`. A cell found twice in one session is kept once (a file given twice); a
    cell found with two outcomes in two runs is an error, not something to pick a winner
    for."""
    merged: dict[str, dict] = {}
    for records in record_sets:
        for record in records:
            seen = merged.get(record["nodeid"])
            merged[record["nodeid"]] = record if seen is None else _later(seen, record)
    return sorted(merged.values(), key=lambda r: (r["case"], r["target"], r["check"]))


def _later(seen: dict, record: dict) -> dict:
    """Of two records of one cell, the one the run keeps."""
    one_session = record.get("session") is not None and record["session"] == seen.get("session")
    if one_session or not _same_run(seen, record):
        if seen["outcome"] != record["outcome"]:
            where = ("one session" if one_session else "two runs"
                     if record.get("run") and seen.get("run") else "two files")
            raise MergeConflict(f"{record['nodeid']} is {seen['outcome']} and "
                                f"{record['outcome']} in {where}; a rerun merges into its "
                                f"run when it appends to the run's records (pytest --lf, "
                                f"--conformance-rerun) or shares its {RUN_ID_VARIABLE}")
        return seen
    later, earlier = (record, seen) if record.get("time", "") >= seen.get("time", "") \
        else (seen, record)
    history = earlier.get("earlier", []) + [{key: earlier.get(key) for key in
                                             ("outcome", "session", "time")}]
    return {**later, "earlier": history + later.get("earlier", [])}


def _same_run(a: dict, b: dict) -> bool:
    """One run on one stack: a CI run id shared by a tox matrix is several runs."""
    return (a.get("run") is not None and a.get("run") == b.get("run")
            and a.get("versions") == b.get("versions"))


def reruns(records: list[dict]) -> list[dict]:
    """The cells a later session ran again: their earlier outcomes and the one kept."""
    return [{"case": r["case"], "target": r["target"], "check": r["check"],
             "outcomes": [e["outcome"] for e in r["earlier"]] + [r["outcome"]]}
            for r in records if r.get("earlier")]


def incomplete_sessions(record_sets: list[list[dict]]) -> list[str]:
    """The sessions that recorded fewer cells than they collected: runs that ended early
    (killed, interrupted, stopped at a first failure, a crashed worker), unless the run's
    other sessions (a retried shard) recorded at least as many cells between them."""
    cells, recorded = {}, collections.defaultdict(set)
    runs, in_run = {}, collections.defaultdict(set)
    for records in record_sets:
        for r in records:
            if r.get("session") and r.get("session_cells") is not None:
                cells[r["session"]] = r["session_cells"]
                recorded[r["session"]].add(r["nodeid"])
                runs[r["session"]] = r.get("run")
                in_run[r.get("run")].add(r["nodeid"])
    return [f"session {session} recorded {len(recorded[session])} of its {count} cells: "
            f"the run ended early" for session, count in sorted(cells.items())
            if len(recorded[session]) < count and len(in_run[runs[session]]) < count]


def worst(outcomes: list[str]) -> str:
    return min(outcomes, key=SEVERITY.index)


def conformance_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("check") != latency_summary.CHECK]


def grid(records: list[dict]) -> dict:
    """cases x targets, each cell with its worst outcome and its checks."""
    cells = collections.defaultdict(list)
    for r in conformance_records(records):
        cells[(r["case"], r["target"])].append(r)
    cases = sorted({case for case, _ in cells})
    targets = sorted({target for _, target in cells}, key=_target_order)
    info = {}
    for (_, target), checks in cells.items():
        info.setdefault(target, {k: checks[0].get(k) for k in ("path", "runtime", "device")})
    return {"cases": cases, "targets": targets, "target_info": info,
            "unselected": unselected(cells, cases, targets),
            "cells": {f"{case}|{target}": _cell(checks)
                      for (case, target), checks in cells.items()}}


def unselected(cells: dict, cases: list[str], targets: list[str]) -> list[str]:
    """The grid's empty places whose target the case has (by the tags its records carry):
    cells this run did not select (another tier, -k), not targets that do not apply."""
    from conformance.targets import targets_for

    found = []
    for case in cases:
        tags = next((r.get("tags") for (c, _), rs in cells.items() if c == case
                     for r in rs if r.get("tags") is not None), None)
        if tags is None:
            continue
        has = {t.id for t in targets_for(frozenset(tags))}
        found += [f"{case}|{t}" for t in targets if (case, t) not in cells and t in has]
    return found


def _target_order(target: str) -> tuple:
    return (target.endswith("-cuda"), target)


def _cell(checks: list[dict]) -> dict:
    return {"outcome": worst([c["outcome"] for c in checks]),
            "checks": [{"check": c["check"], "outcome": c["outcome"],
                        "max_abs": c.get("metrics", {}).get("max_abs"),
                        "max_rel": c.get("metrics", {}).get("max_rel"),
                        "message": (c.get("message") or "")[:2000],
                        "expectation": (c.get("expectation") or {}).get("reason")}
                       for c in sorted(checks, key=lambda c: c["check"])]}


def outcome_counts(records: list[dict]) -> dict[str, int]:
    counts = collections.Counter(r["outcome"] for r in records)
    return {outcome: counts[outcome] for outcome in SEVERITY}


def pass_rates(records: list[dict]) -> list[dict]:
    """Per target: passed / (cells that ran), with xfailed counted as known failures."""
    by_target = collections.defaultdict(collections.Counter)
    for r in conformance_records(records):
        by_target[r["target"]][r["outcome"]] += 1
    rows = []
    for target in sorted(by_target, key=_target_order):
        counts = by_target[target]
        ran = sum(counts[o] for o in SEVERITY if o != "skipped")
        rows.append({"target": target, "ran": ran, **{o: counts[o] for o in SEVERITY},
                     "pass_rate": counts["passed"] / ran if ran else None})
    return rows


def costs(records: list[dict]) -> list[dict]:
    """Per case, the longest export and compile times its records saw."""
    found = collections.defaultdict(dict)
    for r in records:
        for key, label in COST_TIMINGS.items():
            value = r.get("timings", {}).get(key)
            if value:
                found[r["case"]][label] = max(value, found[r["case"]].get(label, 0))
    return [{"case": case, **times} for case, times in sorted(found.items())]


def trend_point(records: list[dict]) -> dict:
    """What the history draws of a run: each target's pass rate, each backend's
    geometric-mean speedup."""
    return {"pass_rates": {r["target"]: r["pass_rate"] for r in pass_rates(records)},
            "geomeans": {b: s for b, s, _ in latency_summary.geomean_values(records)}}


def latency(records: list[dict]) -> dict:
    measured = latency_summary.measured(records)
    return {"rows": [{"case": r["case"], "target": r["target"], "path": r["path"],
                      **{k: r["metrics"].get(k) for k in ("median_s", "p90_s", "p99_s",
                                                          "iqr_over_median", "speedup",
                                                          "first_call_s", "load_s",
                                                          "peak_rss_mib", "n")},
                      # the distributions' outline: the page draws it, the JSON keeps it small
                      "quantiles_s": _outline(r["metrics"].get("samples_s")),
                      "eager_quantiles_s": _outline(r["metrics"].get("eager_samples_s"))}
                     for r in measured],
            "geomeans": [{"backend": b, "speedup": s, "cases": n}
                         for b, s, n in latency_summary.geomean_values(records)],
            "budget": latency_summary.run_budget(records),
            "profiles": profiles(records)}


def _outline(samples: list[float] | None) -> list[float] | None:
    """Every twentieth quantile of the samples, min and max included."""
    from conformance.latency.stats import quantile

    return [quantile(samples, i / 20) for i in range(21)] if samples else None


def profiles(records: list[dict]) -> list[dict]:
    """Per profiled latency record, its profile: the top operators and the trace's name
    (or why it could not be profiled)."""
    return [{"case": r["case"], "target": r["target"], "profile": r["metrics"]["profile"]}
            for r in latency_profile.profiled_records(records)
            if r.get("check") == latency_summary.CHECK]


def summarize(records: list[dict]) -> dict:
    return {"failure_groups": failure_groups(conformance_records(records)),
            "reruns": reruns(records),
            "environment": environment(records), "counts": outcome_counts(records),
            "pass_rates": pass_rates(records), "grid": grid(records), "costs": costs(records),
            "cost": {key: cost_by(records, key, 15) for key in ("case", "path", "check")},
            "latency": latency(records)}
