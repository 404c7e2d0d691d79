"""The export-path and runtime tables: a new path is one module and one row, and a row
that forgets a field or contradicts itself is refused."""
from __future__ import annotations

import dataclasses
import json

import pytest

from conformance.checks.control_flow import READERS
from conformance.checks.generated import BRANCH_SPELLINGS
from conformance.exporters.path import ALL, ARTIFACT_CHECKS, ExportPath, Runs, check_row
from conformance.exporters.table import PATHS, register
from conformance.runtimes.table import RUNTIMES, Runtime

# The one module a new path needs: its exporter, and its loader on the torch runtime.
TOY_PATH_MODULE = """
import torch


def export_toy(model, example, file, options):
    torch.jit.save(torch.jit.trace(model, example, check_trace=False), str(file))


def load_toy(file, device):
    return torch.jit.load(str(file), map_location=device).eval()
"""

# And its row, registered where a plugin or conftest.py runs.
TOY_PATH_ROW = """
from conformance.exporters.path import ALL, ExportPath, Runs
from conformance.exporters.table import register

import toy_path

register(ExportPath(
    name="toy", export=toy_path.export_toy, suffix=".pt", opsets=((None, ALL),),
    runs_on=(Runs("torch", ALL, ("cpu",)),), loaders={"torch": toy_path.load_toy},
    branch=None, graph="torchscript", artifact_checks=frozenset(), artifact_checks_on=None,
    takes_any_size=True, specializes_size_one=False, scripts_control_flow=False,
    bakes_threads=False, inductor=False, compiler_for=frozenset(),
    flat_outputs_on=frozenset(), cost_timings={}))
"""

TINY_CASE = """
import torch
from conformance import Case, random_inputs

CASES = [Case("tiny", lambda: torch.nn.Linear(4, 3), random_inputs((2, 4)))]
"""


def test_a_new_path_is_one_module_and_one_row_and_its_cells_run(pytester):
    pytester.makepyfile(toy_path=TOY_PATH_MODULE, conftest=TOY_PATH_ROW, tiny_cases=TINY_CASE)
    # A fresh process: registering a path changes the table for the rest of a process.
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=tiny_cases.py",
        "--conformance-results=records.jsonl", "--artifacts-dir=artifacts", "-k", "toy",
        "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)  # matches_eager, generalizes, fresh_process, mutates
    records = [json.loads(line) for line in (pytester.path / "records.jsonl").read_text()
               .splitlines()]
    assert {(r["target"], r["check"]) for r in records} == {
        ("toy-torch-cpu", check) for check in
        ("matches_eager", "generalizes", "fresh_process", "mutates_like_eager")}
    assert all(r["artifact"]["file"].endswith(".pt") for r in records
               if r["check"] == "matches_eager")


def test_a_new_path_reserves_its_name_for_case_names(pytester):
    pytester.makepyfile(toy_path=TOY_PATH_MODULE, conftest=TOY_PATH_ROW, tiny_cases=TINY_CASE
                        .replace('"tiny"', '"toy_model"'))
    result = pytester.runpytest_subprocess("--pyargs", "conformance", "--no-builtin-cases",
                                           "--cases=tiny_cases.py", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "contains 'toy'" in result.stderr.str()


def row_fields(row) -> dict:
    return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}


ROWS_MISSING_A_FIELD = [(kind, row, field.name) for kind, row in
                        ((ExportPath, PATHS["trace"]), (Runtime, RUNTIMES["onnxruntime"]))
                        for field in dataclasses.fields(kind)]


@pytest.mark.parametrize("kind, row, field", ROWS_MISSING_A_FIELD,
                         ids=[f"{kind.__name__}.{field}" for kind, _, field in ROWS_MISSING_A_FIELD])
def test_a_row_that_forgets_a_field_is_refused(kind, row, field):
    fields = row_fields(row)
    del fields[field]
    with pytest.raises(TypeError, match=field):
        kind(**fields)


CONTRADICTIONS = [
    # (what the row gets wrong, the change, the words of the refusal)
    ("an unknown runtime", {"runs_on": (Runs("tflite", ALL, ("cpu",)),)}, "unknown runtimes"),
    ("no loader on torch", {"loaders": {}}, "no loader for its artifacts on ['torch']"),
    ("a branch spelling nobody generates", {"branch": "while"}, "branch 'while'"),
    ("a check that is not an artifact check", {"artifact_checks": frozenset({"matches_eager"})},
     "are not artifact checks"),
    ("artifact checks on a runtime it does not run on", {"artifact_checks_on": "onnxruntime"},
     "is not one of its runtimes"),
    ("a file without a suffix", {"suffix": None}, "has a suffix"),
    ("no opsets at all", {"opsets": ()}, "opsets is empty"),
]


@pytest.mark.parametrize("change,words", [c[1:] for c in CONTRADICTIONS],
                         ids=[c[0] for c in CONTRADICTIONS])
def test_a_path_row_whose_fields_disagree_is_refused(change, words):
    row = dataclasses.replace(PATHS["trace"], name="broken", **change)
    with pytest.raises(ValueError, match="export path 'broken'") as refused:
        register(row)
    assert words in str(refused.value)
    assert "broken" not in PATHS


def test_a_path_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        register(PATHS["trace"])


@pytest.mark.parametrize("name", list(PATHS))
def test_every_built_in_row_agrees_with_the_checks_and_generators(name):
    row = PATHS[name]
    check_row(row, RUNTIMES, ARTIFACT_CHECKS, frozenset(READERS))
    assert row.branch is None or row.branch in BRANCH_SPELLINGS
