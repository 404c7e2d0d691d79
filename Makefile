# The two commands of the README's quick start:
#   make suite   run the conformance matrix on the built-in zoo; records go to results/records.jsonl
#   make check   run the project's own tests: the self-tests, then the fast tier of the matrix
# and the latency benchmark of the fast tier (one process, one thread per runtime):
#   make bench   records go to results/latency-records.jsonl
# Each creates (or reuses) .venv and installs the pinned dependencies into it.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pytest arguments, e.g. make suite ARGS='-k resnet'
ARGS ?=
# One cell may build, export and run a large model several times; a hang still ends.
TIMEOUT := --timeout 1800

.PHONY: suite check selftest ci-tier bench venv clean

suite: $(STAMP)
	$(BIN)/pytest $(TIMEOUT) --conformance-results=results/records.jsonl $(ARGS)

check: selftest ci-tier

selftest: $(STAMP)
	$(BIN)/pytest tests $(TIMEOUT) $(ARGS)

# The fast tier of the matrix: every case not tagged slow.
ci-tier: $(STAMP)
	$(BIN)/pytest -m "not slow" $(TIMEOUT) --conformance-results=results/ci-records.jsonl $(ARGS)

# Every target of the fast tier timed against eager; the table and geometric means end the run.
bench: $(STAMP)
	$(BIN)/pytest --latency -m "not slow" $(TIMEOUT) \
		--conformance-results=results/latency-records.jsonl \
		--benchmark-columns=median,iqr,rounds --benchmark-group-by=group $(ARGS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(STAMP)

clean:
	rm -rf $(VENV) results *.egg-info
