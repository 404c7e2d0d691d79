"""The serve runtime: the lossless wire format, the server's answers to good and bad
requests, its death, and the checks' verdicts through it on planted faults."""
from __future__ import annotations

import ast
import io
import json
import threading
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conformance.checks.catalog import CheckFailure, matches_eager
from conformance.serving import client, wire
from tests import broken_models
from tests.patching import patch_loader
from tests.test_latency import subject_for

REPOSITORY = Path(__file__).resolve().parent.parent

pytest.importorskip("flask", reason="the serve runtime needs flask (the serve extra)")
pytest.importorskip("waitress", reason="the serve runtime needs waitress (the serve extra)")


@pytest.fixture(autouse=True)
def stop_servers(monkeypatch):
    # the servers of planted faults import tests.broken_serving, wherever pytest runs
    monkeypatch.setenv("PYTHONPATH", str(REPOSITORY))
    yield
    client.stop_all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64,
                                   torch.int32, torch.uint8, torch.bool])
def test_tensors_cross_the_wire_bit_for_bit(dtype):
    values = (torch.randn(3, 5) * 1e4).to(dtype)
    arrays = wire.decode(wire.encode(wire.tensors_to_arrays((values, values[:1]),
                                                            {"mask": values})))
    args, kwargs = wire.arrays_to_call(arrays)
    back = wire.arrays_to_outputs(wire.outputs_to_arrays(args))
    assert [t.dtype for t in back] == [dtype, dtype]
    assert torch.equal(back[0], values) and torch.equal(back[1], values[:1])
    assert torch.equal(torch.from_numpy(kwargs["mask"]), values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.int64,
                                   torch.int8, torch.uint8, torch.bool])
def test_tensors_cross_the_json_wire_bit_for_bit(dtype):
    values = (torch.randn(3, 5) * 1e4).to(dtype)
    if dtype.is_floating_point:
        values[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1e-40])
    arrays = wire.tensors_to_arrays((values,), {"mask": values[:1]})
    body = wire.encode_json(arrays)
    json.loads(body, parse_constant=pytest.fail)  # strict JSON: no NaN or Infinity literals
    back = wire.decode_json(body)
    assert set(back) == {"0", "kw:mask"}
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype and back[name].shape == array.shape
        assert back[name].tobytes() == array.tobytes()


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be an object of named tensors"),
    (b'{"0": [1, 2]}', "must be an object with dtype, shape and data"),
    (b'{"0": {"dtype": "float128", "shape": [1], "data": [1]}}', "has dtype 'float128'"),
    (b'{"0": {"dtype": "float32", "shape": [2, 2], "data": [1, 2, 3]}}', "3 values for shape"),
    (b'{"0": {"dtype": "float32", "shape": "2", "data": [1, 2]}}', "a list of sizes"),
    (b'{"0": {"dtype": "float32", "shape": [2], "data": [1, "two"]}}', "no array of numbers"),
    (b'{"0": {"dtype": "float32", "shape": [2], "data": [[1], [2, 3]]}}', "no array of numbers"),
    (b'{"0": {"dtype": "int64", "shape": [2], "data": [1, 2.5]}}', "values of another kind"),
    (b'{"0": {"dtype": "uint8", "shape": [1], "data": [300]}}', "outside uint8's range"),
    (b'{"0": {"dtype": "bool", "shape": [1], "data": [1]}}', "true or false for bool"),
    (b'{"0": {"dtype": "float16", "shape": [1], "data": [1e10]}}', "outside float16's range"),
    (b'{"0": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),
])
def test_a_json_body_that_is_no_tensor_is_refused_with_a_reason(body, words):
    with pytest.raises(wire.WireError, match=words):
        wire.decode_json(body)


def test_what_the_wire_cannot_carry_is_refused_with_a_reason():
    with pytest.raises(wire.WireError, match="bfloat16, which has no numpy dtype"):
        wire.tensors_to_arrays((torch.ones(2, dtype=torch.bfloat16),), {})
    with pytest.raises(wire.WireError, match="the body is empty"):
        wire.decode(b"")
    with pytest.raises(wire.WireError, match="not an .npz archive"):
        wire.decode(b"not a zip file")
    with pytest.raises(wire.WireError, match="must be named 0..n-1"):
        wire.arrays_to_call({"0": np.ones(1), "2": np.ones(1)})
    single = io.BytesIO()
    np.save(single, np.ones(3))
    with pytest.raises(wire.WireError, match="a single array, not an .npz archive"):
        wire.decode(single.getvalue())
    stray = io.BytesIO()
    with zipfile.ZipFile(stray, "w") as archive:
        archive.writestr("0", b"not an npy file")
    with pytest.raises(wire.WireError, match="no .npy arrays"):
        wire.decode(stray.getvalue())


