"""control_flow counts only the branches and loops whose condition depends on the model's
inputs: a graph that kept some other `if` (a constant, an attribute, a parameter, a shape)
is no proof that an artifact kept the model's data-dependent control flow."""
import collections
import warnings
from typing import List

import onnx
import pytest
import torch

from conformance.checks.control_flow import (CONTROL_FLOW_NODES, control_flow,
                                             input_dependent_control_flow)


@torch.jit.script
def helper(x, flag: bool = True):
    if flag:
        return x * 2
    return x


@torch.jit.script
def weight_helper(x, weight):
    if bool(weight.sum() > 0):
        return x * 2
    return x


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x - 10


class BakedCallsHelper(Branchy):
    """Traced, it bakes its own branch; the scripted helper keeps an `if` on a default."""

    def forward(self, x):
        return helper(super().forward(x))


class BakedCallsWeightHelper(Branchy):
    """Traced, it bakes its own branch; the scripted helper keeps an `if` on a parameter."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return weight_helper(super().forward(x), self.weight)


class OnRank(torch.nn.Module):
    def forward(self, x):
        if x.dim() == 2:
            return x * 2
        return x


class Repeat(torch.nn.Module):
    def forward(self, x, n):
        for _ in range(int(n)):
            x = x + 1
        return x


class OnTraining(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.flag = True

    def forward(self, x):
        if self.training:
            x = x * 2
        for _ in range(3):  # carries the input, but runs a constant number of times
            if self.flag:
                x = x + 1
        return x


class Mutated(torch.nn.Module):
    """The branches read the input only through what in-place ops wrote."""

    def forward(self, x):
        total = torch.zeros(3)
        total.add_(x.sum(0))
        signs: List[float] = []
        signs.append(float(x.mean()))
        if total.sum() > 0:
            x = x * 2
        if signs[0] > 0:
            x = x + 1
        return x


class RowGate(torch.nn.Module):
    """A loop over the rows (a shape) whose body branches on each row's values."""

    def forward(self, x):
        rows: List[torch.Tensor] = []
        for i in range(x.size(0)):
            row = x[i]
            if row.sum() > 0:
                row = row * 2
            rows.append(row)
        return torch.stack(rows)


class CondOnInput(torch.nn.Module):
    def forward(self, x):
        return torch.cond(x.sum() > 0, lambda x: x * 2, lambda x: x - 1, (x,))


class CondOnBuffer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("flag", torch.ones(1))

    def forward(self, x):
        return torch.cond(self.flag.sum() > 0, lambda x: x * 2, lambda x: x - 1, (x,))


class CountsTo(torch.nn.Module):
    """A while_loop that carries the input; whether it stops depends on `limit` only."""

    def __init__(self, limit_is_input: bool):
        super().__init__()
        self.limit_is_input = limit_is_input

    def forward(self, x, limit):
        bound = limit if self.limit_is_input else torch.tensor(3)
        return torch.while_loop(lambda i, y: i < bound, lambda i, y: (i + 1, y * 2),
                                (torch.zeros((), dtype=torch.int64), x))[1]


X = torch.ones(2, 3)


def quietly(make):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
        return make()


def saved(module, tmp_path, trace_with=None):
    """The TorchScript artifact as the suite reads it: saved, then loaded."""
    file = tmp_path / "model.pt"
    scripted = quietly(lambda: torch.jit.trace(module, trace_with) if trace_with
                       else torch.jit.script(module))
    torch.jit.save(scripted, str(file))
    return torch.jit.load(str(file))


def onnx_file(source, inputs, tmp_path, **options):
    file = tmp_path / "model.onnx"
    quietly(lambda: torch.onnx.export(source, inputs, str(file), dynamo=False,
                                      opset_version=17, **options))
    return file


def pt2_file(module, inputs, tmp_path):
    file = tmp_path / "model.pt2"
    torch.export.save(torch.export.export(module, inputs), str(file))
    return file


def naive(kind, artifact) -> collections.Counter:
    """Every control-flow node, as keeps_branches counted them before it asked what the
    condition depends on."""
    kinds = CONTROL_FLOW_NODES[kind]
    if kind == "onnx":
        ops = [n.op_type for n in onnx.load(str(artifact), load_external_data=False).graph.node]
        return collections.Counter({k: ops.count(k) for k in kinds})
    if kind == "export":
        names = [getattr(n.target, "__name__", "") for n in torch.export.load(str(artifact))
                 .graph.nodes if n.op == "call_function"]
        return collections.Counter({k: names.count(k) for k in kinds})
    text = str(artifact.inlined_graph)
    return collections.Counter({k: text.count(k + "(") for k in kinds})


def assert_only_unrelated(kind, artifact, node_kind):
    """The artifact has control flow, which a naive count takes for the model's, but none
    of it depends on the model's inputs."""
    found = control_flow(kind, artifact)
    assert naive(kind, artifact)[node_kind] >= 1, "the artifact has no node to be fooled by"
    assert found.total[node_kind] >= 1
    assert sum(found.dependent.values()) == 0, found
    assert input_dependent_control_flow(kind, artifact) == found.dependent
    assert "not depend on the model's inputs" in found.describe()


