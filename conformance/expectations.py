"""Expectations: rows of a table saying a (case, target, check) is known to fail, and how.

A row names the failure it expects: its `kind` (one of checks.FAILURE_KINDS) and,
optionally, a regular expression the failure's message must contain (`match`).
The cell decides after its check ran (`judge`): the expected failure is an
xfail with the row's reason; a failure of another kind, or one whose message does
not match, fails and says what was expected and what was observed; a pass fails
and names the row to remove. Rows of the built-in table apply to the built-in
cases only; rows of a user's table apply to every case. A row that is active for
this torch version but matches no cell of the collected matrix warns, so the
table cannot silently go stale.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Callable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from conformance.checks.catalog import FAILURE_KINDS
from conformance.layout import builtin_expectations

FIELDS = {"case", "target", "check", "kind", "match", "torch", "reason"}
OBSERVED_LINES = 2  # lines of a failure quoted beside an xfail's reason


class ExpectationError(Exception):
    """The table is malformed; the message names the file and row."""


@dataclasses.dataclass(frozen=True)
class Expectation:
    case: str           # fnmatch pattern over case names
    target: str         # fnmatch pattern over target ids, e.g. "trace-*"
    check: tuple[str, ...]  # fnmatch patterns over check names; one must match
    kind: str           # the failure kind the row expects, one of FAILURE_KINDS
    match: re.Pattern | None  # searched in the failure's message; None: any message
    torch: SpecifierSet  # torch releases the row applies to; empty = all
    reason: str
    source: str         # "file, row N", for messages
    builtin: bool = False  # from the built-in table: about the built-in cases only

    def applies_to_torch(self, release: str) -> bool:
        return Version(release) in self.torch if str(self.torch) else True

    def matches(self, case: str, target: str, check: str) -> bool:
        return (fnmatch.fnmatchcase(case, self.case) and fnmatch.fnmatchcase(target, self.target)
                and any(fnmatch.fnmatchcase(check, pattern) for pattern in self.check))

    def expects(self, kind: str, message: str) -> bool:
        """Whether a failure of this kind and message is the one the row describes. The
        pattern is searched in what the failure says, not in the notes every failure of
        the cell carries (the export's warnings, the reproduce line)."""
        return kind == self.kind and (self.match is None
                                      or bool(self.match.search(failure_text(message))))

    def describe(self) -> str:
        check = self.check[0] if len(self.check) == 1 else list(self.check)
        versions = f", torch {self.torch}" if str(self.torch) else ""
        match = f", match={self.match.pattern!r}" if self.match else ""
        return (f"case={self.case!r}, target={self.target!r}, check={check!r}, "
                f"kind={self.kind!r}{match}{versions} ({self.source})")

    def record(self) -> dict:
        """What a record says of the row that applied."""
        return {"reason": self.reason, "row": self.describe(), "kind": self.kind}


def load_table(file: Path, builtin: bool | None = None) -> list[Expectation]:
    """The rows of a table; `builtin` (default: whether `file` is the built-in table)
    limits them to the built-in cases."""
    if builtin is None:
        builtin = Path(file).resolve() == builtin_expectations().resolve()
    try:
        data = tomllib.loads(Path(file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ExpectationError(f"expectations {file}: {exc}") from exc
    rows = data.get("expect", [])
    if not isinstance(rows, list):
        raise ExpectationError(f"expectations {file}: use [[expect]] tables")
    return [_row(file, index + 1, row, builtin) for index, row in enumerate(rows)]


def _row(file: Path, number: int, row: dict, builtin: bool) -> Expectation:
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
                       check=_checks(where, row), kind=_kind(where, row),
                       match=_match(where, row), torch=versions,
                       reason=row["reason"].strip(), source=where, builtin=builtin)


def _checks(where: str, row: dict) -> tuple[str, ...]:
    check = row.get("check")
    checks = [check] if isinstance(check, str) else check
    if not checks or not isinstance(checks, list) or not all(
            isinstance(c, str) and c.strip() for c in checks):
        raise ExpectationError(
            f"expectations {where}: every row needs a check: a check name or pattern, or a "
            "list of them, e.g. check = \"generalizes\" or check = [\"matches_eager\", "
            "\"generalizes\"] (\"*\" covers every check)")
    return tuple(c.strip() for c in checks)


def _kind(where: str, row: dict) -> str:
    kind = row.get("kind")
    if kind not in FAILURE_KINDS:
        said = "has no kind" if kind is None else f"has kind = {kind!r}"
        raise ExpectationError(
            f"expectations {where}: the row {said}; a row names the failure it expects, "
            f"one of: {', '.join(FAILURE_KINDS)}")
    return kind


def _match(where: str, row: dict) -> re.Pattern | None:
    if "match" not in row:
        return None
    try:
        return re.compile(str(row["match"]))
    except re.error as exc:
        raise ExpectationError(f"expectations {where}: match = {row['match']!r} is not a "
                               f"regular expression ({exc})") from exc


DECLARED = "unsupported"  # the source of a row a case declares


def path_targets(path: str) -> str:
    """The pattern of every target of one path and of no other: `onnx-op*`, not `onnx-*`,
    which would take in onnx-dynamo's targets too. A path's tuned variant captures the
    model as its default does (the same trace, script or torch.export, before freezing), so
    it fails where its default does: `script-*` takes in `script-tuned`."""
    from conformance.exporters.table import PATHS
    from conformance.tuning import TUNINGS

    has_opsets = any(opset is not None for opset, _ in PATHS[path].opsets)
    pattern = f"{path}-op*" if has_opsets else f"{path}-*"
    variants = {name for name, row in TUNINGS.items() if row.tunes == path}
    others = [name for name in PATHS if name != path and name not in variants
              and fnmatch.fnmatch(f"{name}-", pattern)]
    if others:  # a plugin's path named like a longer one without opsets
        raise ValueError(f"path {path!r}: the pattern {pattern!r} also selects {others}")
    return pattern


def declared_rows(cases) -> list[Expectation]:
    """The rows cases declare themselves (`Case.unsupported`): every cell of the path is
    expected to fail with the exporter's error (a path that saves nothing fails when it
    compiles, as a runtime error)."""
    from conformance.exporters.table import PATHS

    return [Expectation(case=case.name, target=path_targets(path), check=("*",),
                        kind="export-error" if PATHS[path].saves_file else "runtime-error",
                        match=None, torch=SpecifierSet(""), reason=reason.strip(),
                        source=f"case {case.name}, {DECLARED}")
            for case in cases for path, reason in case.unsupported.items()]


class ExpectationTable:
    """The active rows for one torch release, and which of them matched a cell.

    `builtin_case(name)` says whether a case is a built-in one (the plugin sets it
    from the registry); without it every case is taken for a built-in one.
    """

    def __init__(self, rows: list[Expectation], torch_release: str,
                 builtin_case: Callable[[str], bool] | None = None):
        self.torch_release = torch_release
        self.rows = [row for row in rows if row.applies_to_torch(torch_release)]
        self.builtin_case = builtin_case
        self.matched: set[int] = set()

    def lookup(self, case: str, target: str, check: str,
               builtin: bool | None = None) -> Expectation | None:
        """The first active row matching the cell, remembered as matched. The built-in
        table's rows match only when the case is built in (`builtin`, by default what
        `builtin_case` says)."""
        if builtin is None:
            builtin = self.builtin_case(case) if self.builtin_case else True
        for index, row in enumerate(self.rows):
            if (builtin or not row.builtin) and row.matches(case, target, check):
                self.matched.add(index)
                return row
        return None

    def put_first(self, rows: list[Expectation]) -> None:
        """Rows that come before the tables' (a case's own declarations), added before
        any cell is looked up."""
        assert not self.matched, "rows are added before the first lookup"
        self.rows = [row for row in rows if row.applies_to_torch(self.torch_release)] + self.rows

    def unmatched(self) -> list[Expectation]:
        return [row for index, row in enumerate(self.rows) if index not in self.matched]


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a cell with an expectation row reports: `xfail` or `fail`, and the message."""

    outcome: str
    message: str


def judge(row: Expectation, kind: str | None, message: str, cell: str,
          torch_release: str) -> Verdict:
    """The verdict of a cell that a row applies to, from the check's failure (its kind
    and message; kind None when the check passed)."""
    if kind is None:
        return Verdict("fail", unexpected_pass_message(row, cell, torch_release))
    if row.expects(kind, message):
        return Verdict("xfail", f"{row.reason} [expectation {row.describe()}]; observed "
                                f"{kind}: {first_lines(message)}")
    lines = message.strip().splitlines() or [""]
    why = (f"the failure is not the row's kind ({row.kind})" if kind != row.kind else
           f"its message does not match the row's pattern {row.match.pattern!r}")
    return Verdict("fail", "\n".join([
        f"expected {row.kind} ({row.reason}; {row.describe()}), observed {kind}: {lines[0]}",
        *lines[1:],
        f"  {why}: a new failure hides behind the known one. Fix it, or change the row "
        "to say what is observed now."]))


# Where the notes that follow a failure begin (checks._warned, checks.fail).
NOTE_STARTS = ("the export warned that it froze something of the example", "reproduce:")


def failure_text(message: str) -> str:
    """A failure message without its trailing notes."""
    kept = []
    for line in message.splitlines():
        if line.strip().startswith(NOTE_STARTS):
            break
        kept.append(line)
    return "\n".join(kept)


def first_lines(message: str, count: int = OBSERVED_LINES) -> str:
    return " / ".join(line.strip() for line in message.strip().splitlines()[:count])


def unexpected_pass_message(row: Expectation, cell: str, torch_release: str) -> str:
    if row.source.endswith(DECLARED):
        path = row.target.removesuffix("*").removesuffix("-op").removesuffix("-")
        remedy = f"Remove {path!r} from the case's `unsupported`: the path exports it now."
    else:
        remedy = (f"Remove that row, or narrow its torch range so it no longer covers "
                  f"{torch_release}.")
    return (f"UNEXPECTED PASS: {cell} passes on torch {torch_release}, but an expectation says it "
            f"fails: {row.describe()}, reason: {row.reason!r}. {remedy}")
