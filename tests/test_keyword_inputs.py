"""Self-tests of inputs given by keyword: the flat form (conformance.calling), every path
and runtime receiving them as it takes them, and failures when one of them drops them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conformance import Case, Inputs, calling
from conformance.cases import example_problem
from conformance.checks.catalog import CheckFailure, run_check
from conformance.checks.subject import CaseState, Subject
from conformance.targets import Target
from tests.patching import loader_of, patch_loader


class Masked(torch.nn.Module):
    """Inputs a model takes by keyword, after a parameter the example leaves out (as
    GPT-2's cache comes before its attention mask)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x, cache: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                bias: torch.Tensor | None = None):
        y = self.linear(x)
        if mask is not None:
            y = y * mask
        if bias is not None:
            y = y + bias
        return y


def masked_example(batch: int = 2) -> Inputs:
    # bias before mask: not the signature's order, which the flat form restores
    return Inputs(torch.randn(batch, 3, 4), bias=torch.randn(batch, 3, 4),
                  mask=torch.rand(batch, 3, 1) + 0.5)


MASKED = Case("masked", Masked, masked_example, batch_sizes=(3,), tags={"small"})


def test_the_flat_form_puts_keywords_in_signature_order_and_splits_back():
    x, bias, mask = torch.ones(1), torch.zeros(1), torch.full((1,), 2.0)
    inputs, keywords = calling.flat(Inputs(x, bias=bias, mask=mask),
                                    calling.parameter_names(Masked()))
    assert keywords == ("mask", "bias") and inputs[1] is mask and inputs[2] is bias
    args, kwargs = calling.split(inputs, keywords)
    assert args == (x,) and list(kwargs) == ["mask", "bias"]
    assert calling.flat({"x": x}) == ((x,), ("x",))
    assert calling.flat([x]) == ((x,), ())
    with pytest.raises(TypeError, match="a tuple, a dict or conformance.Inputs"):
        calling.parts(x)


def test_an_example_may_be_a_dict_or_inputs_but_not_a_bare_tensor():
    assert example_problem(MASKED) is None
    assert example_problem(Case("kw", Masked, lambda: {"x": torch.ones(1, 4)})) is None
    problem = example_problem(Case("bare", Masked, lambda: torch.ones(1, 4)))
    assert "a dict of its keyword inputs or conformance.Inputs" in problem


def test_probes_must_take_the_example_form(tmp_path):
    case = Case("mixed", Masked, masked_example, probes=lambda: [(torch.randn(2, 3, 4),)])
    state = CaseState(case, "cpu", tmp_path, use_cache=False)
    with pytest.raises(ValueError, match=r"passes \[\] by keyword, the example \['mask', 'bias'\]"):
        state.probes  # noqa: B018


def _feeding_ones(loaded):
    """A runtime that feeds its own placeholder to every named input."""
    return lambda *args, **kwargs: loaded(*args, **{k: torch.ones_like(v)
                                                    for k, v in kwargs.items()})


@pytest.mark.parametrize("runtime, path, opset", [
    ("torch", "trace", None), ("torch", "script", None), ("torch", "export", None),
    ("onnxruntime", "onnx", 17), ("onnxruntime", "onnx-dynamo", 20)])
def test_a_runtime_that_loses_keyword_inputs_fails_matches_eager(monkeypatch, tmp_path, runtime,
                                                                 path, opset):
    load = loader_of(runtime, path)
    patch_loader(monkeypatch, runtime, lambda file, device: _feeding_ones(load(file, device)))
    state = CaseState(MASKED, "cpu", tmp_path, use_cache=False)
    subject = Subject(state, Target(path, runtime, "cpu", opset), reproduce="pytest <nodeid>")
    with pytest.raises(CheckFailure, match="outside tolerance"):
        run_check(subject, "matches_eager", None)


KEYWORD_CASES = """
import torch
from conformance import Case, Inputs
from tests.test_keyword_inputs import Masked, masked_example

CASES = [Case("masked", Masked, masked_example, batch_sizes=(3,), tags={"small"})]
"""


def test_keyword_inputs_reach_every_path_and_runtime(pytester, monkeypatch):
    """Every CPU target, the libtorch harness and the fresh process included, on a model
    that takes two of its inputs by keyword, in another order than its signature's."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[1]))
    pytester.makepyfile(my_models=KEYWORD_CASES)
    result = pytester.runpytest_subprocess(
        "--pyargs", "conformance", "--no-builtin-cases", "--cases=my_models.py",
        "-p", "no:cacheprovider", "--conformance-results=records.jsonl", "-k", "cpu",
        "--require=libtorch")
    records = [json.loads(line) for line in
               (pytester.path / "records.jsonl").read_text().splitlines()]
    outcomes = {r["outcome"] for r in records}
    assert outcomes == {"passed"}, [(r["target"], r["check"], r["outcome"]) for r in records
                                    if r["outcome"] != "passed"]
    runtimes = {r["target"].split("-")[-2] for r in records}
    paths = {r["target"].split("-")[0] for r in records}
    assert {"torch", "libtorch", "onnxruntime", "noopt", "reference", "inductor",
            "aot_eager"} <= runtimes, runtimes
    assert {"trace", "script", "onnx", "export", "aoti", "compile"} <= paths, paths
    fresh = {r["target"] for r in records if r["check"] == "fresh_process"}
    assert {"export-torch-cpu", "aoti-torch-cpu", "trace-torch-cpu"} <= fresh, fresh
    result.assert_outcomes(passed=len(records))


def test_graph_inputs_named_out_of_signature_order_still_get_their_own_tensors(tmp_path):
    """A case naming the ONNX inputs itself, in the example's dict order: the names label
    the graph's inputs in flat order, and each input reaches the one the exporter bound."""
    case = Case("named", Masked, masked_example, input_names=("x", "bias", "mask"))
    state = CaseState(case, "cpu", tmp_path, use_cache=False)
    for path, opset in (("onnx", 17), ("onnx-dynamo", 20)):
        subject = Subject(state, Target(path, "onnxruntime", "cpu", opset),
                          reproduce="pytest <nodeid>")
        run_check(subject, "matches_eager", None)


def test_the_fresh_process_restarts_when_a_case_imports_other_modules():
    """Another case's deploy imports (and the registrations they make) must not stay in
    the process: an artifact that loads only with them would pass unseen."""
    from conformance.runtimes.fresh_process import FreshProcess, FreshProcessError

    process = FreshProcess(timeout_s=120)
    file = Path(__file__)
    loader = "conformance.calling:parts"  # refuses (file, device): the request fails, the process lives
    try:
        starts = []
        for imports in [(), (), ("json",), ("json",), ()]:
            with pytest.raises(FreshProcessError, match="TypeError"):
                process.run(loader, file, (torch.ones(1),), "cpu", imports=imports)
            starts.append(process.starts)
    finally:
        process.close()
    assert starts == [1, 1, 2, 2, 3]
