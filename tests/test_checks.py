"""Every check fails on a deliberately broken input, and passes on a sound one."""
import dataclasses

import pytest
import torch

from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.exporters import torchscript
from conformance.runtimes.fresh_process import FreshProcess
from conformance.spaces import Dim, TensorSpace
from conformance.targets import Target
from tests import broken_models
from tests.patching import patch_loader


@pytest.fixture(scope="module")
def worker():
    process = FreshProcess(timeout_s=120)
    yield process
    process.close()


def subject_of(case, path, tmp_path, runtime="torch", worker=None) -> Subject:
    state = CaseState(case, "cpu", tmp_path)
    return Subject(state, Target(path, runtime, "cpu"), worker, reproduce="pytest <nodeid>")


def perturbed_loader(file, device):
    loaded = torchscript.load_torchscript(file, device)
    return lambda *inputs: loaded(*inputs) + 1e-2


@pytest.fixture
def perturbed_runtime(monkeypatch):
    patch_loader(monkeypatch, "perturbed", perturbed_loader)
    return "perturbed"


def test_matches_eager_passes_for_a_sound_script(tmp_path):
    metrics = checks.matches_eager(subject_of(broken_models.linear_case(), "script", tmp_path))
    assert metrics["max_abs"] <= 1e-5


def test_matches_eager_fails_on_perturbed_outputs(tmp_path, perturbed_runtime):
    subject = subject_of(broken_models.linear_case(), "script", tmp_path, perturbed_runtime)
    with pytest.raises(CheckFailure) as failure:
        checks.matches_eager(subject)
    message = str(failure.value)
    for expected in ("case linear", "target script-perturbed-cpu", "check matches_eager",
                     "max abs error", "rel error", "rtol=", "reproduce: pytest <nodeid>"):
        assert expected in message
    assert failure.value.metrics["max_abs"] == pytest.approx(1e-2, rel=1e-3)


def test_generalizes_fails_for_a_trace_that_baked_a_branch(tmp_path):
    with pytest.raises(CheckFailure, match="trace artifact diverges from eager on the probe"):
        checks.generalizes(subject_of(broken_models.branchy_case(), "trace", tmp_path))


def test_generalizes_passes_for_the_script_of_the_same_model(tmp_path):
    checks.generalizes(subject_of(broken_models.branchy_case(), "script", tmp_path))


def test_generalizes_fails_for_a_trace_that_baked_the_batch_size(tmp_path):
    with pytest.raises(CheckFailure, match=r"batch size 3(.|\n)*shape"):
        checks.generalizes(subject_of(broken_models.batch_baked_case(), "trace", tmp_path))


def test_generalizes_probes_every_declared_batch_size(tmp_path):
    subject = subject_of(broken_models.linear_case(), "trace", tmp_path)
    checks.generalizes(subject)
    declared = [p for p in subject.state.probes if not p.derived]
    assert [p.inputs[0].shape[0] for p in declared] == [2, 5]


def test_fresh_process_passes_for_a_sound_script(tmp_path, worker):
    metrics = checks.fresh_process(
        subject_of(broken_models.linear_case(), "script", tmp_path, worker=worker))
    assert metrics["fresh_load_s"] >= 0


def test_fresh_process_fails_for_a_nondeterministic_model(tmp_path, worker):
    subject = subject_of(broken_models.noisy_case(), "script", tmp_path, worker=worker)
    with pytest.raises(CheckFailure, match="other outputs in a fresh process"):
        checks.fresh_process(subject)


def test_fresh_process_fails_clearly_when_the_process_dies(tmp_path):
    dying = FreshProcess(timeout_s=60, command=["python3", "-c", "import sys; sys.exit(3)"])
    subject = subject_of(broken_models.linear_case(), "script", tmp_path, worker=dying)
    with pytest.raises(CheckFailure, match="fresh process exited with code 3"):
        checks.fresh_process(subject)


def test_fresh_process_fails_clearly_on_a_corrupt_artifact(tmp_path, worker):
    subject = subject_of(broken_models.linear_case(), "script", tmp_path, worker=worker)
    assert subject.loaded is not None  # loaded in this process before the file is damaged
    subject.artifact.file.write_bytes(b"not a model")
    with pytest.raises(CheckFailure, match="failed in the fresh process"):
        checks.fresh_process(subject)


def test_keeps_branches_fails_for_a_trace(tmp_path):
    with pytest.raises(CheckFailure, match="no prim::If or prim::Loop"):
        checks.keeps_branches(subject_of(broken_models.branchy_case(), "trace", tmp_path))


