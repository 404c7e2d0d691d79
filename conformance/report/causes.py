"""Failures grouped by root cause, for the first screen of the report: one exporter
error fails every check and runtime of its path with the same words, so 120 failed
records can be a dozen causes. A group is the case, the path, the kind of failure and
the real error line; it keeps how many cells it holds, which targets and checks, the
tracer warnings that explain a baked branch, and the command that reproduces one."""
from __future__ import annotations

from conformance.records import real_error, reproduce_line

BAD = ("failed", "error")


def group_key(record: dict) -> tuple:
    kind = record.get("failure_kind") or record["outcome"]
    return record["case"], record.get("path", ""), kind, cause_line(record, kind)


def cause_line(record: dict, kind: str) -> str:
    """The real error line; for a mismatch, one line for every check of the path (the
    example's and the probes' headlines differ), with the module where the artifact
    first diverges when the check found it."""
    if kind != "mismatch":
        return real_error(record)
    where = (record.get("metrics") or {}).get("diverges_at") or {}
    module = where.get("module")
    return ("the artifact's outputs differ from eager" + (
        f", first at module {module} ({where.get('kind')})" if module else ""))


def failure_groups(records: list[dict]) -> list[dict]:
    """The failed records grouped by root cause, most cells first."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record["outcome"] in BAD:
            groups.setdefault(group_key(record), []).append(record)
    found = [_group(key, members) for key, members in groups.items()]
    return sorted(found, key=lambda g: (-g["cells"], g["case"], g["path"]))


def _group(key: tuple, members: list[dict]) -> dict:
    case, path, kind, error = key
    warnings = []
    for record in members:
        for warning in (record.get("metrics") or {}).get("tracer_warnings") or []:
            if warning not in warnings:
                warnings.append(warning)
    first = min(members, key=lambda r: (r["target"], r["check"]))
    return {"case": case, "path": path, "kind": kind, "error": error, "cells": len(members),
            "targets": sorted({r["target"] for r in members}),
            "checks": sorted({r["check"] for r in members}),
            "tracer_warnings": warnings[:4], "reproduce": reproduce_line(first),
            "message": (first.get("message") or "")[:3000],
            "diverges_at": (first.get("metrics") or {}).get("diverges_at")}
