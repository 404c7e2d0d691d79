"""The matrix across environments (one tox env per torch version, one records file each):
which cells change outcome between them, and which targets' speed over eager changes,
before the whole matrix side by side.

An environment is named by its records file (`results/tox/torch2.13.jsonl` is `torch2.13`)
and described by the builds its records name. Two environments that ran the same stack
are told apart by name and flagged: the second repeats the first and proves nothing more.
"""
from __future__ import annotations

import collections

from conformance.latency import summary as latency_summary
from conformance.report.data import SEVERITY, conformance_records, grid
from conformance.report.history import environment

# A speedup over eager that moves by more than this factor between environments is
# listed: run-to-run noise of one machine stays well within it (latency/run_to_run.json).
LATENCY_CHANGE = 1.25


def describe(name: str, records: list[dict]) -> dict:
    """An environment as its records give it: builds, cell counts, the cells' own time."""
    versions = environment(records)["versions"]
    stack = stack_of(records)
    counts = collections.Counter(r["outcome"] for r in conformance_records(records))
    return {"name": name, "stack": stack, "versions": versions,
            "counts": {outcome: counts[outcome] for outcome in SEVERITY},
            "cell_s": round(sum(r.get("duration_s") or 0 for r in records), 1)}


def stack_of(records: list[dict]) -> dict:
    """The builds the records name (older records: the torch version only)."""
    builds = next((r["builds"] for r in records if r.get("builds")), None)
    return builds or {"torch": environment(records)["versions"].get("torch", "?")}


def same_stacks(environments: list[dict]) -> list[list[str]]:
    """Groups of environments whose records name one stack."""
    groups = collections.defaultdict(list)
    for env in environments:
        groups[tuple(sorted(env["stack"].items()))].append(env["name"])
    return [names for names in groups.values() if len(names) > 1]


def cells(records: list[dict]) -> dict[tuple[str, str, str], dict]:
    """Each conformance cell (case, target, check): its outcome and its first message line."""
    return {(r["case"], r["target"], r["check"]):
            {"outcome": r["outcome"], "message": (r.get("message") or "").strip()
             .split("\n")[0][:300], "expectation": (r.get("expectation") or {}).get("reason")}
            for r in conformance_records(records)}


def outcome_changes(names: list[str], record_sets: list[list[dict]]) -> list[dict]:
    """The cells whose outcome is not the same in every environment (a cell one
    environment did not run counts as `absent`), worst change first."""
    per_env = [cells(records) for records in record_sets]
    found = []
    for key in sorted(set().union(*per_env)):
        seen = {name: env.get(key) for name, env in zip(names, per_env)}
        outcomes = {name: cell["outcome"] if cell else "absent" for name, cell in seen.items()}
        if len(set(outcomes.values())) > 1:
            found.append({"case": key[0], "target": key[1], "check": key[2],
                          "outcomes": outcomes, "messages": messages(seen)})
    return sorted(found, key=lambda c: (change_rank(c["outcomes"].values()),
                                        c["case"], c["target"], c["check"]))


def messages(seen: dict[str, dict | None]) -> dict[str, str]:
    """Each environment's message for a cell that did not pass there."""
    return {name: cell["message"] for name, cell in seen.items()
            if cell and cell["outcome"] != "passed" and cell["message"]}


def change_rank(outcomes) -> int:
    """A cell that fails in one environment and passes in another first; then one an
    expectation row covers in one; then one that runs in one and not another."""
    ran = set(outcomes) - {"skipped", "absent"}
    if ran & {"error", "failed", "xpassed"} and ran & {"passed", "xfailed"}:
        return 0
    if "xfailed" in ran and "passed" in ran:
        return 1
    return 2


def latency_changes(names: list[str], record_sets: list[list[dict]]) -> list[dict]:
    """The (case, target) pairs whose speedup over eager moves by more than LATENCY_CHANGE
    between environments, the largest move first."""
    per_env = [latency_summary.speedups(records) for records in record_sets]
    found = []
    for key in sorted(set().union(*per_env)):
        speedups = {name: env[key] for name, env in zip(names, per_env) if key in env}
        if len(speedups) < 2:
            continue
        move = max(speedups.values()) / min(speedups.values())
        if move > LATENCY_CHANGE:
            found.append({"case": key[0], "target": key[1], "speedups": speedups,
                          "move": round(move, 3)})
    return sorted(found, key=lambda c: -c["move"])


def side_by_side(names: list[str], record_sets: list[list[dict]]) -> list[dict]:
    """The grid (case x target, each its worst outcome) per environment."""
    rows = collections.defaultdict(dict)
    for name, records in zip(names, record_sets):
        for key, cell in grid(records)["cells"].items():
            rows[key][name] = cell["outcome"]
    return [{"case": key.split("|")[0], "target": key.split("|")[1], "outcomes": outcomes}
            for key, outcomes in sorted(rows.items())]


def compare(names: list[str], record_sets: list[list[dict]]) -> dict:
    """Everything the cross-environment report shows, the environments in the order of
    their torch releases, oldest first."""
    if len(set(names)) < len(names):
        raise ValueError(f"two records files have one name: {names}; an environment is "
                         "named by its file")
    ordered = sorted(zip(names, record_sets), key=lambda pair: release(pair[1]))
    names, record_sets = [n for n, _ in ordered], [r for _, r in ordered]
    environments = [describe(n, r) for n, r in zip(names, record_sets)]
    return {"environments": environments, "same_stack": same_stacks(environments),
            "changed": outcome_changes(names, record_sets),
            "latency_changed": latency_changes(names, record_sets),
            "rows": side_by_side(names, record_sets)}


def release(records: list[dict]):
    """The torch release a records file ran, for ordering (unknown ones last)."""
    from packaging.version import InvalidVersion, Version

    torch = stack_of(records).get("torch", "")
    try:
        return (0, Version(torch))
    except InvalidVersion:
        return (1, torch)


def stack_text(stack: dict) -> str:
    torch = f"torch {stack.get('torch', '?')}"
    vision = f", torchvision {stack['torchvision']}" if stack.get("torchvision") else ""
    return torch + vision


def markdown(report: dict, shown: int = 50) -> str:
    """The Markdown summary: the environments, the changed cells, the latency moves."""
    lines = ["# conformance across environments", "",
             "| environment | stack | passed | failed | xfailed | skipped | cell time |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {e['name']} | {stack_text(e['stack'])} | {e['counts']['passed']} | "
              f"{e['counts']['failed'] + e['counts']['error'] + e['counts']['xpassed']} | "
              f"{e['counts']['xfailed']} | {e['counts']['skipped']} | {e['cell_s']:.0f} s |"
              for e in report["environments"]]
    lines += [""] + [f"**{' and '.join(group)} ran the same stack**: they repeat each other."
                     for group in report["same_stack"]]
    lines += ["", f"## Cells whose outcome differs: {len(report['changed'])}", ""]
    lines += [f"- `{c['case']}` · `{c['target']}` · {c['check']}: " + ", ".join(
        f"{name} {outcome}" for name, outcome in c["outcomes"].items())
        for c in report["changed"][:shown]]
    if len(report["changed"]) > shown:
        lines.append(f"- and {len(report['changed']) - shown} more (versions.json)")
    if report["latency_changed"]:
        lines += ["", f"## Speedups over eager that move more than {LATENCY_CHANGE}x", ""]
        lines += [f"- `{c['case']}` · `{c['target']}`: " + ", ".join(
            f"{name} {value:.2f}x" for name, value in c["speedups"].items())
            for c in report["latency_changed"][:shown]]
    return "\n".join(lines) + "\n"
