"""The generated-model strategy: every drawn model is valid, reproducible and exportable."""
from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from conformance.checks import generated
from conformance.checks.generated import Conv2d, GeneratedModel, branch_layers, models

FEW = settings(max_examples=40, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("generated")


def built(model: GeneratedModel, directory, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return model.build(directory).eval()


def example_input(model: GeneratedModel, seed: int = 1) -> torch.Tensor:
    return torch.randn(model.input_shape, generator=torch.Generator().manual_seed(seed))


@st.composite
def models_with_a_leading_branch(draw, spelling: str) -> GeneratedModel:
    """A drawn model behind a branch layer: x and -x then take opposite sides of that branch."""
    model = draw(models(branch=spelling, max_layers=3))
    branch = draw(branch_layers(model.input_shape, spelling))
    return dataclasses.replace(model, layers=(branch, *model.layers))


@settings(FEW, max_examples=100)
@given(model=models())
def test_every_model_runs_in_eager_with_the_tracked_output_shape(model, directory):
    with torch.no_grad():
        output = built(model, directory)(example_input(model))
    assert tuple(output.shape) == model.output_shape(), model.source()
    assert torch.isfinite(output).all(), model.source()


@settings(FEW, max_examples=30)
@given(model=models(branch="if"))
def test_source_alone_reproduces_the_model(model, directory):
    namespace = {"__name__": "reproduction"}
    exec(compile(model.source(), "<reproduction>", "exec"), namespace)
    assert namespace["INPUT_SHAPE"] == model.input_shape
    torch.manual_seed(0)
    reproduced = namespace["Generated"]().eval()
    x = example_input(model)
    with torch.no_grad():
        expected, actual = built(model, directory)(x), reproduced(x)
    assert tuple(actual.shape) == model.output_shape()
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


@settings(FEW, max_examples=60)
@given(model=models_with_a_leading_branch("if"))
def test_script_agrees_with_eager_on_both_sides_of_the_branch(model, directory):
    assert model.has_branch()
    module = built(model, directory)
    scripted = torch.jit.script(module)
    x = example_input(model)
    with torch.no_grad():
        for probe in (x, -x):
            torch.testing.assert_close(scripted(probe), module(probe))
            assert tuple(scripted(probe).shape) == model.output_shape()


@settings(FEW, max_examples=8)  # export is slow
@given(model=models_with_a_leading_branch("cond"))
def test_export_with_cond_agrees_with_eager_on_both_sides(model, directory):
    assert "torch.cond(" in model.source()
    module = built(model, directory)
    x = example_input(model)
    exported = torch.export.export(module, (x,)).module()
    with torch.no_grad():
        for probe in (x, -x):
            torch.testing.assert_close(exported(probe), module(probe), rtol=1e-4, atol=1e-5)


@FEW
@given(model=models(branch="cond"))
def test_describe_names_every_layer(model):
    description = model.describe()
    count, rest = description.split(" ", 1)
    chain, input_part = rest.split(": ", 1)[1].rsplit("; ", 1)
    assert int(count) == len(model.layers)
    assert chain.split(" -> ") == [layer.describe() for layer in model.layers]
    assert input_part == f"input {model.input_shape}"
    assert "\n" not in description


def test_every_layer_kind_is_drawn():
    seen = set()

    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(models(branch="if"))
    def collect(model):
        seen.update(type(layer) for layer in model.layers)

    collect()
    layer_classes = {cls for cls in vars(generated).values()
                     if isinstance(cls, type) and issubclass(cls, generated.Layer)
                     and cls is not generated.Layer}
    assert seen == layer_classes


def test_every_drawn_shape_stays_within_the_limits():
    @settings(max_examples=300, derandomize=True, database=None, deadline=None)
    @given(models(branch="cond"))
    def check(model):
        for _, channels, height, width in model.shapes():
            assert 1 <= channels <= generated.MAX_CHANNELS
            assert 1 <= height <= generated.MAX_SIZE and 1 <= width <= generated.MAX_SIZE

    check()


def pytorch_size(layer, size: int) -> int | None:
    """The size PyTorch gives a layer on a size x size input; None where it refuses it."""
    try:
        with torch.no_grad():
            return layer(torch.zeros(1, 1, size, size)).shape[-1]
    except RuntimeError:
        return None


def test_tracked_pool_sizes_are_pytorchs_including_ceil_mode():
    for size, kernel, stride, ceil_mode in itertools.product(
            range(1, 8), range(1, 4), range(1, 4), (False, True)):
        for padding in range(kernel // 2 + 1):
            pool = torch.nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
            tracked = generated.pool_output_size(size, kernel, stride, padding, ceil_mode)
            assert pytorch_size(pool, size) == (tracked if tracked >= 1 else None), pool


def test_tracked_conv_sizes_are_pytorchs():
    for size, kernel, stride, padding, dilation in itertools.product(
            range(1, 6), range(1, 6), range(1, 4), range(3), range(1, 4)):
        conv = torch.nn.Conv2d(1, 1, kernel, stride, padding, dilation)
        tracked = generated.conv_output_size(size, kernel, stride, padding, dilation)
        assert pytorch_size(conv, size) == (tracked if tracked >= 1 else None), conv


def test_a_grouped_conv_shrinks_to_the_smallest_one():
    def has_grouped_conv(model):
        return any(isinstance(layer, Conv2d) and layer.groups > 1 for layer in model.layers)

    minimal = find(models(), has_grouped_conv,
                   settings=settings(derandomize=True, database=None, max_examples=500))
    assert minimal.input_shape == (1, 2, 1, 1)
    assert minimal.layers == (Conv2d(in_channels=2, out_channels=2, kernel=1, stride=1,
                                     padding=0, dilation=1, groups=2, bias=False),)
    assert minimal.describe() == "1 layer: conv2d(k1,s1,p0,d1,g2); input (1, 2, 1, 1)"
