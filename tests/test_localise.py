"""A mismatch names where the artifact first diverges from eager: a fault planted in the
middle of a small CNN, written as a user would, is named by its module path on every
kind of artifact (TorchScript, torch.export, both ONNX exporters); a sound model still
passes; localisation's own failure or time limit never changes the verdict, nor leaves a
hook, the loaded artifact or the random generator changed; and a mismatch the cell's
expectation row expects is not localised unless asked."""
from __future__ import annotations

import dataclasses
import json
import re
import signal
import time

import onnx
import pytest
import torch
import torch.nn.functional as F
from packaging.specifiers import SpecifierSet
from torch import nn

from conformance import Case, random_inputs
from conformance.checks import catalog as checks
from conformance.checks import localise
from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.expectations import Expectation
from conformance.runtimes.table import RUNTIMES
from conformance.targets import Target
from tests.planted_faults import _ReluSymbolic

PLANTED = "layer1.1.mid"  # where each fault sits: the middle of the network


# ---------------------------------------------------------------- the planted layers

class FastGeluWhenTraced(nn.Module):
    """GELU, swapped for its sigmoid approximation when traced for deployment."""

    def forward(self, x):
        if torch.jit.is_tracing():
            return x * torch.sigmoid(1.702 * x)
        return F.gelu(x)


class FastGeluWhenScripted(nn.Module):
    def forward(self, x):
        if torch.jit.is_scripting():
            return x * torch.sigmoid(1.702 * x)
        return F.gelu(x)


class FastGeluWhenExported(nn.Module):
    def forward(self, x):
        if torch.compiler.is_exporting():
            return x * torch.sigmoid(1.702 * x)
        return F.gelu(x)


class AbsWithWrongSymbolic(nn.Module):
    """abs in eager, Relu in ONNX: the planted faults' wrong symbolic, in mid-network."""

    def forward(self, x):
        return _ReluSymbolic.apply(x)


class _TanhExportedAsSigmoid(torch.autograd.Function):
    """tanh in eager; its ONNX symbolic says Sigmoid."""

    @staticmethod
    def forward(ctx, x):
        return x.tanh()

    @staticmethod
    def symbolic(g, x):
        return g.op("Sigmoid", x)


class TanhWithWrongSymbolic(nn.Module):
    def forward(self, x):
        return _TanhExportedAsSigmoid.apply(x)


def wrong_tanh(x):
    """A custom translation for the dynamo exporter that maps tanh to Sigmoid."""
    from onnxscript import opset18 as op

    return op.Sigmoid(x)


# ---------------------------------------------------------------- the network

class Block(nn.Module):
    def __init__(self, channels: int, mid: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.mid = mid if mid is not None else nn.Tanh()
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.act(self.mid(self.conv1(x)))) + x


class SmallNet(nn.Module):
    """Named, nested blocks: stem, layer1 (two blocks), layer2, head."""

    def __init__(self, mid: nn.Module | None = None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.layer1 = nn.Sequential(Block(8), Block(8, mid))
        self.layer2 = nn.Sequential(Block(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))))


class ScaledWhenTraced(SmallNet):
    """A fault in the model's own forward, outside every submodule."""

    def forward(self, x):
        x = self.layer1(self.stem(x))
        if torch.jit.is_tracing():
            x = x * 0.5
        return self.head(self.layer2(x))


class SharedInALoop(nn.Module):
    """One block run three times in a row, then a tail whose tanh is exported wrong."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.tail = nn.Sequential(nn.Linear(4, 4), TanhWithWrongSymbolic())

    def forward(self, x):
        for _ in range(3):
            x = self.shared(x)
        return self.tail(x)


def case_of(build) -> Case:
    return Case(name="small_net", build=build, example=random_inputs((1, 3, 8, 8)))


def subject_for(build, path: str, runtime: str, tmp_path, opset: int | None = None) -> Subject:
    return Subject(CaseState(case_of(build), "cpu", tmp_path),
                   Target(path, runtime, "cpu", opset), reproduce="pytest <nodeid>")


def with_translation(monkeypatch, table: dict) -> None:
    """The dynamo exporter called with the user's custom translation table."""
    export = torch.onnx.export

    def exporting(*args, **kwargs):
        if kwargs.get("dynamo"):
            kwargs["custom_translation_table"] = table
        return export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", exporting)


