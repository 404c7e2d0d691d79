"""The srcnn_dynamic_scale case: one ONNX model, upscale factor chosen at run time.

Inputs are drawn with the seed offsets the suite uses, so these are the
example (scale 3) and the probe (scale 4) the conformance matrix runs.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from conformance.fixtures import seed_models

CASE = next(case for case in seed_models.CASES if case.name == "srcnn_dynamic_scale")
INPUT_NAMES = ["input", "scales"]
RTOL = 1e-4
ATOL = 1e-4


def seeded(offset: int, make):
    torch.manual_seed(CASE.seed + offset)
    return make()


@pytest.fixture(scope="module")
def model():
    return seeded(0, CASE.build).eval()


@pytest.fixture(scope="module")
def example():
    return seeded(1, CASE.example)


@pytest.fixture(scope="module")
def probe():
    (inputs,) = seeded(3, CASE.probes)
    return inputs


@pytest.fixture(scope="module")
def onnx_file(model, example, tmp_path_factory):
    file = tmp_path_factory.mktemp("dynamic_scale") / "srcnn_dynamic_scale.onnx"
    with warnings.catch_warnings():
        # The exporter warns that scales.tolist() is traced as a constant; the
        # symbolic replaces that whole call, so the warning does not apply.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The legacy exporter is the point: only it runs autograd.Function symbolics.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, example, str(file), dynamo=False, opset_version=17,
                          input_names=INPUT_NAMES, output_names=["output"])
    return file


def eager(model, inputs) -> np.ndarray:
    with torch.no_grad():
        return model(*inputs).numpy()


def run_onnx(file, inputs) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    feeds = {name: tensor.numpy() for name, tensor in zip(INPUT_NAMES, inputs)}
    (output,) = session.run(None, feeds)
    return output


def assert_close(actual: np.ndarray, expected: np.ndarray):
    scale = float(np.abs(expected).max()) or 1.0  # the suite's rule (compare.allowed_error)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL * scale)


def resize_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    return [node for node in graph.node if node.op_type == "Resize"]


def test_case_is_registered_small():
    assert CASE.tags == {"seed", "small"}
    assert CASE.batch_sizes == ()


def test_graph_takes_scales_as_an_input(onnx_file):
    graph = onnx.load(str(onnx_file)).graph
    assert [value.name for value in graph.input] == INPUT_NAMES
    (resize,) = resize_nodes(graph)
    assert resize.input[2] == "scales"
    assert "scales" not in {initializer.name for initializer in graph.initializer}


@pytest.mark.parametrize("which, shape", [("example", (1, 3, 192, 192)),
                                          ("probe", (1, 3, 256, 256))])
def test_onnxruntime_follows_the_runtime_scale(which, shape, model, onnx_file, request):
    inputs = request.getfixturevalue(which)
    expected = eager(model, inputs)
    actual = run_onnx(onnx_file, inputs)
    assert expected.shape == actual.shape == shape
    assert_close(actual, expected)


def traced(model, example):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.trace(model, example, strict=False, check_trace=False)


def test_trace_keeps_the_function_as_an_unsaveable_python_call(model, example, probe,
                                                               tmp_path):
    # The tracer records an autograd.Function as a PythonOp that calls forward
    # again, so in this process the trace still follows the probe's scale...
    artifact = traced(model, example)
    assert "^DynamicBicubic" in str(artifact.graph)
    assert eager(artifact, probe).shape == (1, 3, 256, 256)
    # ...but such a call cannot be serialized, so the suite's trace path fails
    # at export instead of generalizing.
    with pytest.raises(RuntimeError, match="Could not export Python function call 'DynamicBicubic'"):
        torch.jit.save(artifact, str(tmp_path / "traced.pt"))
