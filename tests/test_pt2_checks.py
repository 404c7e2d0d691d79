"""The PT2 paths (torch.export, torch.compile, AOTInductor): each check fails on a
deliberately broken artifact or backend, and passes on a sound one."""
import pytest
import torch

from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.subject import CaseState, Subject
from conformance.runtimes import libtorch as harness
from conformance.runtimes.fresh_process import FreshProcess
from conformance.targets import Target
from tests import broken_models
from tests.patching import exporter_of, patch_compile_backend, patch_exporter


@pytest.fixture(scope="module")
def worker():
    process = FreshProcess(timeout_s=300)
    yield process
    process.close()


def pt2_subject(case, path, runtime, tmp_path, worker=None, harness_process=None) -> Subject:
    state = CaseState(case, "cpu", tmp_path, harness=lambda: harness_process)
    return Subject(state, Target(path, runtime, "cpu"), worker, reproduce="pytest <nodeid>")


def test_an_exported_program_round_trips_through_a_fresh_process(tmp_path, worker):
    subject = pt2_subject(broken_models.linear_case(), "export", "torch", tmp_path, worker)
    assert checks.matches_eager(subject)["max_abs"] <= 1e-5
    assert checks.generalizes(subject)["max_abs"] <= 1e-5  # batch 5 through the dynamic axis
    assert checks.fresh_process(subject)["max_abs"] == 0


def test_the_export_round_trip_fails_for_a_program_that_draws_random_numbers(tmp_path, worker):
    subject = pt2_subject(broken_models.noisy_case(), "export", "torch", tmp_path, worker)
    with pytest.raises(CheckFailure, match="target export-torch-cpu, check fresh_process: the "
                                           "saved artifact gives other outputs"):
        checks.fresh_process(subject)


def export_other_weights(monkeypatch, path):
    """An exporter that saves a sound model with other weights than the case's."""
    sound = exporter_of(path)

    def other_weights(model, example, file, options):
        torch.manual_seed(123)
        sound(broken_models.Linear().eval(), example, file, options)

    patch_exporter(monkeypatch, path, other_weights)


def test_an_exported_program_with_other_weights_fails_matches_eager(tmp_path, monkeypatch):
    export_other_weights(monkeypatch, "export")
    subject = pt2_subject(broken_models.linear_case(), "export", "torch", tmp_path)
    with pytest.raises(CheckFailure, match="target export-torch-cpu, check matches_eager"):
        checks.matches_eager(subject)


def test_export_keeps_a_torch_cond_and_fails_a_python_if_with_the_reason(tmp_path):
    kept = checks.keeps_branches(
        pt2_subject(broken_models.cond_branchy_case(), "export", "torch", tmp_path / "cond"))
    assert kept["cond"] == 1
    subject = pt2_subject(broken_models.branchy_case(), "export", "torch", tmp_path / "if")
    with pytest.raises(CheckFailure, match=r"(?s)could not export.*the export exporter failed"):
        checks.matches_eager(subject)


def perturbing_backend(graph, example_inputs):
    def run(*args):
        outputs = graph.forward(*args)
        return type(outputs)(o + 1e-2 for o in outputs) if isinstance(outputs, (tuple, list)) \
            else outputs + 1e-2

    return run


def test_compile_matches_eager_with_inductor(tmp_path):
    subject = pt2_subject(broken_models.linear_case(), "compile", "inductor", tmp_path)
    assert checks.matches_eager(subject)["max_abs"] <= 1e-5


def test_a_mismatch_under_inductor_only_is_blamed_on_code_generation(tmp_path, monkeypatch):
    patch_compile_backend(monkeypatch, "inductor", perturbing_backend)
    subject = pt2_subject(broken_models.linear_case(), "compile", "inductor", tmp_path)
    with pytest.raises(CheckFailure, match=r"(?s)target compile-inductor-cpu, check "
                       r"matches_eager.*aot_eager backend .* matches eager: the mismatch comes "
                       r"from Inductor's code generation"):
        checks.matches_eager(subject)