def failure_of(subject: Subject) -> CheckFailure:
    with pytest.raises(CheckFailure) as failure:
        checks.matches_eager(subject)
    assert failure.value.kind == "mismatch"
    return failure.value


# ---------------------------------------------------------------- each kind of artifact

@pytest.mark.parametrize("path, runtime, opset, mid", [
    ("trace", "torch", None, FastGeluWhenTraced),
    ("script", "torch", None, FastGeluWhenScripted),
    ("export", "torch", None, FastGeluWhenExported),
    ("onnx", "onnxruntime", 17, AbsWithWrongSymbolic),
])
def test_the_failure_names_the_planted_layer(path, runtime, opset, mid, tmp_path):
    subject = subject_for(lambda: SmallNet(mid()), path, runtime, tmp_path, opset)
    failure = failure_of(subject)
    assert f"first divergence: module {PLANTED} ({mid.__name__})" in str(failure)
    found = failure.metrics["diverges_at"]
    assert (found["module"], found["kind"]) == (PLANTED, mid.__name__)
    assert found["max_abs"] > 1e-3
    if path == "onnx":
        assert (found["onnx_node"], found["onnx_op"]) == (f"/layer1/{PLANTED[:-4]}/mid/Relu",
                                                           "Relu")


def test_a_wrong_custom_translation_is_named_in_the_dynamo_graph(tmp_path, monkeypatch):
    with_translation(monkeypatch, {torch.ops.aten.tanh.default: wrong_tanh})
    subject = subject_for(SmallNet, "onnx-dynamo", "onnxruntime", tmp_path, 20)
    failure = failure_of(subject)
    # Every block's tanh goes wrong: the first one in the network is named.
    assert "first divergence: module layer1.0.mid (Tanh), ONNX node" in str(failure)
    assert "(Sigmoid)" in str(failure)
    assert failure.metrics["diverges_at"]["onnx_op"] == "Sigmoid"


@pytest.mark.parametrize("path, opset", [("onnx", 17), ("onnx-dynamo", 20)])
def test_a_module_called_in_a_loop_is_not_blamed_for_its_last_calls_output(path, opset,
                                                                             tmp_path,
                                                                             monkeypatch):
    # Both exporters put the three calls of `shared` in one unbroken run of its nodes,
    # which ends with the third call's output: that is not eager's first call's.
    with_translation(monkeypatch, {torch.ops.aten.tanh.default: wrong_tanh})
    subject = Subject(CaseState(Case(name="loop", build=SharedInALoop,
                                     example=random_inputs((2, 4))), "cpu", tmp_path),
                      Target(path, "onnxruntime", "cpu", opset))
    failure = failure_of(subject)
    assert "first divergence: module tail.1 (TanhWithWrongSymbolic)" in str(failure)
    assert failure.metrics["diverges_at"]["onnx_op"] == "Sigmoid"


class DoubledWhenPositive(nn.Module):
    """A branch on the input's mean: a trace keeps the branch its example took."""

    def forward(self, x):
        if x.mean() > 0:
            return x * 2
        return x - 1


def test_a_probe_that_takes_another_branch_names_the_branching_layer(tmp_path):
    def build():
        net = SmallNet()
        net.stem = nn.Sequential(DoubledWhenPositive(), *net.stem)
        return net

    subject = Subject(CaseState(Case(name="small_net", build=build,
                                     example=lambda: (torch.rand(1, 3, 8, 8),)), "cpu",
                                tmp_path), Target("trace", "torch", "cpu"))
    with pytest.raises(CheckFailure, match="on the probe input") as failure:
        checks.generalizes(subject)
    assert "first divergence: module stem.0 (DoubledWhenPositive)" in str(failure.value)


def test_a_fault_in_the_models_own_forward_is_named_as_such(tmp_path):
    failure = failure_of(subject_for(ScaledWhenTraced, "trace", "torch", tmp_path))
    assert ("first divergence: the model's own forward (ScaledWhenTraced), outside every "
            "submodule") in str(failure)
    assert failure.metrics["diverges_at"]["module"] == ""


class Mix(nn.Module):
    """Two inputs of one shape: which placeholder is which cannot be told by shape."""

    def forward(self, a, b):
        if torch.compiler.is_exporting():
            return a - b
        return a - 2 * b


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.left, self.right, self.mix = nn.Linear(4, 4), nn.Linear(4, 4), Mix()

    def forward(self, x):
        return self.mix(self.left(x), self.right(x))


