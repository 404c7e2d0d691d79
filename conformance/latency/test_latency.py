"""Latency: one benchmark per (case, target) whose artifact matches eager, and one
for eager itself; selected by `pytest --latency`, deselected otherwise.

Ids read `<case>-<path>-<runtime>-<device>-latency` (eager: `<case>-eager-torch-<device>-latency`).
"""


def test_latency(latency_cell, benchmark):
    latency_cell.measure(benchmark)
