"""The tuned variants: each backend as its documentation says to ship it. Their rows
are consistent with the tables, each variant applies its settings (and only where it
should), and a tuned artifact gets the same checks as its default, failing them when it
computes something else."""
import pytest
import torch

from conformance.calling import Inputs
from conformance.cases import Case
from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.expectations import path_targets
from conformance.exporters.artifact import ExportOptions
from conformance.exporters.table import PATHS
from conformance.exporters.torchscript import export_script_frozen, export_trace_frozen
from conformance.runtimes.loaders import WithInductorConfig
from conformance.runtimes.table import RUNTIMES
from conformance.targets import Target, loader_optimizes, slow_cell, targets_for
from conformance.tuning import TUNINGS, settings_of
from tests import broken_models
from tests.patching import patch_loader
from tests.test_harness import shared_harness, toolchain  # noqa: F401


def test_every_tuning_is_a_path_or_runtime_that_varies_an_existing_one():
    for name, row in TUNINGS.items():
        assert (name in PATHS) != (name in RUNTIMES), name
        assert row.tunes in PATHS or row.tunes in RUNTIMES, name
        assert row.reason.strip() and row.source.strip() and row.settings, name


def test_a_record_names_the_settings_of_its_target():
    assert settings_of("trace", "torch") == {"tuning": "default"}
    assert settings_of("compile-tuned", "inductor") == {
        "tuning": "compile-tuned", "torch._inductor.config.freezing": True}
    assert settings_of("onnx", "onnxruntime-tuned")["tuning"] == "onnxruntime-tuned"


def test_tuned_runtimes_run_the_main_opset_only_and_are_slow_outside_tuned_ci():
    ids = {t.id for t in targets_for(frozenset({"opset-sweep"}))}
    assert "onnx-op17-onnxruntime-tuned-cpu" in ids
    assert "onnx-op17-onnxruntime-cpu" in ids and "onnx-op13-onnxruntime-cpu" in ids
    assert "onnx-op13-onnxruntime-tuned-cpu" not in ids
    tuned, default = Target("trace-tuned", "torch"), Target("trace", "torch")
    assert slow_cell(frozenset(), tuned) and not slow_cell(frozenset(), default)
    assert not slow_cell(frozenset({"tuning-ci"}), tuned)


def test_a_paths_unsupported_declaration_covers_its_tuned_variant():
    assert path_targets("script") == "script-*"  # takes in script-tuned-*, no other path
    assert path_targets("aoti") == "aoti-*"


class WithScriptedPart(torch.nn.Module):
    """A model holding a scripted submodule, as the seeds' wrap_rnn does."""

    def __init__(self):
        super().__init__()
        self.inner = torch.jit.script(broken_models.Linear())

    def forward(self, x):
        return self.inner(x) + 1


def test_freezing_leaves_the_eager_model_and_later_scriptings_alone(tmp_path):
    """Freezing in place changed the TorchScript types the eager model shares: eager then
    raised "has no attribute", and scripting the class again "Can't redefine method"."""
    model = WithScriptedPart().eval()
    x = torch.randn(2, 4)
    expected = model(x)
    export_script_frozen(model, (x,), tmp_path / "s.pt", ExportOptions())
    export_trace_frozen(model, (x,), tmp_path / "t.pt", ExportOptions())
    assert torch.equal(model(x), expected)
    torch.jit.script(WithScriptedPart().eval())
    frozen = torch.jit.load(str(tmp_path / "s.pt"))
    assert not list(frozen.parameters())  # the weights are constants now
    torch.testing.assert_close(frozen(x), expected)


def test_tuned_torchscript_is_optimized_where_it_is_loaded():
    assert loader_optimizes("trace-tuned") and loader_optimizes("script-tuned")
    assert not loader_optimizes("trace") and not loader_optimizes("aoti-tuned")


def test_a_tuned_artifact_that_computes_something_else_fails_matches_eager(
        tmp_path, monkeypatch):
    def wrong(file, device):
        loaded = torch.jit.load(str(file))
        return lambda *inputs: loaded(*inputs) * 1.01

    patch_loader(monkeypatch, "torch-wrong", wrong)
    monkeypatch.setitem(PATHS["trace-tuned"].loaders, "torch-wrong", wrong)
    state = CaseState(broken_models.linear_case(), "cpu", tmp_path)
    sound = Subject(state, Target("trace-tuned", "torch"), reproduce="pytest <nodeid>")
    assert checks.matches_eager(sound)["max_abs"] <= 1e-5
    broken = Subject(state, Target("trace-tuned", "torch-wrong"), reproduce="pytest <nodeid>")
    with pytest.raises(CheckFailure, match="target trace-tuned-torch-wrong-cpu"):
        checks.matches_eager(broken)