def test_an_exported_module_whose_inputs_cannot_be_told_apart_leaves_it_to_its_parent(
        tmp_path):
    subject = Subject(CaseState(Case(name="mixed", build=Mixed, example=random_inputs((2, 4))),
                                "cpu", tmp_path), Target("export", "torch", "cpu"))
    found = failure_of(subject).metrics["diverges_at"]
    assert (found["module"], found["kind"]) == ("", "Mixed")


def test_a_module_run_elsewhere_is_localised_by_loading_its_file_here(tmp_path, monkeypatch):
    """The libtorch harness's modules cannot be called module by module: the same file is
    loaded in this process."""
    from conformance.exporters.torchscript import load_torchscript

    def in_another_process(file, device):
        module = load_torchscript(file, device)
        return lambda *inputs: module(*inputs)

    row = dataclasses.replace(RUNTIMES["libtorch"], in_harness=False, load=in_another_process)
    monkeypatch.setitem(RUNTIMES, "libtorch", row)
    subject = subject_for(lambda: SmallNet(FastGeluWhenTraced()), "trace", "libtorch",
                          tmp_path)
    assert failure_of(subject).metrics["diverges_at"]["module"] == PLANTED


def test_a_model_without_submodules_gets_no_note(tmp_path):
    subject = Subject(CaseState(Case(name="alone", build=FastGeluWhenTraced,
                                     example=random_inputs((2, 4))), "cpu", tmp_path),
                      Target("trace", "torch", "cpu"))
    assert "first divergence" not in str(failure_of(subject))


@pytest.mark.parametrize("path, runtime, opset, judged", [
    ("trace", "torch", None, "each of the {} module(s) that could be called"),
    ("export", "torch", None, "each of the {} module(s) that could be called"),
    ("onnx-dynamo", "onnxruntime", 20, "no module's output ({} compared)"),
])
def test_a_sound_model_passes_and_every_module_of_it_agrees(path, runtime, opset, judged,
                                                            tmp_path):
    subject = subject_for(SmallNet, path, runtime, tmp_path, opset)
    assert checks.matches_eager(subject)["mismatch_fraction"] == 0
    note, found = localise.localise(subject, subject.state.example)
    modules = len(list(subject.state.model.named_modules()))
    assert note.startswith("first divergence: not found: ") and found == {}
    assert judged.format(modules) in note  # every module was judged, the model included


# ---------------------------------------------------------------- a hint, never a verdict

def test_localisations_own_failure_leaves_the_mismatch_as_it_was(tmp_path, monkeypatch):
    def broken(subject, inputs):
        raise RuntimeError("no hooks today")

    monkeypatch.setattr(localise, "_torchscript", broken)
    failure = failure_of(subject_for(lambda: SmallNet(FastGeluWhenTraced()), "trace",
                                     "torch", tmp_path))
    assert "(could not localise the first divergence: RuntimeError: no hooks today)" in \
        str(failure)
    assert "diverges_at" not in failure.metrics and failure.metrics["mismatch_fraction"] > 0


def test_a_frozen_module_is_not_localised_and_says_why(tmp_path):
    failure = failure_of(subject_for(lambda: SmallNet(FastGeluWhenTraced()), "trace-tuned",
                                     "torch", tmp_path))
    assert "first divergence: not localised (the TorchScript module keeps no submodules" in \
        str(failure)


