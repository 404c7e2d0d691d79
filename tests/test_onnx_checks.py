"""Each ONNX check fails on a deliberately broken artifact, and passes on a sound one."""
import dataclasses

import onnx
import pytest
from onnx import numpy_helper

from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.exporters import artifact as paths
from conformance.exporters import onnx as onnx_exporter
from conformance.runtimes import onnx as onnx_runtime
from conformance.targets import Target
from tests import broken_models
from tests.patching import patch_exporter, patch_loader


def onnx_subject(case, tmp_path, path="onnx", runtime="onnxruntime", opset=17) -> Subject:
    state = CaseState(case, "cpu", tmp_path)
    return Subject(state, Target(path, runtime, "cpu", opset), reproduce="pytest <nodeid>")


def rewrite(subject: Subject, change) -> None:
    """Export, then change the saved model before anything loads it."""
    model = onnx.load(str(subject.artifact.file))
    change(model)
    onnx.save(model, str(subject.artifact.file))


def perturb_first_initializer(model) -> None:
    tensor = model.graph.initializer[0]
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) + 0.05, tensor.name))


@pytest.mark.parametrize("path, opset", [("onnx", 17), ("onnx-dynamo", 20)])
def test_a_sound_export_passes_every_check(tmp_path, path, opset):
    subject = onnx_subject(broken_models.linear_case(), tmp_path, path, opset=opset)
    for check in ("graph_valid", "io_names", "matches_eager", "generalizes"):
        checks.CHECKS[check](subject)
    assert checks.io_names(subject) == {"inputs": ["input_0"], "outputs": ["output_0"]}


@pytest.mark.parametrize("runtime", ["onnxruntime", "onnxruntime-noopt", "onnx-reference"])
def test_a_perturbed_initializer_fails_matches_eager(tmp_path, runtime):
    subject = onnx_subject(broken_models.linear_case(), tmp_path, runtime=runtime)
    rewrite(subject, perturb_first_initializer)
    with pytest.raises(CheckFailure, match="outputs differ from eager") as failure:
        checks.matches_eager(subject)
    if runtime == "onnxruntime":
        assert "still differs from eager: the exported graph itself" in str(failure.value)


def test_a_mismatch_only_under_optimization_is_blamed_on_the_optimizer(tmp_path, monkeypatch):
    def optimized_but_wrong(file, device):
        plain = onnx_runtime.load_onnxruntime(file, device, optimize=False)
        return lambda *inputs: [out + 1e-2 for out in plain(*inputs)]

    patch_loader(monkeypatch, "onnxruntime", optimized_but_wrong)
    subject = onnx_subject(broken_models.linear_case(), tmp_path)
    with pytest.raises(CheckFailure, match="comes from ONNX Runtime's graph optimizer"):
        checks.matches_eager(subject)


@pytest.mark.parametrize("runtime", ["onnxruntime", "onnxruntime-tuned", "onnxruntime-noopt"])
def test_a_mismatch_of_onnx_runtimes_kernels_is_told_by_the_reference_evaluator(tmp_path,
                                                                                runtime):
    # The finding: ONNX Runtime's Elu cancels near 0; the graph is Elu, as the spec says.
    from conformance.fixtures import findings

    case = next(case for case in findings.CASES if case.name == "elu_near_zero")
    with pytest.raises(CheckFailure) as failure:
        checks.matches_eager(onnx_subject(case, tmp_path, runtime=runtime))
    said = ("the ONNX reference evaluator matches eager: the mismatch comes from ONNX "
            "Runtime's kernels")
    if runtime != "onnxruntime-noopt":
        said = ("with graph optimizations disabled ONNX Runtime still differs from eager, "
                f"but {said}")
    assert said in str(failure.value)
    # where the reference evaluator's cells do not run, it is not asked
    big = dataclasses.replace(case, tags=frozenset())
    with pytest.raises(CheckFailure) as failure:
        checks.matches_eager(onnx_subject(big, tmp_path / "big", runtime=runtime))
    assert "reference evaluator" not in str(failure.value)


def test_a_graph_both_onnx_runtimes_compute_wrongly_is_blamed_on_the_graph(tmp_path):
    case = dataclasses.replace(broken_models.linear_case(), tags=frozenset({"small"}))
    subject = onnx_subject(case, tmp_path)
    rewrite(subject, perturb_first_initializer)
    with pytest.raises(CheckFailure) as failure:
        checks.matches_eager(subject)
    assert ("still differs from eager, and the ONNX reference evaluator still differs from "
            "eager: the exported graph itself computes something else") in str(failure.value)


