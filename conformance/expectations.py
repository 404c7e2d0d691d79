"""Expectations: rows of a table saying a (case, target, check) is known to fail.

A row turns the matching cells into strict xfails: a failure is reported as
expected, with the row's reason; a pass fails and names the row to remove.
A row that is active for this torch version but matches no cell of the
collected matrix warns, so the table cannot silently go stale.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

FIELDS = {"case", "target", "check", "torch", "reason"}


class ExpectationError(Exception):
    """The table is malformed; the message names the file and row."""


@dataclasses.dataclass(frozen=True)
class Expectation:
    case: str           # fnmatch pattern over case names
    target: str         # fnmatch pattern over target ids, e.g. "trace-*"
    check: str          # fnmatch pattern over check names
    torch: SpecifierSet  # torch releases the row applies to; empty = all
    reason: str
    source: str         # "file, row N", for messages

    def applies_to_torch(self, release: str) -> bool:
        return Version(release) in self.torch if str(self.torch) else True

    def matches(self, case: str, target: str, check: str) -> bool:
        return (fnmatch.fnmatchcase(case, self.case) and fnmatch.fnmatchcase(target, self.target)
                and fnmatch.fnmatchcase(check, self.check))

    def describe(self) -> str:
        versions = f", torch {self.torch}" if str(self.torch) else ""
        return (f"case={self.case!r}, target={self.target!r}, check={self.check!r}{versions} "
                f"({self.source})")


def load_table(file: Path) -> list[Expectation]:
    try:
        data = tomllib.loads(Path(file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ExpectationError(f"expectations {file}: {exc}") from exc
    rows = data.get("expect", [])
    if not isinstance(rows, list):
        raise ExpectationError(f"expectations {file}: use [[expect]] tables")
    return [_row(file, index + 1, row) for index, row in enumerate(rows)]


def _row(file: Path, number: int, row: dict) -> Expectation:
    where = f"{Path(file).name}, row {number}"
    unknown = set(row) - FIELDS
    if unknown:
        raise ExpectationError(f"expectations {where}: unknown field(s) {sorted(unknown)}; "
                               f"fields are {sorted(FIELDS)}")
    if not str(row.get("reason", "")).strip():
        raise ExpectationError(f"expectations {where}: every row needs a reason")
    try:
        versions = SpecifierSet(row.get("torch", ""))
    except InvalidSpecifier as exc:
        raise ExpectationError(f"expectations {where}: torch = {row['torch']!r} is not a "
                               "version range such as '>=2.9,<2.15'") from exc
    return Expectation(case=row.get("case", "*"), target=row.get("target", "*"),
                       check=row.get("check", "*"), torch=versions,
                       reason=row["reason"].strip(), source=where)


class ExpectationTable:
    """The active rows for one torch release, and which of them matched a cell."""

    def __init__(self, rows: list[Expectation], torch_release: str):
        self.torch_release = torch_release
        self.rows = [row for row in rows if row.applies_to_torch(torch_release)]
        self.matched: set[int] = set()

    def lookup(self, case: str, target: str, check: str) -> Expectation | None:
        """The first active row matching the cell, remembered as matched."""
        for index, row in enumerate(self.rows):
            if row.matches(case, target, check):
                self.matched.add(index)
                return row
        return None

    def unmatched(self) -> list[Expectation]:
        return [row for index, row in enumerate(self.rows) if index not in self.matched]


def xfail_reason(row: Expectation) -> str:
    return f"{row.reason} [expectation {row.describe()}]"


def unexpected_pass_message(row: Expectation, cell: str, torch_release: str) -> str:
    return (f"UNEXPECTED PASS: {cell} passes on torch {torch_release}, but an expectation says it "
            f"fails: {row.describe()}, reason: {row.reason!r}. Remove that row, or narrow its "
            f"torch range so it no longer covers {torch_release}.")