def test_a_mismatch_under_both_backends_is_blamed_on_graph_capture(tmp_path, monkeypatch):
    for runtime in ("inductor", "aot_eager"):
        patch_compile_backend(monkeypatch, runtime, perturbing_backend)
    subject = pt2_subject(broken_models.linear_case(), "compile", "inductor", tmp_path)
    with pytest.raises(CheckFailure, match="still differs from eager: graph capture"):
        checks.matches_eager(subject)


def test_compiles_fullgraph_counts_recompiles_of_a_sound_model(tmp_path):
    subject = pt2_subject(broken_models.linear_case(), "compile", "inductor", tmp_path)
    metrics = checks.compiles_fullgraph(subject)
    assert metrics["graph_breaks"] == 0
    assert metrics["recompiles"] == 1  # batch 5 after the example's batch 2: dynamic recompile


def test_a_compiled_model_past_its_recompile_limit_raises_rather_than_running_eager():
    """Dynamo's default, past 8 compiles of one function, runs new sizes in eager: a
    search would compare eager with itself. The suite's compiles raise instead, with
    what it means."""
    from torch._dynamo import config
    from torch._dynamo.exc import FailOnRecompileLimitHit

    from conformance.runtimes.loaders import RECOMPILE_LIMIT, compile_model, recompile_limit_hint

    # Dynamo's defaults, and a recompile for each size; restored on leaving
    with config.patch(recompile_limit=8, fail_on_recompile_limit_hit=False,
                      automatic_dynamic_shapes=False):
        compiled = compile_model(lambda x: x * 2, backend="eager")
        for size in range(1, RECOMPILE_LIMIT + 1):
            assert compiled(torch.ones(size)).sum() == 2 * size
        with pytest.raises(FailOnRecompileLimitHit) as raised:
            compiled(torch.ones(RECOMPILE_LIMIT + 1))
        hint = recompile_limit_hint(f"{raised.value}")
    assert f"compiled the model {RECOMPILE_LIMIT} times" in hint and "in eager" in hint
    assert recompile_limit_hint("RuntimeError: shape mismatch") is None


def test_recompiles_are_counted_past_dynamos_default_limit_in_any_test_order():
    """fullgraph=True raises at the recompile limit: counting must not depend on whether a
    compile cell raised the limit earlier in the process."""
    from types import SimpleNamespace

    from torch._dynamo import config

    from conformance.checks.catalog import count_recompiles

    state = SimpleNamespace(model=lambda x: x * 2, example=(torch.ones(1),),
                            run=lambda function, inputs: function(*inputs))
    probes = [(torch.ones(size),) for size in range(2, 13)]
    with config.patch(recompile_limit=8, fail_on_recompile_limit_hit=False,
                      automatic_dynamic_shapes=False):
        assert count_recompiles(state, probes) == 11


def test_compiles_fullgraph_fails_on_a_graph_break(tmp_path):
    subject = pt2_subject(broken_models.branchy_case(), "compile", "inductor", tmp_path)
    with pytest.raises(CheckFailure, match=r"(?s)fullgraph=True\) refuses the model \(1 graph "
                                           r"break.*- ") as failure:
        checks.compiles_fullgraph(subject)
    assert failure.value.metrics["graph_breaks"] == 1


@pytest.mark.skipif(harness.toolchain_problem() is not None,
                    reason=str(harness.toolchain_problem()))
def test_an_aoti_package_with_other_weights_fails_on_python_and_on_libtorch(tmp_path,
                                                                            monkeypatch):
    from conformance.layout import harness_build_dir

    export_other_weights(monkeypatch, "aoti")
    process = harness.Harness(harness_build_dir(), timeout_s=300)
    try:
        for runtime in ("torch", "libtorch"):
            subject = pt2_subject(broken_models.linear_case(), "aoti", runtime, tmp_path,
                                  harness_process=process)
            with pytest.raises(CheckFailure, match=f"target aoti-{runtime}-cpu, check "
                                                   "matches_eager"):
                checks.matches_eager(subject)
    finally:
        process.close()