def test_archives_are_read_one_thread_at_a_time(monkeypatch):
    # numpy reads each array's header (when the archive's member is read, not when it is
    # opened) with ast.literal_eval, which CPython 3.11 cannot run in two threads at once
    inside, most, calls, guard, literal_eval = [0], [0], [0], threading.Lock(), ast.literal_eval

    def slow_literal_eval(text):
        with guard:
            inside[0], calls[0] = inside[0] + 1, calls[0] + 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.002)
        with guard:
            inside[0] -= 1
        return literal_eval(text)

    monkeypatch.setattr(ast, "literal_eval", slow_literal_eval)
    body = wire.encode({"0": np.arange(6.0).reshape(2, 3)})
    with ThreadPoolExecutor(8) as pool:
        read = list(pool.map(lambda _: wire.decode(body), range(32)))
    assert calls[0] >= 32 and most[0] == 1
    assert all(np.array_equal(arrays["0"], np.arange(6.0).reshape(2, 3)) for arrays in read)


def linear_artifact(tmp_path, suffix: str = ".pt"):
    model = broken_models.Linear().eval()
    example = torch.randn(2, 4)
    file = tmp_path / f"linear{suffix}"
    if suffix == ".pt":
        torch.jit.trace(model, example).save(str(file))
    else:
        torch.onnx.export(model, (example,), str(file), dynamo=False,
                          dynamic_axes={"x": {0: "batch"}}, input_names=["x"])
    return model, file


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_a_served_artifact_answers_what_it_computes_in_process(tmp_path, suffix):
    model, file = linear_artifact(tmp_path, suffix)
    served = client.ServedModel(file)
    for batch in (1, 2, 7):
        x = torch.randn(batch, 4)
        (out,) = served(x)
        torch.testing.assert_close(out, model(x).detach(), rtol=1e-6, atol=1e-6)


