# The two commands of the README's quick start:
#   make suite   run the conformance matrix on the built-in zoo; records go to results/records.jsonl
#   make check   run the project's own tests: the self-tests, then the fast tier of the matrix
# and the latency benchmark of the fast tier (one process, one thread per runtime):
#   make bench   records go to results/latency-records.jsonl
# and the nightly job: the whole matrix, then its report and history entry:
#   make nightly results/report/report.html, summary.md, report.json; results/history.sqlite
# Each creates (or reuses) .venv and installs the pinned dependencies into it, with the
# `families` extra (transformers and timm, for the built-in model families) and the
# `serve` extra (flask and waitress, for the serve runtime) and the `browser` extra
# (selenium, for the self-test of the served upload page in Chromium).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Extra pytest arguments, e.g. make suite ARGS='-k resnet'
ARGS ?=
# One cell may build, export and run a large model several times; a hang still ends.
TIMEOUT := --timeout 1800

.PHONY: suite check selftest ci-tier bench report versions nightly prune-cache venv clean

suite: $(STAMP)
	$(BIN)/pytest $(TIMEOUT) --conformance-results=results/records.jsonl $(ARGS)

check: selftest ci-tier

# One pytest-xdist worker per core: the self-tests are independent of each other.
selftest: $(STAMP)
	$(BIN)/pytest tests -n auto $(TIMEOUT) $(ARGS)

# The fast tier of the matrix: every case not tagged slow. One worker per core, each
# case's cells on one worker (its xdist_group), so a model is built and exported once.
ci-tier: $(STAMP)
	$(BIN)/pytest -m "not slow" -n auto --dist loadgroup $(TIMEOUT) \
		--conformance-results=results/ci-records.jsonl $(ARGS)

# Every target of the fast tier timed against eager; the table and geometric means end the run.
bench: $(STAMP)
	$(BIN)/pytest --latency -m "not slow" $(TIMEOUT) \
		--conformance-results=results/latency-records.jsonl \
		--benchmark-columns=median,iqr,rounds --benchmark-group-by=group $(ARGS)

# The report of the records in results/ (the latency records too, when there are any),
# compared with the previous run of the same stack in the history; exits 1 on new
# failures, expectation rows to remove or latency regressions.
RECORDS ?= results/records.jsonl $(wildcard results/latency-records.jsonl)
report: $(STAMP)
	$(BIN)/python -m conformance.report $(RECORDS) --out results/report \
		--history results/history.sqlite $(REPORT_ARGS)

# After a tox run across torch versions (tox.ini; one records file per environment in
# results/tox/): the cells whose outcome differs between environments, the speedups over
# eager that move, then the matrix side by side, in results/versions/.
versions: $(STAMP)
	@test -n "$(wildcard results/tox/*.jsonl)" || { echo "make versions: no records in" \
		"results/tox/; run tox first (tox -e torch2.14,torch2.13 writes one file each)" >&2; \
		exit 2; }
	$(BIN)/python -m conformance.report $(wildcard results/tox/*.jsonl) --by-env \
		--out results/versions

# The nightly tier (every cell, the nightly property search; one worker per core, as the
# CI tier), then its report, made even when cells failed, then the artifacts no run has
# used for two weeks leave the cache; the exit status is pytest's, or the report's gate
# when pytest passed.
nightly: $(STAMP)
	$(BIN)/pytest -m nightly -n auto --dist loadgroup $(TIMEOUT) --property-profile nightly \
		--conformance-results=results/records.jsonl $(ARGS); \
	tests=$$?; $(MAKE) report RECORDS=results/records.jsonl; report=$$?; \
	$(MAKE) prune-cache; exit $$(( tests ? tests : report ))

# The artifact cache keeps every key a changed model, exporter or stack leaves behind:
# remove what no run has used for UNUSED_DAYS days.
UNUSED_DAYS ?= 14
prune-cache: $(STAMP)
	$(BIN)/python -m conformance.pruning --unused-days $(UNUSED_DAYS)

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[families,serve,browser]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) results *.egg-info
