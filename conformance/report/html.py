"""The HTML report: one self-contained page (inline style and script, no network)."""
from __future__ import annotations

import html
import json
import math

from conformance.latency.profile import CALL_EVENTS, profile_heading
from conformance.latency.summary import ms
from conformance.messages import first_line

COLOURS = {"error": "#b71c1c", "failed": "#e53935", "xpassed": "#fb8c00", "xfailed": "#fdd835",
           "passed": "#43a047", "skipped": "#e0e0e0", None: "#ffffff"}
SYMBOLS = {"error": "E", "failed": "F", "xpassed": "X!", "xfailed": "x", "passed": "",
           "skipped": "s", None: ""}

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
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
"""


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
        rows.append(["thread budget", esc(env["budget"])])
    return "<h2>Environment</h2>" + table(["", "version"], rows)


def _hover(case: str, target: str, cell: dict) -> str:
    lines = [f"{case} on {target}: {cell['outcome']}"]
    for c in cell["checks"]:
        error = f", max abs {c['max_abs']:.3g}" if c.get("max_abs") is not None else ""
        first = first_line(c["message"])
        lines.append(f"{c['check']}: {c['outcome']}{error}" + (f" ({first[:160]})"
                                                               if first else ""))
    return "\n".join(lines)


def grid_section(grid: dict) -> str:
    head = "<tr><th class='name'>case</th>" + "".join(
        f"<th class='target'>{esc(t)}</th>" for t in grid["targets"]) + "</tr>"
    rows = []
    for case in grid["cases"]:
        tds = []
        for target in grid["targets"]:
            cell = grid["cells"].get(f"{case}|{target}")
            outcome = cell["outcome"] if cell else None
            attrs = (f" data-key='{esc(case)}|{esc(target)}' data-outcome='{outcome}'"
                     f" title='{esc(_hover(case, target, cell))}'" if cell else "")
            tds.append(f"<td style='background:{COLOURS[outcome]}'{attrs}>"
                       f"{SYMBOLS[outcome]}</td>")
        rows.append(f"<tr><td class='name'>{esc(case)}</td>{''.join(tds)}</tr>")
    legend = "".join(f"<span style='background:{COLOURS[o]}'>{o}</span>"
                     for o in COLOURS if o)
    return ("<h2>Matrix</h2><p class='legend'>" + legend + "</p>"
            "<p>Each cell is the worst outcome of its checks; hover for them, click for the "
            "failure messages.</p>"
            f"<table class='grid' id='grid'>{head}{''.join(rows)}</table>"
            "<div id='detail'>Click a cell.</div>")


def pass_rate_section(rows: list[dict]) -> str:
    body = [[r["target"], r["ran"], r["passed"], r["failed"] + r["error"], r["xfailed"],
             r["xpassed"], r["skipped"],
             f"<span class='bar' style='width:{100 * (r['pass_rate'] or 0):.0f}px'></span> "
             + (f"{100 * r['pass_rate']:.0f}%" if r["pass_rate"] is not None else "-")]
            for r in rows]
    return "<h2>Pass rate per target</h2>" + table(
        ["target", "ran", "passed", "failed", "xfailed", "xpassed", "skipped", "pass rate"], body)


def shared_causes_section(rows: list[dict]) -> str:
    if not rows:
        return ""
    return "<h2>Failures that share a cause</h2>" + table(
        ["cells", "cause"], [[r["cells"], r["cause"]] for r in rows], name_columns=2)


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


def latency_section(latency: dict, traces: str | None = None) -> str:
    if not latency["rows"] and not latency.get("profiles"):
        return ""
    rows = [[r["case"], r["target"], ms(r["median_s"]), ms(r["p90_s"]),
             f"{r['iqr_over_median']:.3f}", _speedup_bar(r["speedup"]), ms(r["first_call_s"]),
             f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "-"]
            for r in latency["rows"]]
    means = [[g["backend"], _speedup_bar(g["speedup"]), g["cases"]] for g in latency["geomeans"]]
    return ("<h2>Latency</h2>" + (f"<p>thread budget: {esc(latency['budget'])}</p>"
                                  if latency["budget"] else "")
            + "<h3>Geometric mean of the speedup over eager, per backend</h3>"
            + table(["backend", "speedup", "cases"], means)
            + "<h3>Per case</h3>"
            + table(["case", "target", "median ms", "p90 ms", "IQR/median", "speedup over eager",
                     "first call ms", "peak MiB"], rows, name_columns=2)
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


def changes_section(changes: dict | None) -> str:
    if changes is None:
        return "<h2>Changes</h2><p>No earlier comparable run in the history.</p>"
    parts = [f"<h2>Changes since run {esc(changes['previous_run'])}</h2>"]
    for key, title in (("new_failures", "New failures"), ("fixes", "Fixed"),
                       ("need_expectation", "Failing without an expectation row"),
                       ("stale_expectations", "Expectation rows to remove (unexpected passes)"),
                       ("latency_regressions", "Latency regressions")):
        items = changes.get(key) or []
        listed = "".join(f"<li>{esc(i)}</li>" for i in items) or "<li>none</li>"
        parts.append(f"<h3>{title} ({len(items)})</h3><ul class='changes' id='{key}'>"
                     f"{listed}</ul>")
    return "".join(parts)


def render(summary: dict, changes: dict | None, title: str, traces: str | None = None) -> str:
    """The page; `traces`: where the profiles' trace files are, relative to the page
    (their names are shown unlinked without it)."""
    counts = ", ".join(f"{n} {o}" for o, n in summary["counts"].items() if n)
    cells = json.dumps(summary["grid"]["cells"]).replace("</", "<\\/")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
            f"<p id='counts'>{esc(counts)}</p>"
            + changes_section(changes) + shared_causes_section(summary["shared_causes"])
            + grid_section(summary["grid"])
            + pass_rate_section(summary["pass_rates"])
            + latency_section(summary["latency"], traces)
            + costs_section(summary["costs"]) + environment_section(summary["environment"])
            + f"<script type='application/json' id='cells'>{cells}</script>"
            f"<script>{SCRIPT}</script></body></html>")


def render_cross_version(matrix: dict, title: str) -> str:
    head = "".join(f"<th>torch {esc(v)}</th>" for v in matrix["versions"])
    rows = []
    for row in matrix["rows"]:
        tds = "".join(f"<td style='background:{COLOURS[row['outcomes'].get(v)]}' "
                      f"data-outcome='{row['outcomes'].get(v)}'>"
                      f"{esc(row['outcomes'].get(v) or 'absent')}</td>"
                      for v in matrix["versions"])
        rows.append(f"<tr><td class='name'>{esc(row['case'])}</td>"
                    f"<td class='name'>{esc(row['target'])}</td>{tds}</tr>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{esc(title)}</h1>"
            f"<table id='versions'><tr><th class='name'>case</th><th class='name'>target</th>"
            f"{head}</tr>{''.join(rows)}</table></body></html>")
