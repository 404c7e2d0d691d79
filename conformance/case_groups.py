"""Under pytest-xdist, one worker for all the cells of a case: its model is built, its
eager outputs computed and its artifacts exported once.

pytest-xdist's `--dist loadgroup` groups the items of one `xdist_group` mark by adding
the group's name to each item's node id on the worker; pytest 9 keeps node ids in a
structured form that this no longer changes, so with pytest 9 and pytest-xdist 3.8
loadgroup silently spreads a group over every worker (a case's cells then export its
artifacts on two workers, under two keys). This scheduler, used for `--dist loadgroup`,
reads a cell's case from its id instead, and keeps xdist's own grouping for other
tests where xdist managed to add it. A family's cells (`generated_models`) share nothing
but the case's name: each draws and exports its own models, so each is a group of its
own and a family's cells spread over the workers (a nightly search takes minutes per
cell: convnets' 43 cells on one worker kept the other idle for most of an hour). The
scopes are dealt in the order of the items, which the suite sorts slowest first.
"""
from __future__ import annotations

import re

from xdist.scheduler import LoadGroupScheduling

# The matrix's test functions: the id starts with the case's name, which holds no '-'.
CELL_ID = re.compile(r"::test_(?:check|latency)\[([a-z0-9][a-z0-9_.]*)-[^\]]*\]$")
# The check whose cells build nothing of their case's: each draws its own models.
INDEPENDENT_CHECK = "-generated_models]"


def case_of(nodeid: str) -> str | None:
    """The case of a cell's node id; None for any other test."""
    found = CELL_ID.search(nodeid)
    return found.group(1) if found else None


def scope_of(nodeid: str) -> str | None:
    """What a cell is scheduled with, and costed by: its case, or for a cell of an
    independent check its own id (`convnets-aoti-torch-cpu-generated_models`); None for
    any other test."""
    case = case_of(nodeid)
    if case is None or not nodeid.endswith(INDEPENDENT_CHECK):
        return case
    return nodeid[nodeid.index("[") + 1:-1]


class CaseGroupScheduling(LoadGroupScheduling):
    def __init__(self, config, log=None):
        # xdist deals the scope with the most tests first (--loadscope-reorder, its
        # default): a family's cell, one test of minutes, went last and kept one worker
        # busy alone. The items are already in the order to deal them: the slowest scope
        # first (conformance.ordering).
        config.option.loadscopereorder = False
        super().__init__(config, log)

    def _split_scope(self, nodeid: str) -> str:
        scope = super()._split_scope(nodeid)
        if scope != nodeid:  # an xdist_group that xdist could add to the node id
            return scope
        case = case_of(nodeid)
        return f"conformance case {case}" if case and scope_of(nodeid) == case else nodeid