def hooks_on(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def faulty(tmp_path) -> Subject:
    """A trace with a fault in layer1.1.mid, exported and loaded before the test's work."""
    subject = subject_for(lambda: SmallNet(FastGeluWhenTraced()), "trace", "torch", tmp_path)
    failure_of(subject)
    return subject


def test_its_own_time_limit_says_so_and_leaves_no_hook_behind(tmp_path, monkeypatch):
    subject = faulty(tmp_path)
    copy = localise._copy

    def slow_copy(value):  # what the hooks keep, copied slowly
        time.sleep(5)
        return copy(value)

    monkeypatch.setattr(localise, "LOCALISE_SECONDS", 0.2)
    monkeypatch.setattr(localise, "_copy", slow_copy)
    note, found = localise.localise(subject, subject.state.example)
    assert (note, found) == ("first divergence: not localised (it ran past 0.2 s)", {})
    assert hooks_on(subject.state.model) == 0


def test_a_limit_that_runs_out_while_hooks_are_added_leaves_none_behind(tmp_path,
                                                                         monkeypatch):
    subject = faulty(tmp_path)
    register = nn.Module.register_forward_pre_hook

    def register_then_time_out(module, *args, **kwargs):
        handle = register(module, *args, **kwargs)
        signal.raise_signal(signal.SIGALRM)  # the limit runs out before the handle is kept
        return handle

    monkeypatch.setattr(nn.Module, "register_forward_pre_hook", register_then_time_out)
    note, _ = localise.localise(subject, subject.state.example)
    assert note.startswith("first divergence: not localised (it ran past ")
    assert hooks_on(subject.state.model) == 0


def test_a_slow_note_and_a_slow_localisation_still_end_in_a_mismatch(tmp_path, monkeypatch):
    """Localisation runs after the other notes, with half of what is left of the cell's
    limit then: it cannot leave them too little time, which would make the mismatch a
    timeout that an expectation row of kind mismatch does not match."""
    subject = faulty(tmp_path)
    subject.state.check_eager()  # eager on every probe, before the cell's limit starts

    def slow_note(*args):
        time.sleep(2.2)
        return "a slow note"

    def slow_localiser(subject, inputs):
        time.sleep(60)

    monkeypatch.setattr(checks, "_float64_opinion", slow_note)
    monkeypatch.setattr(localise, "_torchscript", slow_localiser)
    with pytest.raises(CheckFailure) as failure:
        checks.run_check(subject, "matches_eager", 4.0)
    assert failure.value.kind == "mismatch"
    lines = [line.strip() for line in str(failure.value).splitlines()]
    assert re.fullmatch(r"first divergence: not localised \(it ran past [\d.]+ s\)",
                        lines[-3]) and lines[-2] == "a slow note"


class Counted(nn.Module):
    """Counts its calls in a buffer, which a trace keeps doing."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return x + 0 * torch.rand_like(x)  # draws random numbers, which change nothing


def test_the_loaded_artifact_and_the_random_generator_are_left_as_they_were(tmp_path):
    """The checks after it share the loaded artifact, whose buffers a call of one of its
    modules may change, and the global random generator."""
    def build():
        net = SmallNet(FastGeluWhenTraced())
        net.stem = nn.Sequential(Counted(), *net.stem)
        return net

    subject = subject_for(build, "trace", "torch", tmp_path)
    failure_of(subject)
    buffers = {name: b.clone() for name, b in subject.loaded.named_buffers()}
    drawn = torch.get_rng_state()
    _, found = localise.localise(subject, subject.state.example)
    assert found["diverges_at"]["module"] == PLANTED  # stem.0 was called, and agrees
    assert torch.equal(torch.get_rng_state(), drawn)
    assert all(torch.equal(b, buffers[name]) for name, b in subject.loaded.named_buffers())


# ---------------------------------------------------------------- when it runs

def row(kind: str = "mismatch", match: str | None = None) -> Expectation:
    return Expectation(case="*", target="*", check=("*",), kind=kind,
                       match=re.compile(match) if match else None, torch=SpecifierSet(""),
                       reason="known", source="a test's row")


@pytest.mark.parametrize("expectation, mode, localised", [
    (None, "unexpected", True),
    (row(), "unexpected", False),  # a known mismatch is not localised again
    (row(match="on the probe input"), "unexpected", True),  # nor expected: a new one
    (row("export-error"), "unexpected", True),
    (row(), "always", True),
    (None, "never", False),
])
def test_a_mismatch_is_localised_unless_the_cells_row_expects_it(expectation, mode,
                                                                 localised, tmp_path):
    subject = subject_for(lambda: SmallNet(FastGeluWhenTraced()), "trace", "torch", tmp_path)
    subject = dataclasses.replace(subject, expectation=expectation, localise=mode)
    failure = failure_of(subject)
    assert ("diverges_at" in failure.metrics) == localised
    assert (f"first divergence: module {PLANTED}" in str(failure)) == localised


MODELS = """
from conformance import Case, random_inputs
from tests.test_localise import FastGeluWhenTraced, SmallNet

CASES = [Case(name="small_net", build=lambda: SmallNet(FastGeluWhenTraced()),
              example=random_inputs((1, 3, 8, 8)))]
"""
KNOWN = """
[[expect]]
case = "small_net"
target = "trace-*"
check = "matches_eager"
kind = "mismatch"
reason = "the trace keeps the fast GELU"
"""


@pytest.mark.parametrize("option, localised", [([], False), (["--localise=always"], True)])
def test_the_cells_row_and_the_option_reach_the_check(option, localised, pytester):
    pytester.makepyfile(my_models=MODELS,
                        test_matrix="def test_check(conformance_cell):\n"
                                    "    conformance_cell.check()\n")
    pytester.makefile(".toml", known=KNOWN)
    result = pytester.runpytest("--no-builtin-cases", "--cases", "my_models.py",
                                "--expectations", "known.toml", "-p", "no:randomly",
                                "--conformance-results", "records.jsonl",
                                "--artifacts-dir=artifacts", "-k", "trace-torch-cpu and "
                                "matches_eager", *option)
    result.assert_outcomes(xfailed=1)
    record, = [json.loads(line) for line in
               (pytester.path / "records.jsonl").read_text().splitlines()]
    assert ("diverges_at" in record["metrics"]) == localised


# ---------------------------------------------------------------- the rules, alone

def test_the_onnx_rule_takes_the_first_jump_beyond_tolerance_not_grown_noise():
    assert localise.first_jump([0.01, 0.1, 0.5, 3.0, 40.0]) == 4  # noise grows, then a fault
    assert localise.first_jump([0.0, 2.0, 2.0, 5e3]) == 1  # the first beyond tolerance
    assert localise.first_jump([0.2, 0.9, 0.95]) is None


def test_onnx_nodes_map_to_modules_by_name_or_by_metadata():
    names = {"", "layer1", "layer1.0", "layer1.0.conv1", "head"}

    def node(name, scopes=None):
        made = onnx.helper.make_node("Relu", ["x"], ["y"], name=name)
        if scopes is not None:
            made.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=repr(scopes))
        return made

    assert localise.node_module(node("/layer1/layer1.0/conv1/Conv"), names) == "layer1.0.conv1"
    assert localise.node_module(node("/layer1/layer1.0/Add"), names) == "layer1.0"
    assert localise.node_module(node("/layer1/act_1/Relu"), names) == "layer1"
    assert localise.node_module(node("/Add"), names) == ""
    scopes = ["", "layer1", "layer1.0", "layer1.0.conv1", "conv2d_1"]
    assert localise.node_module(node("node_conv2d_1", scopes), names) == "layer1.0.conv1"
    assert localise.node_module(node("node_relu", ["", "head", "head.0@1", "relu"]),
                                names) == "head"
    # The dynamo exporter gives a module's second call the scope of its first: the output
    # of the first call is the end of the module's first run of nodes.
    owners = ["layer1.0.conv1", "layer1.0.act", "layer1.0", "layer1.0.act", "head"]
    calls = {"layer1.0.conv1": 1, "layer1.0.act": 2, "layer1.0": 1, "layer1": 1, "head": 1,
             "": 1}
    assert localise.last_nodes(owners, calls) == {
        "layer1.0.conv1": 0, "layer1.0.act": 1, "layer1.0": 3, "layer1": 3, "head": 4, "": 4}


def test_a_module_whose_calls_cannot_be_told_apart_is_left_to_its_children():
    names = {"", "shared", "shared.0", "shared.1", "tail", "tail.0", "b", "b.lin"}

    def owner(name):
        return localise.node_module(onnx.helper.make_node("Relu", ["x"], ["y"], name=name),
                                    names)

    # The TorchScript-based exporter marks some levels of a later call: still the module.
    assert owner("/shared/shared.0_1/Gemm") == "shared.0"
    assert owner("/b/lin_1/Gemm") == "b.lin" and owner("/b_1/Add") == "b"
    # `shared` run three times in a row: one run of its nodes for three calls.
    owners = ["shared.0", "shared.1"] * 3 + ["tail.0", "tail"]
    calls = {"shared": 3, "shared.0": 3, "shared.1": 3, "tail.0": 1, "tail": 1, "": 1}
    assert localise.last_nodes(owners, calls) == {"shared.0": 0, "shared.1": 1, "tail.0": 6,
                                                  "tail": 7, "": 7}
