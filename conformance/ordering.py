"""The order of the cases under pytest-xdist: the slowest first. xdist hands a worker the
next case when it finishes one; a heavy case handed out last keeps one worker busy while
the others are idle, so the run ends when that case does. Dealt slowest first (longest
processing time first), the workers finish close together.

The costs are the previous run's records in the results file when it holds any, else
the table measured on the CI tier and shipped with the suite (fixtures/case_costs.json);
the controller reads them once and hands them to every worker, whose collections must
agree; a case neither knows counts as the median one. Within a case the cells keep their
order."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from conformance.cell import cell_spec


def known_costs(results: Path) -> dict[str, float]:
    """Each case's time in the previous run's records, else in the shipped table."""
    from conformance.layout import case_costs_file
    from conformance.shard import case_costs

    try:
        records = [json.loads(line) for line in Path(results).read_text().splitlines()
                   if line.strip()]
        if records:
            return case_costs(records)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no records, or not ours: the shipped table
    try:
        return json.loads(case_costs_file().read_text())["seconds"]
    except (OSError, ValueError, KeyError):
        return {}


def slowest_first(items: list, costs: dict[str, float]) -> list:
    """The items, their cases' cells the slowest case first; other tests after them, in
    their order."""
    cases = [spec.case for spec in map(cell_spec, items) if spec]
    if not cases or not costs:
        return items
    fallback = statistics.median(costs.values())
    rank = {case: (-costs.get(case, fallback), case) for case in cases}
    cells = [item for item in items if cell_spec(item)]
    others = [item for item in items if not cell_spec(item)]
    return sorted(cells, key=lambda item: rank[cell_spec(item).case]) + others