def test_keeps_branches_fails_for_a_trace_whose_only_if_is_a_scripted_helpers(tmp_path):
    subject = subject_of(broken_models.baked_beside_helper_case(), "trace", tmp_path)
    with pytest.raises(CheckFailure, match="does not depend on the model's inputs"):
        checks.keeps_branches(subject)
    assert "prim::If(" in str(subject.loaded.inlined_graph)  # what a plain count passed


def test_keeps_branches_passes_for_a_script(tmp_path):
    found = checks.keeps_branches(subject_of(broken_models.branchy_case(), "script", tmp_path))
    assert found["prim::If"] >= 1


# compiles_fullgraph reads no artifact: it compiles the eager model; generated_models
# checks a family's drawn models, not a case.
NOT_OF_THE_ARTIFACT = ("compiles_fullgraph", "generated_models")


def test_an_export_error_is_a_check_failure_not_a_crash(tmp_path):
    case = dataclasses.replace(broken_models.unscriptable_case(),
                               input_space=(TensorSpace((Dim("n", 1, 3), 4)),))
    subject = subject_of(case, "script", tmp_path)
    for check in (c for name, c in checks.CHECKS.items() if name not in NOT_OF_THE_ARTIFACT):
        with pytest.raises(CheckFailure, match="could not export"):
            check(subject)


TRACE = Target("trace", "torch", "cpu")
ONNX_ORT = Target("onnx", "onnxruntime", "cpu", 17)
ONNX_NOOPT = Target("onnx", "onnxruntime-noopt", "cpu", 17)


@pytest.mark.parametrize("check, case, target, applies", [
    ("keeps_branches", broken_models.branchy_case(), TRACE, True),
    ("keeps_branches", broken_models.linear_case(), TRACE, False),
    ("keeps_branches", broken_models.branchy_case(), ONNX_ORT, True),
    ("keeps_branches", broken_models.branchy_case(), ONNX_NOOPT, False),
    ("generalizes", broken_models.linear_case(), ONNX_NOOPT, True),
    ("fresh_process", broken_models.linear_case(), TRACE, True),
    ("fresh_process", broken_models.linear_case(), ONNX_ORT, False),
    ("graph_valid", broken_models.linear_case(), ONNX_ORT, True),
    ("graph_valid", broken_models.linear_case(), ONNX_NOOPT, False),
    ("io_names", broken_models.linear_case(), TRACE, False),
])
def test_which_checks_apply_to_which_targets(check, case, target, applies):
    assert checks.applies(check, case, target) == applies


@pytest.mark.parametrize("runtime", ["torch", "libtorch"])
def test_a_quantized_artifact_is_loaded_under_its_cases_engine(tmp_path, monkeypatch, runtime):
    import torch

    from conformance.layout import harness_build_dir
    from conformance.runtimes import libtorch as harness

    if runtime == "libtorch" and harness.toolchain_problem():
        pytest.skip(harness.toolchain_problem())
    # Another engine all around, as when the session's last case used x86: an artifact
    # loaded outside the case's engine would pack its weights for x86.
    monkeypatch.setattr(torch.backends.quantized, "engine", "x86")
    process = harness.Harness(harness_build_dir(), timeout_s=300)
    try:
        state = CaseState(broken_models.qnnpack_conv_case(), "cpu", tmp_path,
                          harness=lambda: process)
        subject = Subject(state, Target("trace", runtime, "cpu"))
        assert checks.matches_eager(subject)["max_abs"] == 0
    finally:
        process.close()


class _Inner(torch.nn.Module):
    def forward(self, x):
        return torch.mm(x, x)


class _Middle(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _Inner()

    def forward(self, x):
        return self.inner(x) + 1


class _Outer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.middle = _Middle()

    def forward(self, x):
        return self.middle(x) * 2


def test_an_interpreter_error_keeps_its_cause_line(tmp_path, monkeypatch):
    # TorchScript states the cause after a stack of frames: 14 lines here, cut to 8.
    patch_loader(monkeypatch, "nested", lambda file, device: torch.jit.script(_Outer()))
    subject = subject_of(broken_models.linear_case(), "script", tmp_path, runtime="nested")
    with pytest.raises(CheckFailure) as failed:
        checks.matches_eager(subject)
    message = str(failed.value)
    assert failed.value.kind == "runtime-error"
    assert "The following operation failed in the TorchScript interpreter" in message
    assert "more lines ...]" in message
    assert "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in message
