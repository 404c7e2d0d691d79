"""Servers with planted faults, for the serve runtime's self-tests: each an app factory
that `python -m conformance.serving.server --app tests.broken_serving:NAME` serves."""
from __future__ import annotations

import io
import json
import os

from conformance.serving import wire
from conformance.serving.app import create_app


def _rewrite_outputs(app, rewrite):
    """The app, with every /v1/infer answer's arrays passed through `rewrite`."""
    @app.after_request
    def rewritten(response):
        if response.mimetype == wire.CONTENT_TYPE and response.status_code == 200:
            arrays = wire.decode(response.get_data())
            response.set_data(wire.encode({k: rewrite(v) for k, v in arrays.items()}))
        return response
    return app


def json_rounding_app(artifact, **settings):
    """Sends the outputs through JSON as a service that rounds its scores to three
    decimals does (as many do, to keep answers short)."""
    import numpy as np

    def through_json(array):
        text = json.dumps([round(v, 3) for v in array.ravel().tolist()])
        return np.asarray(json.loads(text), dtype=array.dtype).reshape(array.shape)

    return _rewrite_outputs(create_app(artifact, **settings), through_json)


def batch_reversing_app(artifact, **settings):
    """Hands back the rows of a batch in the wrong order, as a batcher that mixes up its
    clients' requests would: right for a batch of one, wrong for any other."""
    return _rewrite_outputs(create_app(artifact, **settings),
                            lambda array: array[::-1].copy() if array.ndim else array)


def dying_app(artifact, **settings):
    """Dies on its first inference, after saying so in its log."""
    app = create_app(artifact, **settings)

    @app.before_request
    def die():
        from flask import request

        if request.path == "/v1/infer":
            print("planted fault: the server exits", flush=True)
            os._exit(3)
    return app


def client_mixing_app(artifact, **settings):
    """Batches concurrent requests and hands each client the rows of the next client in
    the batch: every answer is a right answer, to someone else's question."""
    from conformance.serving import batching

    sound = batching.run_batch

    def mixed(backend, group):
        answers = sound(backend, group)
        return answers[1:] + answers[:1]

    batching.run_batch = mixed
    return create_app(artifact, **settings)


def unnormalized_app(artifact, **settings):
    """Feeds the model the image without the ImageNet normalization: the preprocessing
    differs from the one the model was trained with, and the classes with it."""
    from conformance.serving import images

    def unnormalized(self, image):
        from torchvision import transforms

        steps = transforms.Compose([transforms.Resize(self.resize),
                                    transforms.CenterCrop(self.crop), transforms.ToTensor()])
        return steps(image).unsqueeze(0)

    images.ImagePipeline.__call__ = unnormalized
    return create_app(artifact, **settings)


def no_conversion_app(artifact, **settings):
    """The tutorial's server: decodes the upload and hands the pipeline whatever mode it
    has, so a palette or RGBA image fails in the model (a 500), a grayscale one is
    answered from the gray broadcast by the normalization, and anything PIL cannot read
    is a 500 too."""
    from conformance.serving import images

    def as_uploaded(data, convert_to_rgb=False):
        from PIL import Image

        return Image.open(io.BytesIO(data))

    images.read_image = as_uploaded
    return create_app(artifact, **settings)


def wrong_field_page_app(artifact, **settings):
    """The upload page with its file input renamed: the form sends the image in a field
    /predict does not read, so every upload is refused."""
    from conformance.serving import images

    images.PAGE = images.PAGE.replace('name="file"', 'name="image"')
    return create_app(artifact, **settings)
