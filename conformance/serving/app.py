"""The Flask app that serves an artifact: `/health`, and `/v1/infer` (tensors in, tensors
out, as conformance.serving.wire says: an .npz archive, or JSON, answered in kind). A bad
request gets a 4xx answer with a JSON error that says what was wrong, and the server goes
on serving."""
from __future__ import annotations

from pathlib import Path

from conformance.serving import wire
from conformance.serving.backends import backend_for
from conformance.serving.batching import Batcher


def create_app(artifact: Path, max_batch: int = 1, max_wait_ms: float = 0.0,
               classes: Path | None = None, convert_to_rgb: bool = False):
    """The app for one artifact, its model loaded once, before the first request, on the
    process's thread budget (conformance.runtimes.thread_budget); with `max_batch` above 1,
    concurrent requests are batched (conformance.serving.batching); with `classes`, an
    image classifier's `/predict` and upload page (conformance.serving.images), which
    takes grayscale and transparent images only with `convert_to_rgb`."""
    from flask import Flask, jsonify

    app = Flask("conformance.serving")
    model = backend_for(Path(artifact))
    if max_batch > 1:
        model = Batcher(model, max_batch, max_wait_ms / 1000)
    if classes is not None:
        from conformance.serving.images import ImagePipeline, add_predict_routes, load_classes

        add_predict_routes(app, model, load_classes(classes), ImagePipeline(),
                           convert_to_rgb)

    @app.get("/health")
    def health():
        counts = model.counts() if isinstance(model, Batcher) else None
        return jsonify(status="ok", artifact=Path(artifact).name,
                       batches={str(size): n for size, n in counts.items()} if counts else None)

    app.add_url_rule("/v1/infer", "infer", lambda: infer(model), methods=["POST"])
    return app


def infer(model):
    """One request of /v1/infer: its tensors decoded as its type says, the model's
    outputs encoded the same way; each way it can go wrong its own 4xx."""
    from flask import Response, request

    kind = request.mimetype
    if kind not in CODECS:
        return error(415, f"send the inputs as {wire.CONTENT_TYPE} (an .npz archive of "
                          f"arrays named 0..n-1) or as {wire.JSON_TYPE}, not "
                          f"{kind or 'no type'}")
    decode, encode = CODECS[kind]
    try:
        args, kwargs = wire.arrays_to_call(decode(request.get_data()))
    except wire.WireError as exc:
        return error(400, str(exc))
    try:
        outputs = model(args, kwargs)
    except Exception as exc:  # the model refused these inputs: the client's to fix
        return error(422, model_error(exc))
    try:
        body = encode(wire.outputs_to_arrays(outputs))
    except wire.WireError as exc:  # an output the format cannot carry: ask for npz
        return error(406, str(exc))
    return Response(body, mimetype=kind)


def error(status: int, message: str):
    from flask import jsonify

    return jsonify(error=message), status


# Each request body's type, its decoder and the encoder of its answer
CODECS = {wire.CONTENT_TYPE: (wire.decode, wire.encode),
          wire.JSON_TYPE: (wire.decode_json, wire.encode_json)}


def model_error(exc: Exception) -> str:
    """What a model's refusal says, its first line: the client's to fix (a 422)."""
    first = (str(exc).splitlines() or [""])[0][:500]
    return f"the model could not run on these inputs: {type(exc).__name__}: {first}"
