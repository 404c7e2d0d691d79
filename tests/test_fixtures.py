"""Self-tests of the built-in cases.

They build only the seed models: the zoo's models are exercised by the
conformance matrix itself, and building them here would make these tests slow.
Cases are built through `CaseState`, so the seeds and probes are the suite's own.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
import torch

from conformance import calling
from conformance.cases import Case, missing_requirements, name_problem
from conformance.checks.compare import compare
from conformance.checks.subject import CaseState
from conformance.fixtures import BUILTIN_CASES, seed_models, vision_zoo

CASES = {case.name: case for case in BUILTIN_CASES}
# The cases whose example and probes take different branches of Python control
# flow, and whose branches a trace therefore cannot all capture.
BRANCHING = ["my_gate_cell", "my_module", "if_function"]


# The states' folders, in one folder that goes when the tests' process ends.
SCRATCH = Path(tempfile.mkdtemp(prefix="fixtures-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)


def state(case: Case) -> CaseState:
    """The case as the suite builds it: same seeds, same probes."""
    return CaseState(case, "cpu", Path(tempfile.mkdtemp(dir=SCRATCH)))


def all_inputs(case_state: CaseState) -> list:
    """The example, then every probe the suite would run."""
    return [case_state.example] + [probe.inputs for probe in case_state.probes]


def same(actual, expected) -> bool:
    return compare(actual, expected).ok


def run(model, inputs):
    with torch.no_grad():
        return model(*inputs)


def traced(model, inputs):
    with warnings.catch_warnings():
        # The trace is expected to freeze a branch; its warning says just that.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, inputs, check_trace=False, strict=False)


def scripted(model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.script(model)


def test_builtin_cases_are_cases():
    assert BUILTIN_CASES and all(isinstance(case, Case) for case in BUILTIN_CASES)


def test_names_are_unique():
    names = [case.name for case in BUILTIN_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", list(CASES))
def test_name_is_valid(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name", BRANCHING + ["wrap_rnn"])
def test_control_flow_cases_are_tagged(name):
    assert CASES[name].has_control_flow
    assert CASES[name].probes is not None


@pytest.mark.parametrize("name", BRANCHING)
def test_trace_misses_a_probe_branch(name):
    case_state = state(CASES[name])
    model, inputs = case_state.model, case_state.example
    artifact = traced(model, inputs)
    assert same(run(artifact, inputs), run(model, inputs))
    assert any(not same(run(artifact, probe.inputs), run(model, probe.inputs))
               for probe in case_state.probes)


@pytest.mark.parametrize("name", BRANCHING + ["my_cell", "wrap_rnn"])
def test_script_matches_eager_on_every_probe(name):
    case_state = state(CASES[name])
    artifact = scripted(case_state.model)
    for inputs in all_inputs(case_state):
        assert same(run(artifact, inputs), run(case_state.model, inputs))


def test_wrap_rnn_trace_keeps_its_scripted_control_flow():
    case_state = state(CASES["wrap_rnn"])
    artifact = traced(case_state.model, case_state.example)
    for inputs in all_inputs(case_state):
        assert same(run(artifact, inputs), run(case_state.model, inputs))


def gate_sign(cell: torch.nn.Module, x: torch.Tensor) -> bool:
    # Through the parameters, because a traced cell's submodules cannot be called.
    linear = cell.linear
    with torch.no_grad():
        return bool(torch.nn.functional.linear(x, linear.weight, linear.bias).sum() > 0)


def test_gate_probes_take_both_branches():
    case_state = state(CASES["my_gate_cell"])
    taken = {gate_sign(case_state.model, inputs[0]) for inputs in all_inputs(case_state)}
    assert taken == {True, False}


def test_wrap_rnn_probes_take_both_gate_branches():
    case_state = state(CASES["wrap_rnn"])
    cell = case_state.model.loop.cell
    taken = {gate_sign(cell, inputs[0][0]) for inputs in all_inputs(case_state)}
    assert taken == {True, False}


def test_if_function_is_a_module_level_function():
    assert CASES["if_function"].build() is seed_models.max_pick


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.batch_sizes])
def test_example_takes_the_batch_size(name):
    case = CASES[name]
    if missing_requirements(case):
        pytest.skip(f"{name} requires {missing_requirements(case)}")

    def tensors(value):
        args, kwargs = calling.parts(value)
        return [v for v in (*args, *kwargs.values()) if hasattr(v, "shape")]

    for batch in case.batch_sizes:
        inputs = tensors(case.example(batch=batch))
        assert inputs and all(tensor.shape[0] == batch for tensor in inputs)
    assert all(tensor.shape[0] not in case.batch_sizes for tensor in tensors(case.example()))


@pytest.mark.parametrize("name", ["super_resolution_net", "srcnn"])
def test_batched_example_runs(name):
    case_state = state(CASES[name])
    batch = CASES[name].batch_sizes[0]
    output = run(case_state.model, CASES[name].example(batch=batch))
    assert output.shape[0] == batch


@pytest.mark.parametrize("row", vision_zoo.ZOO, ids=lambda row: row.name)
def test_zoo_row_batches_or_says_why_not(row):
    assert row.batch_sizes == (2,) or row.why


@pytest.mark.parametrize("row", vision_zoo.ZOO, ids=lambda row: row.name)
def test_quantized_rows_name_their_engine(row):
    assert (row.family == "quantized") == (row.quantized_engine is not None)
    assert ("classifier" in CASES[row.name].tags) == (row.family != "segmentation")


@pytest.mark.parametrize("row", vision_zoo.ZOO, ids=lambda row: row.name)
def test_slow_rows_say_why(row):
    assert "slow" not in row.tags or "slow" in row.why


def test_the_families_import_without_transformers_or_timm():
    """The module of the families is imported with every built-in case: without the
    `families` extra it must still import, and each case must say what it requires."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['transformers'] = None; sys.modules['timm'] = None\n"
            "from conformance.fixtures import model_families\n"
            "print(len(model_families.CASES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 15


@pytest.mark.parametrize("case", [case for case in BUILTIN_CASES if "family" in case.tags],
                         ids=lambda case: case.name)
def test_a_family_case_requires_its_library_and_names_its_source(case):
    source = ({"transformers", "timm"} & case.tags)
    assert len(source) == 1 and case.requires == tuple(source)