def test_a_trace_that_baked_its_branch_is_not_rescued_by_a_scripted_helpers_if(tmp_path):
    artifact = saved(BakedCallsHelper(), tmp_path, trace_with=(X,))
    assert_only_unrelated("torchscript", artifact, "prim::If")
    assert control_flow("torchscript", artifact).describe() == (
        "found 1 prim::If, but its condition does not depend on the model's inputs "
        "(only on constants, attributes, parameters or shapes)")


def test_a_scripted_branch_on_the_inputs_values_counts(tmp_path):
    found = input_dependent_control_flow("torchscript", saved(Branchy(), tmp_path))
    assert found["prim::If"] >= 1
    assert set(found) == set(CONTROL_FLOW_NODES["torchscript"])


def test_a_branch_on_the_inputs_rank_does_not_count(tmp_path):
    assert_only_unrelated("torchscript", saved(OnRank(), tmp_path), "prim::If")


def test_a_loop_whose_trip_count_is_an_inputs_value_counts(tmp_path):
    found = control_flow("torchscript", saved(Repeat(), tmp_path))
    assert found.dependent["prim::Loop"] == 1
    assert "with a condition on the model's inputs: 1 prim::Loop" in found.describe()


def test_branches_on_attributes_do_not_count_even_inside_a_loop_carrying_the_input(tmp_path):
    artifact = saved(OnTraining().eval(), tmp_path)
    assert_only_unrelated("torchscript", artifact, "prim::If")
    assert control_flow("torchscript", artifact).total == {"prim::If": 2, "prim::Loop": 1}


def test_values_written_by_in_place_ops_and_list_appends_count(tmp_path):
    found = input_dependent_control_flow("torchscript", saved(Mutated(), tmp_path))
    assert found["prim::If"] == 2


def test_a_scripted_functions_inputs_are_all_model_inputs():
    def gate(x, y):
        if bool(y.sum() > 0):
            return x
        return x + 1

    assert input_dependent_control_flow("torchscript", quietly(lambda: torch.jit.script(gate)))[
        "prim::If"] == 1


def test_onnx_keeps_the_scripted_branch_on_the_input(tmp_path):
    file = onnx_file(quietly(lambda: torch.jit.script(Branchy())), (X,), tmp_path)
    assert input_dependent_control_flow("onnx", file)["If"] >= 1


def test_onnx_of_a_trace_that_baked_its_branch_has_no_input_dependent_if(tmp_path):
    traced = quietly(lambda: torch.jit.trace(BakedCallsHelper(), (X,)))
    file = onnx_file(traced, (X,), tmp_path)
    # The exporter drops the helper's If on a constant default altogether.
    assert sum(input_dependent_control_flow("onnx", file).values()) == 0


def test_onnx_if_on_a_parameter_does_not_count(tmp_path):
    traced = quietly(lambda: torch.jit.trace(BakedCallsWeightHelper(), (X,)))
    assert_only_unrelated("onnx", onnx_file(traced, (X,), tmp_path), "If")


def test_onnx_if_inside_a_loop_over_a_shape_counts_and_the_loop_does_not(tmp_path):
    # A dynamic row count keeps the trip count a Shape in the graph, not a constant.
    file = onnx_file(quietly(lambda: torch.jit.script(RowGate())), (X,), tmp_path,
                     input_names=["x"], dynamic_axes={"x": {0: "rows"}})
    assert "Shape" in [n.op_type for n in onnx.load(str(file)).graph.node]
    found = control_flow("onnx", file)
    assert naive("onnx", file) == {"If": 0, "Loop": 1, "Scan": 0}  # the If is in the body
    assert found.total == {"If": 1, "Loop": 1, "Scan": 0}
    assert found.dependent == {"If": 1, "Loop": 0, "Scan": 0}


def test_export_keeps_a_cond_on_the_input(tmp_path):
    assert input_dependent_control_flow("export", pt2_file(CondOnInput(), (X,), tmp_path)) == \
        {"cond": 1, "while_loop": 0}


def test_export_cond_on_a_buffer_does_not_count(tmp_path):
    assert_only_unrelated("export", pt2_file(CondOnBuffer(), (X,), tmp_path), "cond")


@pytest.mark.parametrize("limit_is_input, counted", [(True, 1), (False, 0)])
def test_export_while_loop_counts_when_its_condition_reaches_an_input(tmp_path, limit_is_input,
                                                                     counted):
    file = pt2_file(CountsTo(limit_is_input), (X, torch.tensor(3)), tmp_path)
    found = control_flow("export", file)
    assert found.total["while_loop"] == 1
    assert found.dependent["while_loop"] == counted


def test_an_unknown_kind_of_artifact_is_refused():
    with pytest.raises(ValueError, match="unknown kind of artifact 'tflite'"):
        control_flow("tflite", None)
