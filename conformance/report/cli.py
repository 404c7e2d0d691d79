"""Turn a run's records into the nightly report, and keep the run in the history.

    python -m conformance.report results/records.jsonl [more.jsonl ...] \\
        --out results/report --history results/history.sqlite

writes `report.html` (one self-contained page), `summary.md` (for a CI step summary)
and `report.json` into --out, stores the run in the SQLite history (once: the same
records reported again are the same run), compares it with the last accepted run of the
same stack and selection, and exits 1 when that comparison finds new failures,
expectation rows to remove, latency regressions or lost coverage (cells gone or newly
skipped, a session that ended early); the same records give the same exit status however
often they are reported. A run whose gate passes becomes the baseline of the next;
--accept makes a run the baseline whatever its gate says (after a deliberate change).
Several records files (xdist, CI shards, machines, a rerun) are merged into one run
first, a rerun's later outcomes winning. With --by-env each file is one environment
instead (one tox env per torch version, named by its file), and the report lists the
cells whose outcome differs between environments first (conformance.report.versions).
Latency records that carry a profile show their
top operators in the page and the summary; with --profiles DIR (the folder the latency
run wrote its traces to) the page links each to its trace.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from conformance.latency.profile import profile_heading
from conformance.latency.summary import DEFAULT_MAX_SLOWDOWN
from conformance.records import read_records
from conformance.report import changes as changes_mod
from conformance.report import data as report_data
from conformance.report import history
from conformance.report import html as report_html
from conformance.report import versions

MARKDOWN_TOP = 5  # operators per target in the step summary; the page has all of a record's


def markdown(summary: dict, changes: dict | None, title: str) -> str:
    counts = " · ".join(f"{n} {o}" for o, n in summary["counts"].items() if n)
    lines = [f"# {title}", "", counts, ""]
    if changes is not None:
        lines += changes_markdown(changes)
    else:
        lines += groups_markdown("Failures, grouped by cause", summary["failure_groups"])
    lines += ["## Pass rate per target", "", "| target | ran | passed | failed | xfailed | "
              "xpassed | skipped |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['target']} | {r['ran']} | {r['passed']} | {r['failed'] + r['error']} | "
              f"{r['xfailed']} | {r['xpassed']} | {r['skipped']} |" for r in summary["pass_rates"]]
    if summary["latency"]["geomeans"]:
        lines += ["", "## Geometric mean of the speedup over eager", "",
                  "| backend | speedup | cases |", "|---|---:|---:|"]
        lines += [f"| {g['backend']} | {g['speedup']:.2f}x | {g['cases']} |"
                  for g in summary["latency"]["geomeans"]]
    lines += profile_markdown(summary["latency"].get("profiles") or [])
    versions = summary["environment"].get("versions") or {}
    lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))]
    return "\n".join(lines) + "\n"


def changes_markdown(changes: dict) -> list[str]:
    """The gate's verdict, the new failures by cause, then the other lists."""
    base = (f"run {changes['previous_run']}" if changes["previous_run"] is not None
            else "no accepted run before it")
    verdict = "failed" if changes["gate_failures"] else "passed"
    found = len(changes["gate_failures"])
    lines = [f"**Gate {verdict}** (baseline: {base}; {found} finding{'s' if found != 1 else ''})",
             ""]
    lines += (groups_markdown(f"New failures since {base}, grouped by cause",
                              changes["new_failure_groups"])
              if changes["previous_run"] is not None else
              groups_markdown("Failures, grouped by cause", changes.get("failure_groups") or []))
    for key, label in (("fixes", "fixed"), ("lost_coverage", "lost coverage"),
                       ("latency_regressions", "latency regressions"),
                       ("stale_expectations", "expectation rows to remove"),
                       ("reruns", "rerun cells"),
                       ("need_expectation", "failing without an expectation row"),
                       ("new_cells", "new cells")):
        items = changes.get(key) or []
        lines.append(f"- **{label}**: {len(items)}")
        lines += [f"  - {markdown_text(item)}" for item in items[:20]]
    return lines + [""]


def markdown_text(text: str) -> str:
    """Error text as Markdown shows it: a `<module>` of a traceback is no HTML tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def groups_markdown(heading: str, groups: list[dict]) -> list[str]:
    lines = [f"## {heading}", ""]
    for group in groups[:20]:
        cells = f"{group['cells']} cell" + ("s" if group["cells"] != 1 else "")
        lines.append(f"- **{cells}**, case `{group['case']}`, path "
                     f"`{group['path']}`, {group['kind']}: {markdown_text(group['error'])}")
        if group["reproduce"]:
            lines.append(f"  - reproduce: `{group['reproduce']}`")
    return lines + ([] if groups else ["none"]) + [""]


def profile_markdown(profiles: list[dict]) -> list[str]:
    """Each profiled target's top operators by self time per model call, and its trace."""
    if not profiles:
        return []
    lines = ["", "## Where the time goes", ""]
    for found in profiles:
        profile = found["profile"]
        trace = f"; trace `{profile['trace']}`" if profile.get("trace") else ""
        lines += [f"**{found['case']}** on **{found['target']}** ({profile_heading(profile)}"
                  f"{trace})", ""]
        top = (profile.get("top") or [])[:MARKDOWN_TOP]
        if top:
            lines += ["| operator | self ms per call | share | calls per call |",
                      "|---|---:|---:|---:|"]
            lines += [f"| `{r['name']}` | {r['self_ms_per_call']:.4f} | "
                      f"{100 * r['share']:.1f}% | {r['count']:g} |" for r in top]
            lines.append("")
    return lines


