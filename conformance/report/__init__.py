"""The report of a run's records: `python -m conformance.report` (`cli`).

`data` summarizes records into what the report shows and merges record files,
`html` writes the page, `history` keeps runs in SQLite, `changes` compares a run
with the previous one of the same stack.
"""
