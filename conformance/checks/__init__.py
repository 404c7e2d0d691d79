"""What the suite asks of an artifact: the checks, and what they look at.

`subject` builds a case once (eager model, inputs, references, artifacts) and shows
it through one target; `catalog` holds the checks, each a small named function, and
which cells they apply to; `compare` says whether outputs agree within tolerance;
`probes` derives inputs from a case's example; `control_flow` reads artifact graphs;
`property_search` runs Hypothesis searches; `families` and `generated` draw whole
models; `time_limit` bounds a cell.
"""
