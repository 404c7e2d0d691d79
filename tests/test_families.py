"""The generated_models check finds a planted exporter bug and shrinks the model."""
import copy

import pytest
import torch
from hypothesis import find
from hypothesis.errors import NoSuchExample

from conformance.checks import catalog as checks
from conformance.checks.catalog import CheckFailure
from conformance.checks.families import FAMILIES, KNOWN_GAPS, FamilySubject, known_gap
from conformance.checks.property_search import Profile, SearchSettings, search_settings
from conformance.expectations import load_table
from conformance.exporters import torchscript
from conformance.fixtures import findings
from conformance.layout import builtin_expectations
from conformance.targets import Target
from tests.patching import patch_exporter

# Room enough for the planted bug to be drawn (grouped convolutions are a small share
# of the models) and shrunk within a self-test.
THOROUGH = SearchSettings(Profile("thorough", max_examples=150, budget_s=240.0,
                                  shrink_s=240.0, derandomize=True))


def family_subject(tmp_path, path="trace", runtime="torch", search=THOROUGH) -> FamilySubject:
    return FamilySubject(FAMILIES[0], Target(path, runtime, "cpu"), tmp_path,
                         reproduce="pytest <nodeid>", search=search)


def trace_negating_grouped_convolutions(model, example, file, options):
    """A trace exporter with a planted bug: grouped convolutions lose their weights' sign."""
    broken = copy.deepcopy(model)  # the eager model stays sound
    for module in broken.modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            with torch.no_grad():
                module.weight.neg_()
    torchscript.export_trace(broken, example, file, options)


def test_an_exporter_wrong_for_grouped_convolutions_is_found_and_shrunk(tmp_path, monkeypatch):
    patch_exporter(monkeypatch, "trace", trace_negating_grouped_convolutions)
    with pytest.raises(CheckFailure) as failure:
        checks.generated_models(family_subject(tmp_path))
    message, reproduction = str(failure.value), failure.value.metrics["reproduction"]
    # The smallest model with the bug: one convolution with 2 groups, kernel, stride and
    # dilation 1, on the smallest input that has 2 channels.
    assert "(1 layer: conv2d(k1,s1,p0,d1,g2); input (1, 2, 1, 1))" in message
    assert "nn.Conv2d(2, 2, kernel_size=1, stride=1, padding=0, dilation=1, groups=2" \
        in reproduction
    assert "INPUT_SHAPE = (1, 2, 1, 1)" in reproduction
    assert "check matches_eager: the artifact's outputs differ from eager" in message
    # The reproduction runs as it stands.
    namespace: dict = {"__name__": "__main__"}
    exec(compile(reproduction, "<reproduction>", "exec"), namespace)
    assert namespace["model"](namespace["x"]).shape == (1, 2, 1, 1)


def test_sound_traces_pass_the_ci_profile(tmp_path):
    metrics = checks.generated_models(family_subject(tmp_path, search=search_settings("ci", None)))
    assert metrics["examples"] == 8 and not metrics["out_of_time"]


def test_a_known_gap_is_left_out_of_its_targets_only():
    onnx = Target("onnx", "onnxruntime", opset=17)
    family, uses_gap = FAMILIES[0], lambda model: known_gap(onnx, model) is not None
    assert uses_gap(find(family.strategy(Target("trace", "torch")), uses_gap))
    with pytest.raises(NoSuchExample):
        find(family.strategy(onnx), uses_gap)


def test_the_conv_then_cond_gap_is_a_cond_right_after_a_convolution_in_aoti_only():
    aoti, tuned = Target("aoti", "torch"), Target("aoti-tuned", "torch")
    family = FAMILIES[0]

    def kinds(model):
        return [layer.kind for layer in model.layers]

    def conv_then_branch(model):
        return any(pair == ("conv2d", "branch") for pair in zip(kinds(model), kinds(model)[1:]))

    hit = find(family.strategy(Target("export", "torch")), conv_then_branch)
    assert known_gap(aoti, hit).case == "conv_then_cond" and known_gap(tuned, hit) is None
    with pytest.raises(NoSuchExample):
        find(family.strategy(aoti), conv_then_branch)
    # export writes branches as torch.cond too, and leaves AOTInductor's gaps in
    lone = find(family.strategy(Target("export", "torch")),
                lambda model: "branch" in kinds(model)[:1])
    assert known_gap(aoti, lone) is None  # a branch first, on the input itself