def post(server, route: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(server.url + route, data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, {}
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_requests_get_a_4xx_with_a_reason_and_the_server_keeps_serving(tmp_path):
    model, file = linear_artifact(tmp_path)
    served = client.ServedModel(file)
    good = wire.encode(wire.tensors_to_arrays((torch.randn(2, 4),), {}))
    wrong_shape = wire.encode(wire.tensors_to_arrays((torch.randn(2, 5),), {}))
    wrong_dtype = wire.encode(wire.tensors_to_arrays((torch.ones(2, 4, dtype=torch.int64),), {}))
    pickled = wire.encode({"0": np.array([object()], dtype=object)})
    json_of = {"0": {"dtype": "float32", "shape": [2, 5], "data": [0.5] * 10}}
    for body, kind, status, words in [
            (good, "text/plain", 415, "send the inputs as application/x-npz"),
            (b"{not json", wire.JSON_TYPE, 400, "not valid JSON"),
            (b'{"0": {"dtype": "float32"}}', wire.JSON_TYPE, 400, "dtype, shape and data"),
            (json.dumps(json_of).encode(), wire.JSON_TYPE, 422, "could not run on these"),
            (b"", wire.CONTENT_TYPE, 400, "the body is empty"),
            (b"{not json", wire.CONTENT_TYPE, 400, "not an .npz archive"),
            (pickled, wire.CONTENT_TYPE, 400, "not an .npz archive of arrays"),
            (wrong_shape, wire.CONTENT_TYPE, 422, "the model could not run on these inputs"),
            (wrong_dtype, wire.CONTENT_TYPE, 422, "the model could not run on these inputs")]:
        code, answer = post(served.server, "/v1/infer", body, kind)
        assert code == status and words in answer["error"]
        (out,) = served(torch.ones(1, 4))  # and the next good request is answered
        torch.testing.assert_close(out, model(torch.ones(1, 4)).detach())


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_a_json_request_is_answered_in_json_with_the_same_bits_as_npz(tmp_path, suffix):
    _, file = linear_artifact(tmp_path, suffix)
    served = client.ServedModel(file)
    x = torch.randn(3, 4) * 1e3
    x[0, 0] = float("inf")  # non-finite values cross too
    answer = json.loads(served.post("/v1/infer", wire.encode_json(
        wire.tensors_to_arrays((x,), {})), wire.JSON_TYPE))
    (out,) = wire.arrays_to_outputs(wire.decode_json(json.dumps(answer).encode()))
    (expected,) = served(x)
    assert answer["0"]["dtype"] == "float32" and answer["0"]["shape"] == [3, 3]
    # every bit of every number; a NaN is a NaN (JSON keeps neither its sign nor payload)
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)


def test_a_server_that_dies_fails_the_call_with_its_log_and_the_next_call_restarts(tmp_path):
    _, file = linear_artifact(tmp_path)
    dying = client.ServedModel(file, app="tests.broken_serving:dying_app")
    with pytest.raises(client.ServeError, match=r"(?s)died.*planted fault: the server exits"):
        dying(torch.ones(1, 4))
    assert not dying.server.alive()
    sound = client.ServedModel(file)
    assert sound(torch.ones(1, 4))[0].shape == (1, 3)


def test_a_server_that_cannot_start_says_why(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not a TorchScript archive")
    with pytest.raises(client.ServeError, match=r"(?s)did not start.*server log"):
        client.ServedModel(tmp_path / "model.pt")


def served_by(monkeypatch, app: str | None) -> None:
    patch_loader(monkeypatch, "serve", lambda file, device: client.ServedModel(file, app=app))


@pytest.mark.parametrize("fault", ["json_rounding_app", "batch_reversing_app"])
def test_a_server_that_loses_bits_or_mixes_up_rows_fails_matches_eager(
        tmp_path, monkeypatch, fault):
    case = broken_models.linear_case()
    served_by(monkeypatch, None)
    matches_eager(subject_for(case, "trace", "serve", tmp_path / "sound"))
    served_by(monkeypatch, f"tests.broken_serving:{fault}")
    with pytest.raises(CheckFailure, match="case linear, target trace-serve-cpu, check "
                                           "matches_eager") as failure:
        matches_eager(subject_for(case, "trace", "serve", tmp_path / "broken"))
    assert failure.value.metrics["max_abs"] > 1e-5


def test_the_session_stops_every_server_it_started(tmp_path):
    _, file = linear_artifact(tmp_path)
    served = client.ServedModel(file)
    process = served.server.proc
    client.stop_all()
    assert process.poll() is not None and not client.SERVERS


def load_test(tmp_path, app: str | None, requests: int, clients: int = 16):
    from conformance.serving.load import run_load

    model, file = linear_artifact(tmp_path)
    served = client.ServedModel(file, app=app, batching=(8, 5.0))

    def inputs(i: int) -> tuple:
        return (torch.randn(1, 4, generator=torch.Generator().manual_seed(i)),)

    result = run_load(served, inputs, lambda x: model(x).detach(), clients, requests)
    result.batches = served.batches()
    return result


def test_a_thousand_requests_from_sixteen_clients_each_get_their_own_answer(tmp_path):
    result = load_test(tmp_path, None, requests=1000)
    assert not result.wrong and not result.lost, result.describe()
    assert len(result.latencies_s) == 1000
    # it did batch, and every request was in one model call
    assert max(result.batches) > 1
    assert sum(size * calls for size, calls in result.batches.items()) == 1000
    assert "1000 requests from 16 clients" in result.describe()


def test_a_batcher_that_hands_clients_each_others_rows_is_caught(tmp_path):
    result = load_test(tmp_path, "tests.broken_serving:client_mixing_app", requests=200)
    assert result.wrong and not result.lost
    assert "differs by up to" in result.wrong[0]


class TinyClassifier(torch.nn.Module):
    """An image classifier over ImageNet's 1000 classes, small enough to serve in a test."""

    def __init__(self):
        super().__init__()
        self.features = torch.nn.Conv2d(3, 16, 5, stride=4)
        self.head = torch.nn.Linear(16, 1000)

    def forward(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.features(x)), 1)
        return self.head(pooled.flatten(1))


def classifier_subject(tmp_path):
    from conformance import Case, random_inputs

    case = Case("tiny_classifier", TinyClassifier, random_inputs((1, 3, 224, 224)),
                tags={"classifier", "http"})
    return subject_for(case, "trace", "serve", tmp_path)


def test_a_served_classifier_answers_eagers_class_and_refuses_bad_uploads(tmp_path):
    from conformance.checks.serving import serves_predictions

    found = serves_predictions(classifier_subject(tmp_path))
    assert set(found["predictions"]) == {"photo.jpg", "palette.png"}


def test_an_opaque_alpha_channel_is_dropped_and_an_opaque_gray_one_still_refused():
    from PIL import Image

    from conformance.serving.images import ImageError, as_rgb

    opaque = Image.new("RGBA", (4, 4), (10, 20, 30, 255))
    assert as_rgb(opaque).mode == "RGB" and as_rgb(opaque).getpixel((0, 0)) == (10, 20, 30)
    with pytest.raises(ImageError, match="transparency"):
        as_rgb(Image.new("RGBA", (4, 4), (10, 20, 30, 128)))
    with pytest.raises(ImageError, match="grayscale"):
        as_rgb(Image.new("LA", (4, 4), (10, 255)))
    assert as_rgb(Image.new("CMYK", (4, 4))).mode == "RGB"


def test_grayscale_and_transparent_images_are_refused_unless_the_server_converts_them(
        tmp_path):
    from conformance.checks import serving
    from conformance.layout import imagenet_classes
    from conformance.serving.images import load_classes

    subject, classes = classifier_subject(tmp_path), load_classes(imagenet_classes())
    refusing = client.ServedModel(subject.artifact.file, classes=imagenet_classes())
    converting = client.ServedModel(subject.artifact.file, classes=imagenet_classes(),
                                    convert_to_rgb=True)
    for name, words in [("gray.png", "grayscale (mode L)"), ("rgba.png", "transparency")]:
        image = serving.test_images()[name]
        status, answer = refusing.predict(image, name)
        assert status == 422 and words in answer["error"] and "--convert-to-rgb" in answer["error"]
        assert serving._predicted(subject, converting, name, image, classes) == \
            serving.eager_class(subject, image, convert_to_rgb=True)[0]


@pytest.mark.parametrize("fault, words", [
    ("unnormalized_app", r"/predict gave class \d+ for \S+, eager gives \d+"),
    ("no_conversion_app", r"/predict answered 500 to palette.png"),
])
def test_a_server_with_the_tutorials_gaps_fails_serves_predictions(
        tmp_path, monkeypatch, fault, words):
    from conformance.checks import serving

    sound = client.ServedModel
    monkeypatch.setattr(client, "ServedModel", lambda *a, **k: sound(
        *a, app=f"tests.broken_serving:{fault}", **k))
    with pytest.raises(CheckFailure, match=words):
        serving.serves_predictions(classifier_subject(tmp_path))


def test_a_huge_image_is_refused_from_its_header():
    import struct

    from conformance.checks.serving import huge_png
    from conformance.serving.images import ImageError, read_image

    assert struct.unpack(">II", huge_png()[16:24]) == (20000, 20000)
    with pytest.raises(ImageError, match="too large") as refused:
        read_image(huge_png())
    assert refused.value.status == 413
    with pytest.raises(ImageError, match="more than 40,000,000 pixels") as refused:
        read_image(huge_png(8000, 6000))  # above the limit, below PIL's own bomb check
    assert refused.value.status == 413


def test_a_bad_request_among_batched_ones_fails_alone_and_the_batcher_keeps_serving(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    model, file = linear_artifact(tmp_path)
    served = client.ServedModel(file, batching=(8, 50.0))  # a wide window: they meet
    wrong = wire.encode(wire.tensors_to_arrays((torch.randn(1, 5),), {}))
    x = torch.randn(1, 4)
    with ThreadPoolExecutor(4) as pool:
        good = [pool.submit(served, x) for _ in range(3)]
        bad = pool.submit(post, served.server, "/v1/infer", wrong, wire.CONTENT_TYPE)
        answers = [future.result(timeout=60)[0] for future in good]
        status, answer = bad.result(timeout=60)
    assert status == 422 and "could not run on these inputs" in answer["error"]
    for out in answers + [served(x)[0]]:
        torch.testing.assert_close(out, model(x).detach())


def test_the_server_gets_the_whole_thread_budget_of_the_session(tmp_path, monkeypatch):
    from conformance.runtimes.thread_budget import Budget

    monkeypatch.setattr(client, "thread_budget_of_process", lambda: Budget(1, True))
    words = client.ServerProcess(tmp_path / "m.pt", threads=1).command()
    assert words[-3:] == ["--threads", "1", "--flush-denormal"]
    monkeypatch.setattr(client, "thread_budget_of_process", lambda: None)
    assert "--threads" not in client.ServerProcess(tmp_path / "m.pt").command()


def test_a_serve_latency_cell_records_the_load_every_answer_checked(tmp_path, monkeypatch):
    from conformance.latency.served_load import LoadSettings, served_load
    from conformance.latency.summary import served_load_rows

    subject = subject_for(broken_models.linear_case(), "trace", "serve", tmp_path)
    found = served_load(subject, 0.001, LoadSettings(requests=64, clients=8, max_batch=4))
    assert found["inputs"] == "the example with seeded noise per request"
    assert found["requests"] == 64 and found["clients"] == 8 and found["max_batch"] == 4
    assert sum(int(size) * n for size, n in found["batches"].items()) == 64
    assert found["throughput_over_eager"] == pytest.approx(found["throughput_rps"] * 0.001)
    assert 0 < found["p50_s"] <= found["p90_s"] <= found["p99_s"]
    record = {"case": "linear", "target": "trace-serve-cpu", "path": "trace", "check": "latency",
              "metrics": {"median_s": 0.01, "served_load": found}}
    (row,) = served_load_rows([record])
    assert row[:2] == ("linear", "trace-serve-cpu") and row[-1].endswith("of " + str(
        sum(found["batches"].values())))


def test_a_server_that_mixes_clients_up_under_load_fails_its_latency_cell(tmp_path, monkeypatch):
    from conformance.latency.served_load import LoadSettings, served_load

    sound = client.ServedModel
    monkeypatch.setattr(client, "ServedModel", lambda *a, **k: sound(
        *a, app="tests.broken_serving:client_mixing_app", **k))
    subject = subject_for(broken_models.linear_case(), "trace", "serve", tmp_path)
    with pytest.raises(CheckFailure, match=r"check latency: under load, \d+ answers were wrong "
                                           r"and 0 lost(?s:.*)differs by up to"):
        served_load(subject, 0.001, LoadSettings(requests=64, clients=8, max_batch=4,
                                                 max_wait_ms=20.0))


def test_each_request_under_load_gets_inputs_of_its_own():
    from conformance.latency.served_load import varied

    example = (torch.randn(2, 3), torch.tensor([4, 7]))
    first, second = varied(example, 0), varied(example, 1)
    assert not torch.equal(first[0], second[0]) and not torch.equal(first[0], example[0])
    assert torch.equal(varied(example, 0)[0], first[0])  # seeded: the reference sees the same
    assert torch.equal(first[1], example[1])  # token ids and indices are kept


def test_a_load_of_inputs_the_artifact_refuses_noisy_sends_the_example_itself(tmp_path):
    from types import SimpleNamespace

    from conformance.latency.served_load import request_inputs

    example = (torch.ones(2, 3),)
    state = SimpleNamespace(example=example, keywords=())

    def picky(x):
        if not torch.equal(x, torch.ones(2, 3)):
            raise ValueError("only ones")
        return [x]

    same, said = request_inputs(state, picky)
    assert same(5) is example and "mixed rows are invisible" in said
    varied_inputs, said = request_inputs(state, lambda x: [x])
    assert not torch.equal(varied_inputs(5)[0], example[0]) and "seeded noise" in said


def test_the_load_server_is_stopped_after_its_load(tmp_path):
    from conformance.latency.served_load import LoadSettings, served_load

    subject = subject_for(broken_models.linear_case(), "trace", "serve", tmp_path)
    served_load(subject, 0.001, LoadSettings(requests=16, clients=4, max_batch=4))
    assert not any(key[3] for key in client.SERVERS)  # no batching server left running
