"""What changed between two runs, from their records: new failures, fixes, cells that
need an expectation row, rows to remove, latency regressions. A nightly job gates
on `Changes.gate_failures`.
"""
from __future__ import annotations

import dataclasses

from conformance.latency import summary as latency_summary
from conformance.messages import first_line
from conformance.records import real_error
from conformance.report.causes import failure_groups

BAD = frozenset({"failed", "error"})
GOOD = frozenset({"passed", "xfailed"})  # an expected failure is the table's verdict


def cell_key(record: dict) -> tuple[str, str, str]:
    return record["case"], record["target"], record["check"]


def by_cell(records: list[dict]) -> dict[tuple, dict]:
    return {cell_key(r): r for r in records}


@dataclasses.dataclass
class Changes:
    new_failures: list[dict]  # failing now, not failing in the previous run
    fixes: list[dict]  # passing now, failing in the previous run
    need_expectation: list[dict]  # failing with no expectation row: fix it or add a row
    stale_expectations: list[dict]  # an expected failure that passed: remove the row
    new_cells: list[dict]  # cells the previous run did not have
    latency_regressions: list[str]
    previous_run: int | None = None
    # cells the baseline ran that vanished or now skip, and sessions that ended early
    lost_coverage: list[str] = dataclasses.field(default_factory=list)
    reruns: list[str] = dataclasses.field(default_factory=list)  # cells a later session reran

    RECORD_LISTS = ("new_failures", "fixes", "need_expectation", "stale_expectations",
                    "new_cells")

    def as_lists(self) -> dict:
        """One-line descriptions instead of records, for the page, the summary and JSON."""
        return {**{name: [describe(r) for r in getattr(self, name)]
                   for name in self.RECORD_LISTS},
                "latency_regressions": self.latency_regressions,
                "lost_coverage": self.lost_coverage, "reruns": self.reruns,
                "new_failure_groups": failure_groups(self.new_failures),
                "new_cell_keys": sorted({f"{r['case']}|{r['target']}" for r in self.new_cells}),
                "previous_run": self.previous_run, "gate_failures": self.gate_failures}

    # no accepted run to compare with: the run must stand on its own
    without_baseline: bool = False
    empty: bool = False  # no records at all

    @property
    def gate_failures(self) -> list[str]:
        """What a nightly job should fail on. Without a baseline every failure without an
        expectation row counts (else a first red run would become the baseline, its
        failures never new), and so does a run without records."""
        unexplained = self.need_expectation if self.without_baseline else []
        return (["no records: the run checked nothing"] * self.empty
                + [f"new failure: {describe(r)}" for r in self.new_failures]
                + [f"failing without an expectation row (no baseline): {describe(r)}"
                   for r in unexplained]
                + [f"expectation to remove: {describe(r)}" for r in self.stale_expectations]
                + [f"latency regression: {m}" for m in self.latency_regressions]
                + [f"lost coverage: {m}" for m in self.lost_coverage])


def describe(record: dict) -> str:
    """The cell, its outcome and, failing, the line that says what went wrong."""
    said = real_error(record) if record.get("message") else ""
    return (f"{record['case']} {record['target']} {record['check']} ({record['outcome']})"
            + (f": {said[:200]}" if said else ""))


def compare(previous: list[dict] | None, current: list[dict], max_slowdown: float
            = latency_summary.DEFAULT_MAX_SLOWDOWN, previous_run: int | None = None,
            ended_early: list[str] = ()) -> Changes:
    """The changes since the baseline's records (None: no baseline; then only what the
    run says of itself counts: failures without a row, rows to remove, an early end)."""
    before = by_cell(previous or [])
    failing = [r for r in current if r["outcome"] in BAD]
    return Changes(
        new_failures=[r for r in failing if before.get(cell_key(r), {}).get("outcome") not in BAD]
        if previous is not None else [],
        fixes=[r for r in current if r["outcome"] in GOOD
               and before.get(cell_key(r), {}).get("outcome") in BAD],
        need_expectation=[r for r in failing if not r.get("expectation")],
        stale_expectations=[r for r in current if r["outcome"] == "xpassed"],
        new_cells=[r for r in current if cell_key(r) not in before] if previous else [],
        latency_regressions=latency_summary.regressions(current, previous or [], max_slowdown),
        previous_run=previous_run,
        lost_coverage=lost_coverage(previous or [], current) + list(ended_early),
        reruns=[f"{describe(r)}; before: {', '.join(e['outcome'] for e in r['earlier'])}"
                for r in current if r.get("earlier")],
        without_baseline=previous is None, empty=not current)


def lost_coverage(previous: list[dict], current: list[dict]) -> list[str]:
    """The baseline's cells that are gone, and those it ran that now skip: a lost GPU or
    runtime, a case dropped, a killed run."""
    now = by_cell(current)
    lost = []
    for key, before in by_cell(previous).items():
        after = now.get(key)
        if after is None:
            lost.append(f"{' '.join(key)}: absent (was {before['outcome']})")
        elif after["outcome"] == "skipped" and before["outcome"] != "skipped":
            lost.append(f"{' '.join(key)}: now skipped (was {before['outcome']}): "
                        f"{first_line(after.get('message') or '')[:200]}")
    return lost
