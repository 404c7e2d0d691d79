"""The order of the cells under pytest-xdist: the slowest scope first. A scope is what
one worker runs at a stretch (conformance.case_groups): a case's cells, or a cell of an
independent check (a family's search). xdist hands a worker the next scope when it
finishes one; a heavy scope handed out last keeps one worker busy while the others are
idle, so the run ends when it does. Dealt slowest first (longest processing time first),
the workers finish close together.

The costs are the previous run's records in the results file when it holds any, else
the table shipped with the suite (fixtures/case_costs.json), measured on the tier whose
property profile the run uses: a nightly search takes minutes where the CI one takes
seconds, and the compiled paths of the slow cases dominate the night. The controller
reads them once and hands them to every worker, whose collections must agree; a scope
neither knows counts as the median one. Within a scope the cells keep their order."""
from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path

from conformance.case_groups import scope_of
from conformance.cell import cell_spec


def known_costs(results: Path, profile: str = "ci") -> dict[str, float]:
    """Each scope's time in the previous run's records, else in the shipped table of the
    tier that runs the property profile `profile`."""
    try:
        records = [json.loads(line) for line in Path(results).read_text().splitlines()
                   if line.strip()]
        if records:
            return scope_costs(records)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no records, or not ours: the shipped table
    return shipped_costs(profile)


def scope_costs(records: list[dict]) -> dict[str, float]:
    """The cells' `duration_s` summed per scope (a record without a node id: its case)."""
    costs: dict[str, float] = collections.defaultdict(float)
    for record in records:
        scope = scope_of(record.get("nodeid") or "") or record["case"]
        costs[scope] += record.get("duration_s") or 0.0
    return dict(costs)


def shipped_costs(profile: str) -> dict[str, float]:
    """The shipped table of the tier with this property profile; {} when it is missing."""
    from conformance.layout import case_costs_file

    try:
        tiers = json.loads(case_costs_file().read_text())
        return (tiers[profile] if profile in tiers else tiers["ci"])["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def slowest_first(items: list, costs: dict[str, float]) -> list:
    """The items, the cells of the slowest scope first; other tests after them, in
    their order."""
    cells = [item for item in items if cell_spec(item)]
    if not cells or not costs:
        return items
    fallback = statistics.median(costs.values())
    scopes = {item.nodeid: scope_of(item.nodeid) or cell_spec(item).case for item in cells}
    rank = {scope: (-costs.get(scope, fallback), scope) for scope in scopes.values()}
    others = [item for item in items if not cell_spec(item)]
    return sorted(cells, key=lambda item: rank[scopes[item.nodeid]]) + others
