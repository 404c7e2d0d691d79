"""Self-tests of the built-in cases.

They build only the seed models: the zoo's models are exercised by the
conformance matrix itself, and building them here would make these tests slow.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from conformance.cases import Case, name_problem
from conformance.fixtures import BUILTIN_CASES, seed_models, vision_zoo

CASES = {case.name: case for case in BUILTIN_CASES}
# The cases whose example and probes take different branches of Python control
# flow, and whose branches a trace therefore cannot all capture.
BRANCHING = ["my_gate_cell", "my_module", "if_function"]


def build(case: Case):
    torch.manual_seed(case.seed)
    model = case.build()
    if isinstance(model, torch.nn.Module):
        model.eval()
    return model


def example(case: Case, **kwargs):
    torch.manual_seed(case.seed + 1)
    return case.example(**kwargs)


def probes(case: Case):
    torch.manual_seed(case.seed + 2)
    return list(case.probes())


def flatten(output) -> list[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return [output]
    return [tensor for item in output for tensor in flatten(item)]


def same(actual, expected) -> bool:
    actual, expected = flatten(actual), flatten(expected)
    return len(actual) == len(expected) and all(
        a.shape == e.shape and torch.allclose(a, e, rtol=1e-5, atol=1e-6)
        for a, e in zip(actual, expected))


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
    case = CASES[name]
    model = build(case)
    inputs = example(case)
    artifact = traced(model, inputs)
    assert same(run(artifact, inputs), run(model, inputs))
    assert any(not same(run(artifact, probe), run(model, probe)) for probe in probes(case))


@pytest.mark.parametrize("name", BRANCHING + ["my_cell", "wrap_rnn"])
def test_script_matches_eager_on_every_probe(name):
    case = CASES[name]
    model = build(case)
    artifact = scripted(model)
    for inputs in [example(case)] + probes(case):
        assert same(run(artifact, inputs), run(model, inputs))


def test_wrap_rnn_trace_keeps_its_scripted_control_flow():
    case = CASES["wrap_rnn"]
    model = build(case)
    artifact = traced(model, example(case))
    for inputs in probes(case):
        assert same(run(artifact, inputs), run(model, inputs))


def gate_sign(cell: torch.nn.Module, x: torch.Tensor) -> bool:
    # Through the parameters, because a traced cell's submodules cannot be called.
    linear = cell.linear
    with torch.no_grad():
        return bool(torch.nn.functional.linear(x, linear.weight, linear.bias).sum() > 0)


def test_gate_probes_take_both_branches():
    case = CASES["my_gate_cell"]
    cell = build(case)
    taken = {gate_sign(cell, inputs[0]) for inputs in [example(case)] + probes(case)}
    assert taken == {True, False}


def test_wrap_rnn_probes_take_both_gate_branches():
    case = CASES["wrap_rnn"]
    cell = build(case).loop.cell
    taken = {gate_sign(cell, inputs[0][0]) for inputs in probes(case)}
    assert taken == {True, False}


def test_if_function_is_a_module_level_function():
    assert CASES["if_function"].build() is seed_models.max_pick


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.batch_sizes])
def test_example_takes_the_batch_size(name):
    case = CASES[name]
    for batch in case.batch_sizes:
        inputs = example(case, batch=batch)
        assert inputs and all(tensor.shape[0] == batch for tensor in inputs)
    assert all(tensor.shape[0] not in case.batch_sizes for tensor in example(case))


@pytest.mark.parametrize("name", ["super_resolution_net", "srcnn"])
def test_batched_example_runs(name):
    case = CASES[name]
    model = build(case)
    output = run(model, example(case, batch=case.batch_sizes[0]))
    assert output.shape[0] == case.batch_sizes[0]


@pytest.mark.parametrize("row", vision_zoo.ZOO, ids=lambda row: row.name)
def test_zoo_row_batches_or_says_why_not(row):
    assert row.batch_sizes == (2,) or row.why


@pytest.mark.parametrize("row", vision_zoo.ZOO, ids=lambda row: row.name)
def test_quantized_rows_name_their_engine(row):
    assert (row.family == "quantized") == (row.quantized_engine is not None)
    assert ("classifier" in CASES[row.name].tags) == (row.family != "segmentation")
