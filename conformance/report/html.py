"""The HTML report: one self-contained page (inline style and script, no network)."""
from __future__ import annotations

import collections
import html
import json
import math

from conformance.latency.profile import CALL_EVENTS, profile_heading
from conformance.latency.summary import ms
from conformance.messages import first_line
from conformance.report.data import SEVERITY as SEVERITY_ORDER
from conformance.report.plots import box_pair, sparkline

COLOURS = {"error": "#b71c1c", "failed": "#e53935", "xpassed": "#fb8c00", "xfailed": "#fdd835",
           "passed": "#43a047", "skipped": "#e0e0e0",
           "unselected": "repeating-linear-gradient(45deg, #fff, #fff 3px, #ccc 3px, #ccc 5px)",
           None: "#ffffff"}
LEGEND = {"unselected": "not run in this selection"}
SYMBOLS = {"error": "E", "failed": "F", "xpassed": "X!", "xfailed": "x", "passed": "",
           "skipped": "s", "unselected": "", None: ""}

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 100%; }
@media (max-width: 600px) { body { margin: 0.6em; font-size: 13px; } }
.scroll { overflow-x: auto; max-width: 100%; }
.gate { padding: 8px 12px; border-radius: 4px; font-weight: 600; }
.gate.failed { background: #ffebee; border: 1px solid #e53935; }
.gate.passed { background: #e8f5e9; border: 1px solid #43a047; }
.gate.none { background: #f5f5f5; border: 1px solid #ccc; }
.group { border-left: 4px solid #e53935; padding: 4px 10px; margin: 8px 0; background: #fff8f8;
         overflow-wrap: anywhere; }
.group .error { font-family: monospace; font-size: 12.5px; margin: 4px 0; }
.group .meta, .group .where { color: #555; font-size: 12px; }
.group pre, #detail { overflow-x: auto; }
details > summary { cursor: pointer; font-weight: 600; margin: 6px 0; }
table.grid td.name { text-align: left; width: auto; white-space: nowrap; padding: 0 6px;
                     cursor: default; font-size: 13px; }
table.grid td.new { outline: 2px solid #1e88e5; outline-offset: -3px; }
.filters label { margin-right: 10px; white-space: nowrap; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #f5f5f5; } td.name, th.name { text-align: left; }
table.grid td { width: 1.4em; height: 1.4em; text-align: center; cursor: pointer;
                font-size: 11px; padding: 0; }
table.grid th.target { writing-mode: vertical-rl; transform: rotate(180deg);
                       font-weight: normal; white-space: nowrap; }
.legend span { display: inline-block; padding: 2px 8px; margin-right: 4px;
               border: 1px solid #ccc; }
#detail { white-space: pre-wrap; font-family: monospace; font-size: 12px;
          background: #fafafa; border: 1px solid #ccc; padding: 8px; min-height: 3em; }
.bar { display: inline-block; height: 10px; background: #1e88e5; vertical-align: middle; }
.changes li { margin: 2px 0; }
"""

SCRIPT = """
const cells = JSON.parse(document.getElementById('cells').textContent);
function show(key) {
  const cell = cells[key];
  const [kase, target] = key.split('|');
  let text = kase + ' on ' + target + ': ' + cell.outcome + '\\n';
  for (const c of cell.checks) {
    text += '\\n' + c.check + ': ' + c.outcome;
    if (c.max_abs !== null && c.max_abs !== undefined) text += '  max abs ' + c.max_abs.toPrecision(3);
    if (c.max_rel !== null && c.max_rel !== undefined) text += '  max rel ' + c.max_rel.toPrecision(3);
    if (c.expectation) text += '\\n  expected failure: ' + c.expectation;
    if (c.message) text += '\\n  ' + c.message.split('\\n').join('\\n  ');
  }
  document.getElementById('detail').textContent = text;
}
document.querySelectorAll('td[data-key]').forEach(td =>
  td.addEventListener('click', () => show(td.dataset.key)));
// Open on the first failure, if there is one: that is what the reader came for.
const first = document.querySelector("td[data-outcome='error'], td[data-outcome='failed'], " +
                                      "td[data-outcome='xpassed']");
if (first) show(first.dataset.key);
// Filters: rows without a cell of the chosen outcome, and columns of other paths and
// runtimes, are hidden.
function filter() {
  const want = {};
  for (const name of ['outcome', 'path', 'runtime'])
    want[name] = document.getElementById('filter-' + name).value;
  const shown = (el) => (!want.path || el.dataset.path === want.path) &&
                        (!want.runtime || el.dataset.runtime === want.runtime);
  document.querySelectorAll('#grid [data-target]').forEach(el =>
    el.style.display = shown(el) ? '' : 'none');
  document.querySelectorAll('#grid tr[data-case]').forEach(row => {
    const hit = [...row.querySelectorAll('td[data-target]')].some(td =>
      shown(td) && (!want.outcome || td.dataset.outcome === want.outcome));
    row.style.display = hit ? '' : 'none';
  });
}
document.querySelectorAll('.filters select').forEach(s => s.addEventListener('change', filter));
"""


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def table(header: list[str], rows: list[list], name_columns: int = 1) -> str:
    head = "".join(f"<th class='name'>{esc(h)}</th>" if i < name_columns else f"<th>{esc(h)}</th>"
                   for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(
        f"<td class='name'>{esc(v)}</td>" if i < name_columns else f"<td>{v}</td>"
        for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def environment_section(env: dict) -> str:
    rows = [[k, esc(v)] for k, v in sorted((env.get("versions") or {}).items())]
    if env.get("budget"):
        rows.append(["thread budget", esc(describe_budget(env["budget"]))])
    if env.get("selection"):
        chosen = "; ".join(f"{k} {v}" for k, v in env["selection"].items() if v)
        rows.append(["selection", esc(chosen or "every cell")])
    return "<h2>Environment</h2>" + table(["", "version"], rows)


def _hover(case: str, target: str, cell: dict) -> str:
    lines = [f"{case} on {target}: {cell['outcome']}"]
    for c in cell["checks"]:
        error = f", max abs {c['max_abs']:.3g}" if c.get("max_abs") is not None else ""
        first = first_line(c["message"])
        lines.append(f"{c['check']}: {c['outcome']}{error}" + (f" ({first[:160]})"
                                                               if first else ""))
    return "\n".join(lines)


def _column(target: str, info: dict) -> str:
    """A target's data attributes, which the filters read."""
    return (f" data-target='{esc(target)}' data-path='{esc(info.get('path', ''))}'"
            f" data-runtime='{esc(info.get('runtime', ''))}'")


def grid_section(grid: dict, new_cells: frozenset = frozenset()) -> str:
    grid = {**grid, "unselected": frozenset(grid.get("unselected", ()))}  # looked up per cell
    info = grid.get("target_info", {})
    head = "<tr><th class='name'>case</th>" + "".join(
        f"<th class='target'{_column(t, info.get(t, {}))}>{esc(t)}</th>"
        for t in grid["targets"]) + "</tr>"
    rows = [f"<tr data-case='{esc(case)}'><td class='name'>{esc(case)}</td>"
            + "".join(grid_cell(grid, case, target, new_cells) for target in grid["targets"])
            + "</tr>" for case in grid["cases"]]
    legend = "".join(f"<span style='background:{COLOURS[o]}'>{LEGEND.get(o, o)}</span>"
                     for o in COLOURS if o) + "<span>blank: no such target</span>" + (
        "<span class='new-legend' style='outline:2px solid #1e88e5'>new cell</span>"
        if new_cells else "")
    return ("<h2 id='matrix'>Matrix</h2><p class='legend'>" + legend + "</p>"
            "<p>Each cell is the worst outcome of its checks; hover for them, click for the "
            "failure messages. A hatched cell is one of the case's targets that this run did "
            "not select (another tier, -k); a blank one, a target the case does not have.</p>"
            + filters(grid)
            + f"<div class='scroll'><table class='grid' id='grid'>{head}{''.join(rows)}"
              "</table></div><div id='detail'>Click a cell.</div>")


def grid_cell(grid: dict, case: str, target: str, new_cells: frozenset) -> str:
    """One cell of the grid: its colour and symbol, what hovering says, and what the
    filters and the click read."""
    key = f"{case}|{target}"
    cell = grid["cells"].get(key)
    unselected = key in grid.get("unselected", ())
    outcome = cell["outcome"] if cell else "unselected" if unselected else None
    hover = ("new cell (not in the baseline)\n" if key in new_cells else "") + (
        _hover(case, target, cell) if cell else
        f"{case} on {target}: not run in this selection" if outcome else
        f"{case} on {target}: the case has no such target")
    attrs = (f" data-key='{esc(key)}' data-outcome='{outcome}'" if cell else
             f" data-outcome='{outcome or 'none'}'") + f" title='{esc(hover)}'"
    marked = " class='new'" if key in new_cells else ""
    return (f"<td style='background:{COLOURS[outcome]}'{attrs}"
            f"{_column(target, grid.get('target_info', {}).get(target, {}))}{marked}>"
            f"{SYMBOLS[outcome]}</td>")


def filters(grid: dict) -> str:
    """Selects that hide the grid's rows without an outcome, and its other columns."""
    info = grid.get("target_info", {})

    def select(name: str, values) -> str:
        options = "".join(f"<option value='{esc(v)}'>{esc(v)}</option>" for v in values)
        return (f"<label>{name} <select id='filter-{name}'><option value=''>all</option>"
                f"{options}</select></label>")

    outcomes = [o for o in SEVERITY_ORDER if any(c["outcome"] == o
                                                 for c in grid["cells"].values())]
    return ("<p class='filters'>" + select("outcome", outcomes)
            + select("path", sorted({i.get("path", "") for i in info.values()}))
            + select("runtime", sorted({i.get("runtime", "") for i in info.values()}))
            + "</p>")


def history_of(trend: list[dict], key: str, name: str) -> list[float | None]:
    return [point[key].get(name) for point in trend]


def pass_rate_section(rows: list[dict], trend: list[dict] = ()) -> str:
    """Each target's counts and pass rate, and its pass rate over the history's runs."""
    runs = f"the last {len(trend)} runs" if trend else ""
    body = [[r["target"], r["ran"], r["passed"], r["failed"] + r["error"], r["xfailed"],
             r["xpassed"], r["skipped"],
             f"<span class='bar' style='width:{100 * (r['pass_rate'] or 0):.0f}px'></span> "
             + (f"{100 * r['pass_rate']:.0f}%" if r["pass_rate"] is not None else "-")]
            + ([sparkline(history_of(trend, "pass_rates", r["target"]), low=0.0, high=1.0,
                          label=f"{r['target']}: pass rate over {runs}")] if trend else [])
            for r in rows]
    header = ["target", "ran", "passed", "failed", "xfailed", "xpassed", "skipped",
              "pass rate"] + ([f"over {runs} (0 to 100%)"] if trend else [])
    return "<h2>Pass rate per target</h2><div class='scroll'>" + table(header, body) + "</div>"


def group_block(group: dict) -> str:
    """One root cause: its count, the real error, where, what the export warned, and
    how to reproduce it."""
    targets = ", ".join(group["targets"])
    parts = [f"<div class='group' data-case='{esc(group['case'])}'>",
             f"<div><b>{plural(group['cells'], 'cell')}</b> · "
             f"case <b>{esc(group['case'])}</b> · path {esc(group['path'])} · "
             f"{esc(group['kind'])}</div>",
             f"<div class='error'>{esc(group['error'])}</div>",
             f"<div class='meta'>targets: {esc(targets)}; checks: "
             f"{esc(', '.join(group['checks']))}</div>"]
    if group.get("diverges_at"):
        parts.append(f"<div class='where'>first divergence: {esc(_diverges(group))}</div>")
    if group["tracer_warnings"]:
        parts.append("<div class='meta'>the export warned: " + "; ".join(
            esc(w) for w in group["tracer_warnings"]) + "</div>")
    if group["reproduce"]:
        parts.append(f"<div class='meta'>reproduce: <code>{esc(group['reproduce'])}</code></div>")
    parts.append(f"<details><summary>message</summary><pre>{esc(group['message'])}</pre>"
                 f"</details></div>")
    return "".join(parts)


def _diverges(group: dict) -> str:
    """`module (its class), max abs error; ONNX node (its op)`."""
    found = group["diverges_at"]
    if not isinstance(found, dict):
        return str(found)
    text = f"module {found.get('module')} ({found.get('kind')})"
    if found.get("max_abs") is not None:
        text += f", max abs error {found['max_abs']:.3g}"
    if found.get("onnx_node"):
        text += f"; ONNX node {found['onnx_node']} ({found.get('onnx_op')})"
    return text


def groups_list(groups: list[dict]) -> str:
    return "".join(group_block(g) for g in groups) or "<p>none</p>"


# The gate's findings, counted in words
GATE_COUNTS = {
    "new failure": lambda n: plural(n, "new failure"),
    "expectation to remove": lambda n: f"{plural(n, 'expectation row')} to remove",
    "latency regression": lambda n: plural(n, "latency regression"),
    "lost coverage": lambda n: f"{n} lost coverage",
    "failing without an expectation row (no baseline)":
        lambda n: f"{plural(n, 'failure')} without an expectation row",
    "no records": lambda n: "no records",
}


def gate_section(changes: dict | None) -> str:
    """The verdict, first: what the gate found since the baseline."""
    if changes is None:
        return ("<p class='gate none' id='gate'>No history given: no gate (report with "
                "--history to compare with the last accepted run).</p>")
    failures = changes["gate_failures"]
    base = (f"compared with run {esc(changes['previous_run'])}, the last accepted run of "
            f"this stack" if changes["previous_run"] is not None else
            "no accepted run of this stack before it: only what the run says of itself")
    if not failures:
        return f"<p class='gate passed' id='gate'>Gate passed: {base}.</p>"
    counts = collections.Counter(f.split(":", 1)[0] for f in failures)
    found = ", ".join(GATE_COUNTS.get(kind, lambda n: f"{n} x {kind}")(n)
                      + (f" ({plural(len(changes['new_failure_groups']), 'cause')})"
                         if kind == "new failure" else "")
                      for kind, n in counts.items())
    return f"<p class='gate failed' id='gate'>Gate failed: {esc(found)}; {base}.</p>"


def what_broke_section(summary: dict, changes: dict | None) -> str:
    """The first screen: the new failures grouped by root cause (every failure without a
    baseline), then what else the gate and the rerun saw; the other failures folded."""
    groups = summary["failure_groups"]
    if changes is not None and changes["previous_run"] is not None:
        new = changes["new_failure_groups"]
        head = (f"<h2 id='what-broke'>What broke since run {esc(changes['previous_run'])}"
                f" ({plural(sum(g['cells'] for g in new), 'cell')}, "
                f"{plural(len(new), 'cause')})</h2>")
        body = groups_list(new)
        fresh = {(g['case'], g['path'], g['kind'], g['error']) for g in new}
        known = sum((g['case'], g['path'], g['kind'], g['error']) not in fresh for g in groups)
        rest = (f"<details><summary>All failures, grouped by cause "
                f"({plural(len(groups), 'cause')}, {known} known before)</summary>"
                f"{groups_list(groups)}</details>")
    else:
        head = (f"<h2 id='what-broke'>Failures, grouped by cause "
                f"({plural(sum(g['cells'] for g in groups), 'cell')}, "
                f"{plural(len(groups), 'cause')})</h2>")
        body, rest = groups_list(groups), ""
    return ("<section id='first-screen'>" + head + body + change_lists(changes)
            + rest + "</section>")


def cost_section(cost: dict) -> str:
    """Where the run's time went: the slowest cases, paths and checks, each one's share."""
    if not cost.get("case"):
        return ""
    parts = ["<h2 id='cost'>Where the run's time goes</h2><p>The cells' own time (their "
             "test's call: building, exporting, running), summed; under pytest-xdist, over "
             "the workers.</p><div class='cost'>"]
    for key in ("case", "path", "check"):
        rows = [[row[key], f"{row['seconds']:.1f}",
                 f"<span class='bar' style='width:{100 * row['share']:.0f}px'></span> "
                 f"{row['share']:.0%}", row["cells"]] for row in cost[key]]
        parts.append("<div class='scroll'>" + table([key, "seconds", "share", "cells"], rows)
                     + "</div>")
    return "".join(parts) + "</div>"


def costs_section(rows: list[dict]) -> str:
    if not rows:
        return ""
    labels = sorted({k for r in rows for k in r if k != "case"})
    body = [[r["case"]] + [f"{r[k]:.1f}" if k in r else "-" for k in labels] for r in rows]
    return "<h2>Export and compile times (s)</h2>" + table(["case"] + labels, body)


def _speedup_bar(speedup: float | None) -> str:
    if not speedup:
        return "-"
    width = 60 + 40 * math.log2(speedup)  # 1x at 60 px, each doubling 40 px more
    colour = "#43a047" if speedup >= 1 else "#e53935"
    return (f"<span class='bar' style='width:{max(2, width):.0f}px;background:{colour}'>"
            f"</span> {speedup:.2f}x")


def latency_section(latency: dict, traces: str | None = None, trend: list[dict] = ()) -> str:
    if not latency["rows"] and not latency.get("profiles"):
        return ""
    rows = [[r["case"], r["target"], ms(r["median_s"]), ms(r["p90_s"]),
             f"{r['iqr_over_median']:.3f}", _speedup_bar(r["speedup"]),
             box_pair(r.get("quantiles_s") or [], r.get("eager_quantiles_s") or []),
             ms(r["first_call_s"]), f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "-"]
            for r in latency["rows"]]
    means = [[g["backend"], _speedup_bar(g["speedup"]), g["cases"]]
             + ([sparkline(history_of(trend, "geomeans", g["backend"]),
                           label=f"{g['backend']}: geometric-mean speedup over the last "
                                 f"{len(trend)} runs")] if trend else [])
             for g in latency["geomeans"]]
    return ("<h2>Latency</h2>" + (f"<p>thread budget: {esc(describe_budget(latency['budget']))}</p>"
                                  if latency["budget"] else "")
            + "<h3>Geometric mean of the speedup over eager, per backend</h3>"
            + table(["backend", "speedup", "cases"] + (["over the history"] if trend else []),
                    means)
            + "<h3>Per case</h3><p>distribution: the target's samples (blue) above eager's "
              "(grey) on one logarithmic axis; box from the first to the third quartile, "
              "whiskers from the fastest to the slowest sample.</p><div class='scroll'>"
            + table(["case", "target", "median ms", "p90 ms", "IQR/median", "speedup over eager",
                     "distribution", "first call ms", "peak MiB"], rows, name_columns=2)
            + "</div>"
            + profiles_section(latency.get("profiles") or [], traces))


def profiles_section(profiles: list[dict], traces: str | None) -> str:
    """Each profiled target's top operators by self time, with its trace."""
    if not profiles:
        return ""
    parts = ["<h3>Where the time goes</h3><p>The top operators of each profiled target "
             "by self time per model call, from its own profiler; "
             + " and ".join(f"<code>{esc(name)}</code>" for name in CALL_EVENTS)
             + " are the time of a call outside any operator. Open a trace in "
               "chrome://tracing or Perfetto.</p><div id='profiles'>"]
    for found in profiles:
        parts.append(_profile_block(found["case"], found["target"], found["profile"], traces))
    return "".join(parts) + "</div>"


def _profile_block(case: str, target: str, profile: dict, traces: str | None) -> str:
    heading = esc(profile_heading(profile))
    if profile.get("trace"):
        name = esc(profile["trace"])
        heading += "; trace " + (f"<a class='trace' href='{esc(_href(traces, profile['trace']))}'>"
                                 f"{name}</a>" if traces is not None
                                 else f"<code class='trace'>{name}</code>")
    rows = [[r["name"], f"{r['self_ms_per_call']:.4f}",
             f"<span class='bar' style='width:{100 * r['share']:.0f}px'></span> "
             f"{100 * r['share']:.1f}%", f"{r['count']:g}"]
            for r in profile.get("top") or []]
    body = (table(["operator", "self ms per call", "share", "calls per call"], rows)
            if rows else "")
    return (f"<div class='profile' data-key='{esc(case)}|{esc(target)}'>"
            f"<h4>{esc(case)} on {esc(target)}</h4><p>{heading}</p>{body}</div>")


def _href(traces: str, name: str) -> str:
    """The trace's address relative to the page: `traces` is the folder's."""
    from urllib.parse import quote

    folder = traces.rstrip("/")
    return quote(f"{folder}/{name}" if folder not in ("", ".") else name)


# The change lists after the grouped failures: (key, title, open when not empty)
CHANGE_LISTS = (("fixes", "Fixed", True), ("lost_coverage", "Lost coverage", True),
                ("latency_regressions", "Latency regressions", True),
                ("stale_expectations", "Expectation rows to remove (unexpected passes)", True),
                ("reruns", "Rerun cells (the later outcome kept)", False),
                ("need_expectation", "Failing without an expectation row", False),
                ("new_cells", "New cells (not in the baseline)", False))


def change_lists(changes: dict | None) -> str:
    if changes is None:
        return ""
    parts, empty = [], []
    for key, title, opened in CHANGE_LISTS:
        items = changes.get(key) or []
        if not items:
            empty.append(f"<span id='{key}'>{title.split(' (')[0].lower()}</span>")
            continue
        listed = "".join(f"<li>{esc(i)}</li>" for i in items)
        parts.append(f"<details{' open' if opened else ''}><summary>{title} "
                     f"({len(items)})</summary><ul class='changes' id='{key}'>{listed}</ul>"
                     f"</details>")
    return "".join(parts) + (f"<p class='meta'>none: {', '.join(empty)}</p>" if empty else "")


def describe_budget(budget: dict | None) -> str:
    """A thread budget as words: '1 thread, denormals flushed'."""
    if not budget:
        return "the runtimes' defaults"
    threads = budget.get("threads")
    words = [f"{threads} thread{'s' if threads != 1 else ''}" if threads else
             "the runtimes' own thread counts"]
    words.append("denormals flushed" if budget.get("flush_denormal") else "denormals kept")
    return ", ".join(words)


HEAD = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>")


def render(summary: dict, changes: dict | None, title: str, traces: str | None = None) -> str:
    """The page: the gate's verdict and what broke first, the grid and the rest below;
    `traces`: where the profiles' trace files are, relative to the page (their names are
    shown unlinked without it)."""
    counts = ", ".join(f"{n} {o}" for o, n in summary["counts"].items() if n)
    # every '<' escaped: no message can end the script element or open a comment in it
    cells = json.dumps(summary["grid"]["cells"]).replace("<", "\\u003c")
    new_cells = frozenset((changes or {}).get("new_cell_keys") or [])
    trend = (changes or {}).get("trend") or []
    return (f"{HEAD}<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1><p id='counts'>{esc(counts)}</p>"
            + gate_section(changes) + what_broke_section(summary, changes)
            + grid_section(summary["grid"], new_cells)
            + pass_rate_section(summary["pass_rates"], trend)
            + latency_section(summary["latency"], traces, trend)
            + cost_section(summary.get("cost") or {})
            + costs_section(summary["costs"]) + environment_section(summary["environment"])
            + f"<script type='application/json' id='cells'>{cells}</script>"
            f"<script>{SCRIPT}</script></body></html>")


def render_versions(report: dict, title: str) -> str:
    """The cross-environment page: the environments, the cells whose outcome differs
    and the speedups that move, then the whole grid side by side."""
    names = [env["name"] for env in report["environments"]]
    envs = table(["environment", "stack", "passed", "failed", "xfailed", "skipped", "cell time"],
                 [[e["name"], esc(_stack(e["stack"])), e["counts"]["passed"],
                   e["counts"]["failed"] + e["counts"]["error"] + e["counts"]["xpassed"],
                   e["counts"]["xfailed"], e["counts"]["skipped"], f"{e['cell_s']:.0f} s"]
                  for e in report["environments"]])
    repeats = "".join(f"<p><strong>{esc(' and '.join(group))} ran the same stack</strong>: "
                      "they repeat each other.</p>" for group in report["same_stack"])
    changed = _outcome_table("changed", names, report["changed"], ("case", "target", "check"))
    moved = table(["case", "target", *names, "move"],
                  [[c["case"], c["target"],
                    *(f"{c['speedups'][n]:.2f}x" if n in c["speedups"] else "-" for n in names),
                    f"{c['move']:.2f}x"] for c in report["latency_changed"]], name_columns=2)
    grid = _outcome_table("versions", names, report["rows"], ("case", "target"))
    return (f"{HEAD}<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{esc(title)}</h1>{envs}{repeats}"
            f"<h2>Cells whose outcome differs ({len(report['changed'])})</h2>{changed}"
            f"<h2>Speedups over eager that move ({len(report['latency_changed'])})</h2>{moved}"
            f"<h2>The grid, each cell its worst outcome</h2>{grid}</body></html>")


def _stack(stack: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in stack.items())


def _colour(outcome: str | None) -> str:
    return COLOURS.get(outcome, COLOURS[None])  # `absent`: the environment has no such cell


def _outcome_table(name: str, columns: list[str], rows: list[dict], keys: tuple) -> str:
    head = "".join(f"<th class='name'>{esc(k)}</th>" for k in keys) + "".join(
        f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        tds = "".join(f"<td style='background:{_colour(row['outcomes'].get(c))}' "
                      f"data-outcome='{esc(row['outcomes'].get(c) or 'absent')}' "
                      f"title='{esc((row.get('messages') or {}).get(c, ''))}'>"
                      f"{esc(row['outcomes'].get(c) or 'absent')}</td>" for c in columns)
        body.append("<tr>" + "".join(f"<td class='name'>{esc(row[k])}</td>" for k in keys)
                    + tds + "</tr>")
    return (f"<div class='scroll'><table id='{name}'><tr>{head}</tr>{''.join(body)}</table>"
            "</div>")