def export_ignoring(monkeypatch, **overrides) -> None:
    """A broken onnx path: it exports with some of the requested options overridden."""
    def broken(model, example, file, options):
        onnx_exporter.export_onnx(model, example, file, dataclasses.replace(options, **overrides))

    patch_exporter(monkeypatch, "onnx", broken)


def test_a_dropped_dynamic_axis_fails_generalizes(tmp_path, monkeypatch):
    export_ignoring(monkeypatch, dynamic_dims=())
    subject = onnx_subject(broken_models.linear_case(), tmp_path)
    checks.matches_eager(subject)
    with pytest.raises(CheckFailure, match=r"batch size 5(.|\n)*(dimension|Got: 5)"):
        checks.generalizes(subject)


def test_renamed_outputs_fail_io_names(tmp_path):
    subject = onnx_subject(broken_models.linear_case(), tmp_path)

    def rename(model):
        old = model.graph.output[0].name
        for node in model.graph.node:
            node.output[:] = ["logits" if name == old else name for name in node.output]
        model.graph.output[0].name = "logits"

    rewrite(subject, rename)
    with pytest.raises(CheckFailure, match=r"outputs: graph has \['logits'\], "
                                           r"declared \['output_0'\]"):
        checks.io_names(subject)


@pytest.mark.parametrize("damage", ["dangling input", "not a model"])
def test_an_invalid_model_file_fails_graph_valid(tmp_path, damage):
    subject = onnx_subject(broken_models.linear_case(), tmp_path)
    if damage == "not a model":
        subject.artifact.file.write_bytes(b"\x08\x07garbage")
    else:
        rewrite(subject, lambda model: model.graph.node[0].input.append("nowhere"))
    with pytest.raises(CheckFailure, match="the ONNX model is not valid"):
        checks.graph_valid(subject)


def test_a_control_flow_case_keeps_an_if_node_through_its_script(tmp_path):
    subject = onnx_subject(broken_models.branchy_case(), tmp_path)
    assert checks.keeps_branches(subject)["If"] >= 1
    checks.generalizes(subject)


def test_an_onnx_graph_without_the_branch_fails_keeps_branches(tmp_path, monkeypatch):
    export_ignoring(monkeypatch, script_first=False)
    subject = onnx_subject(broken_models.branchy_case(), tmp_path)
    with pytest.raises(CheckFailure, match="no If or Loop or Scan node"):
        checks.keeps_branches(subject)
    with pytest.raises(CheckFailure, match="diverges from eager on the probe input"):
        checks.generalizes(subject)


def test_an_exporter_error_names_the_exporter_opset_and_operator():
    error = RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX opset version 11 "
                         "is not supported.\nmore detail")
    message = paths.explain_export_error("onnx", paths.ExportOptions(opset=11), error)
    assert message.startswith("the onnx exporter at opset 11 failed on operator aten::frobnicate")


def test_the_dynamo_exporter_error_is_reduced_to_its_cause():
    error = RuntimeError("\x1b[96mFailed\x1b[0m to convert.\n- advice\n## Exception summary\n"
                         "<class 'DispatchError'>: No ONNX function found for "
                         "<OpOverload(op='aten._convolution', overload='default')>")
    message = paths.explain_export_error("onnx-dynamo", paths.ExportOptions(opset=20), error)
    assert "on operator aten._convolution" in message
    assert "advice" not in message and "\x1b" not in message


def test_an_artifact_is_reused_from_the_cache_until_its_key_changes(tmp_path):
    first = CaseState(broken_models.linear_case(), "cpu", tmp_path).artifact("onnx", 17)
    again = CaseState(broken_models.linear_case(), "cpu", tmp_path).artifact("onnx", 17)
    other_opset = CaseState(broken_models.linear_case(), "cpu", tmp_path).artifact("onnx", 13)
    assert not first.cached and again.cached and again.file == first.file
    assert not other_opset.cached and other_opset.file != first.file
    fresh = CaseState(broken_models.linear_case(), "cpu", tmp_path, use_cache=False)
    assert not fresh.artifact("onnx", 17).cached