@pytest.mark.parametrize("before, hits", [
    (["conv"], True),                   # the finding
    (["conv", "relu"], True),           # measured: 24 of 32 elements wrong
    (["conv", "tanh", "relu"], True),
    (["concat_conv"], True),            # measured: 60 of 64 wrong
    (["concat_scaled"], False),
    (["residual"], False),              # x + conv(x): measured right
    (["conv", "batch_norm"], False),
    ([], False),
])
def test_the_conv_then_cond_gap_is_a_cond_on_a_convolutions_output(before, hits):
    """What AOTInductor's default package was measured to get wrong (a 1x1 or 3x3 Conv2d,
    with or without bias, before torch.cond)."""
    from conformance.checks.generated import (Activation, BatchNorm, Branch, Concat, Conv2d,
                                              GeneratedModel, Residual)

    made = {"conv": Conv2d(2, 2, 1, 1, 0, 1, 1, False), "relu": Activation("relu"),
            "tanh": Activation("tanh"), "concat_conv": Concat("conv", 2, 2),
            "concat_scaled": Concat("scaled", 2, 2), "residual": Residual(2, 1, True, None),
            "batch_norm": BatchNorm(2)}
    layers = [made[name] for name in before]
    channels = 4 if before[-1:] in (["concat_conv"], ["concat_scaled"]) else 2
    model = GeneratedModel((1, 2, 4, 4), (*layers, Branch("relu_or_scale", channels, "cond")),
                           "cond")
    found = known_gap(Target("aoti", "torch"), model)
    assert (found is not None and found.case == "conv_then_cond") == hits
    assert known_gap(Target("aoti-tuned", "torch"), model) is None


def test_every_known_gap_has_its_finding_case_and_expectation_row():
    rows = load_table(builtin_expectations())
    cases = {case.name: case for case in findings.CASES}
    for gap in KNOWN_GAPS:
        assert "finding" in cases[gap.case].tags
        assert any(row.case == gap.case and row.target == gap.targets for row in rows), gap.case


def test_the_max_pool_gap_is_the_window_pytorch_drops():
    """The gap applies exactly where PyTorch's ceil_mode size is one less than the plain
    ceil formula's (the last window would start in the right padding)."""
    import torch
    import torch.nn.functional as F

    from conformance.checks.families import _max_pool_ceil_drops_last_window
    from conformance.checks.generated import Pool

    for kernel, stride, padding in ((2, 2, 1), (3, 2, 1), (2, 1, 1), (3, 3, 1)):
        pool = Pool(op="max", kernel=kernel, stride=stride, padding=padding, ceil_mode=True,
                    count_include_pad=False)
        for size in range(max(1, kernel - 2 * padding), 9):
            pytorch = F.max_pool2d(torch.zeros(1, 1, size, size), kernel, stride, padding,
                                   ceil_mode=True).shape[-1]
            plain = -(-(size + 2 * padding - kernel) // stride) + 1
            assert _max_pool_ceil_drops_last_window(pool, (1, 1, size, size)) == (pytorch < plain)
    floor = Pool(op="max", kernel=2, stride=2, padding=1, ceil_mode=False, count_include_pad=False)
    assert not _max_pool_ceil_drops_last_window(floor, (1, 1, 1, 1))


@pytest.mark.parametrize("input_shape, between, out_features", [
    ((1, 2, 1, 1), (), 2),          # the finding
    ((2, 3, 2, 2), (), 3),
    ((1, 2, 3, 1), (), 2),
    ((1, 2, 1, 1), (), 3),          # the Linear's outputs are not the channels: not folded
    ((1, 1, 1, 1), (), 1),          # one channel: folded, but the same either way
    ((1, 2, 1, 1), ("tanh",), 2),   # something between the two: not folded
])
def test_the_linear_batch_norm_gap_is_where_freezing_folds_wrongly(tmp_path, input_shape,
                                                                   between, out_features):
    """The gap applies exactly where torch.jit.freeze's output differs from eager's."""
    from conformance.checks.generated import Activation, BatchNorm, GeneratedModel, Linear

    layers = (Linear(input_shape[-1], out_features), *map(Activation, between),
              BatchNorm(input_shape[1]))
    drawn = GeneratedModel(input_shape, layers, None)
    torch.manual_seed(0)
    model, x = drawn.build(tmp_path).eval(), torch.randn(input_shape)
    frozen = torch.jit.freeze(torch.jit.trace(model, x))
    wrong = not torch.allclose(frozen(x), model(x), atol=1e-5)
    for path in ("trace-tuned", "script-tuned"):
        assert (known_gap(Target(path, "torch"), drawn) is not None) == wrong, path
    assert known_gap(Target("trace", "torch"), drawn) is None