def compare_with_history(db_file: Path, records: list[dict], label: str, max_slowdown: float,
                         ended_early: list[str] = (), accept: bool = False
                         ) -> tuple[int, dict]:
    """Store the run (or find it stored); the changes since its baseline, the last
    accepted comparable run (`previous_run` None when there is none), and the gate's
    verdict kept with the run."""
    db = history.connect(db_file)
    run_id = history.store(db, records, label)
    before = history.baseline(db, run_id)
    previous = history.records_of(db, before) if before is not None else None
    found = changes_mod.compare(previous, records, max_slowdown, before, ended_early)
    changes = found.as_lists()
    changes["accepted"] = history.judge(db, run_id, changes["gate_failures"], accept)
    changes["trend"] = history.trend(db, run_id, report_data.trend_point)
    changes["failure_groups"] = report_data.failure_groups(report_data.conformance_records(
        records))
    return run_id, changes


def write_report(out: Path, summary: dict, changes: dict | None, title: str,
                 profiles: Path | None = None) -> None:
    """`profiles`: the folder of the latency run's trace files, which the page links to."""
    out.mkdir(parents=True, exist_ok=True)
    traces = os.path.relpath(profiles, out) if profiles is not None else None
    (out / "report.html").write_text(report_html.render(summary, changes, title, traces))
    (out / "summary.md").write_text(markdown(summary, changes, title))
    (out / "report.json").write_text(json.dumps({"title": title, "changes": changes,
                                                 **summary}, indent=1, default=str))


def write_cross_version(out: Path, files: list[Path]) -> int:
    """The matrix across environments, each records file one (a tox env's, named by its
    file): what changed between them first. Prints the changed cells."""
    try:
        found = versions.compare([Path(f).stem for f in files], [read_records(f) for f in files])
    except ValueError as exc:
        print(f"cannot put side by side: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "versions.html").write_text(report_html.render_versions(
        found, "conformance across environments"))
    (out / "versions.json").write_text(json.dumps(found, indent=1))
    summary = versions.markdown(found)
    (out / "versions.md").write_text(summary)
    print(summary, end="")
    print(f"report: {out / 'versions.html'}, {out / 'versions.md'}, {out / 'versions.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The nightly report of a conformance run")
    parser.add_argument("records", nargs="+", type=Path, help="records files of one run")
    parser.add_argument("--out", type=Path, default=Path("results/report"))
    parser.add_argument("--history", type=Path, help="SQLite run history to add the run to "
                        "and compare it with")
    parser.add_argument("--label", default="", help="a name for the run (e.g. the date)")
    parser.add_argument("--max-slowdown", type=float, default=DEFAULT_MAX_SLOWDOWN,
                        metavar="PERCENT", help="latency gate threshold (default %(default)s)")
    parser.add_argument("--profiles", type=Path, metavar="DIR",
                        help="the folder of the latency run's profile traces: the page "
                             "links each profile to its trace there")
    parser.add_argument("--accept", action="store_true",
                        help="make this run the baseline of later runs even when its gate "
                             "fails (after a deliberate change: a case or runtime dropped); "
                             "the exit status still says what the gate found")
    parser.add_argument("--by-env", "--by-torch", dest="by_env", action="store_true",
                        help="each records file is one environment (a tox env, named by its "
                             "file): list the cells whose outcome differs between them and "
                             "the speedups that move, then the matrix side by side, instead "
                             "of reporting one run")
    args = parser.parse_args(argv)
    if args.by_env:
        return write_cross_version(args.out, args.records)
    record_sets = [read_records(f) for f in args.records]
    try:
        records = report_data.merge(record_sets)
    except report_data.MergeConflict as exc:
        print(f"cannot merge: {exc}", file=sys.stderr)
        return 2
    title = "conformance report" + (f": {args.label}" if args.label else "")
    changes = None
    if args.history:
        run_id, changes = compare_with_history(
            args.history, records, args.label, args.max_slowdown,
            report_data.incomplete_sessions(record_sets), args.accept)
        title += f" (run {run_id})"
    write_report(args.out, report_data.summarize(records), changes, title, args.profiles)
    print(f"report: {args.out / 'report.html'}, {args.out / 'summary.md'}, "
          f"{args.out / 'report.json'}")
    for line in (changes or {}).get("gate_failures", []):
        print(line)
    return 1 if changes and changes["gate_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
