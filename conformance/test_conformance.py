"""The conformance matrix: one test per (case, target, check) cell.

The plugin parametrizes `conformance_spec` with every cell; the ids read
`<case>-<path>-<runtime>-<device>-<check>`, so `-k` selects by any of them.
"""


def test_check(conformance_cell):
    conformance_cell.check()