def test_the_harness_optimizes_a_tuned_module_and_matches_eager(tmp_path, shared_harness):  # noqa: F811
    state = CaseState(broken_models.linear_case(), "cpu", tmp_path,
                      harness=lambda: shared_harness)
    subject = Subject(state, Target("trace-tuned", "libtorch"), reproduce="pytest <nodeid>")
    assert subject.loaded.kind == "torchscript-optimized"
    assert checks.matches_eager(subject)["max_abs"] <= 1e-5


def test_the_compile_tuning_holds_around_each_call_and_is_restored():
    from torch._inductor import config

    seen = []

    def compiled(x):
        seen.append(config.freezing)
        if x is None:
            raise ValueError("a failing call")
        return x

    tuned = WithInductorConfig(compiled, {"freezing": True})
    before = config.freezing
    tuned(1)
    with pytest.raises(ValueError):
        tuned(None)
    assert seen == [True, True] and config.freezing == before


def test_the_aoti_tuning_compiles_without_autograd_and_with_its_configs(tmp_path, monkeypatch):
    from conformance.exporters import pt2

    seen = {}

    def package(program, package_path, inductor_configs=None):
        seen.update(grad=torch.is_grad_enabled(), configs=inductor_configs)

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", package)
    model = broken_models.Linear().eval()
    pt2.export_aoti_tuned(model, (torch.randn(2, 4),), tmp_path / "m.pt2", ExportOptions())
    assert seen == {"grad": False,
                    "configs": TUNINGS["aoti-tuned"].settings["inductor_configs"]}


def onnx_file(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU()).eval()
    file = tmp_path / "m.onnx"
    x = torch.randn(1, 3, 8, 8)
    torch.onnx.export(model, (x,), str(file), dynamo=False, opset_version=17)
    return model, x, file


def test_onnxruntime_tuned_saves_the_optimized_model_once_and_matches(tmp_path):
    pytest.importorskip("onnxruntime")
    from conformance.runtimes import onnx

    model, x, file = onnx_file(tmp_path)
    tuned = onnx.load_onnxruntime_tuned(file, "cpu")
    saved = onnx.optimized_model(file, "cpu")
    assert saved.exists() and saved != file
    made = saved.stat().st_mtime_ns
    onnx.load_onnxruntime_tuned(file, "cpu")
    assert saved.stat().st_mtime_ns == made  # reused, not optimized again
    torch.testing.assert_close(tuned(x)[0], model(x), atol=1e-5, rtol=1e-4)


def test_onnxruntime_tuned_optimizes_again_after_the_artifact_changed(tmp_path):
    pytest.importorskip("onnxruntime")
    import os

    from conformance.runtimes import onnx

    _, _, file = onnx_file(tmp_path)
    saved = onnx.optimized_model(file, "cpu")
    os.utime(saved, (1, 1))  # older than the artifact: made from an earlier export
    assert onnx.optimized_model(file, "cpu").stat().st_mtime > 1


def test_a_keyword_case_runs_tuned_like_its_default(tmp_path):
    class Scale(torch.nn.Module):
        def forward(self, x, scale):
            return x * scale

    case = Case("scale_kw", Scale, lambda: Inputs(torch.randn(3), scale=torch.tensor(2.0)))
    state = CaseState(case, "cpu", tmp_path)
    subject = Subject(state, Target("trace-tuned", "torch"), reproduce="pytest <nodeid>")
    assert checks.matches_eager(subject)["max_abs"] == 0


def test_the_offline_optimization_is_timed_apart_from_the_load(tmp_path):
    pytest.importorskip("onnxruntime")
    state = CaseState(broken_models.linear_case(), "cpu", tmp_path)
    subject = Subject(state, Target("onnx", "onnxruntime-tuned", opset=17),
                      reproduce="pytest <nodeid>")
    assert checks.matches_eager(subject)["max_abs"] <= 1e-5
    assert {"prepare_onnx-op17_onnxruntime-tuned_s",
            "load_onnx-op17_onnxruntime-tuned_s"} <= set(subject.timings)
    assert list(tmp_path.rglob("*-optimized*")) == [] and len(list(tmp_path.rglob("*.ort*"))) == 1
