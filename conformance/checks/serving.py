"""The serve runtime's own check: `serves_predictions`, the tutorial's image endpoint of a
served classifier. Uploaded images get eager's top class as JSON (the image pipeline run
by the server against the same pipeline run here, then eager), and every bad upload gets
its 4xx with a reason while the server goes on answering."""
from __future__ import annotations

import functools
import io
import struct
import zlib

from conformance.checks.catalog import fail, run_or_fail
from conformance.checks.subject import Subject


@functools.lru_cache(maxsize=1)
def test_images() -> dict[str, bytes]:
    """Images as users upload them, each from a fixed seed: a photo-sized JPEG, a
    palette PNG (converted to RGB by the server), and the two the server refuses unless
    told to convert them: a grayscale PNG and an RGBA one."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def encoded(array, mode: str, kind: str, to: str | None = None) -> bytes:
        buffer = io.BytesIO()
        image = Image.fromarray(array, mode)
        (image.convert(to) if to else image).save(buffer, kind)
        return buffer.getvalue()

    return {"photo.jpg": encoded(rng.integers(0, 256, (300, 400, 3), np.uint8), "RGB", "JPEG"),
            "palette.png": encoded(rng.integers(0, 256, (240, 320, 3), np.uint8), "RGB", "PNG",
                                   to="P"),
            "gray.png": encoded(rng.integers(0, 256, (224, 224), np.uint8), "L", "PNG"),
            "rgba.png": encoded(rng.integers(0, 256, (257, 231, 4), np.uint8), "RGBA", "PNG")}


# The images the server answers by default; the others it refuses (bad_uploads).
ANSWERED = ("photo.jpg", "palette.png")


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A PNG whose header declares a huge image (its data is one pixel's): a server that
    decodes before it checks the size would try to allocate gigabytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def bad_uploads(good: bytes) -> list[tuple[str, dict, int]]:
    """(what, the arguments of ServedModel.predict that send it, the status it must get)."""
    return [("no file (the image in another form field)",
             dict(image=good, field="picture"), 400),
            ("a grayscale image", dict(image=test_images()["gray.png"]), 422),
            ("an RGBA image", dict(image=test_images()["rgba.png"]), 422),
            ("an empty file", dict(image=b""), 400),
            ("a file that is not an image", dict(image=b"%PDF-1.4 not an image"), 400),
            ("a truncated image", dict(image=good[:len(good) // 3]), 400),
            ("an image of 400 megapixels", dict(image=huge_png()), 413),
            ("the image as the body, not a form", dict(image=good, content_type="image/jpeg"),
             415)]


def eager_class(subject: Subject, image: bytes, convert_to_rgb: bool = False
                ) -> tuple[int, list[float]]:
    import torch

    from conformance.serving.images import ImagePipeline, read_image

    tensor = ImagePipeline()(read_image(image, convert_to_rgb))
    logits = subject.state.run(subject.state.model, (tensor.to(subject.state.device),))
    first = logits[0] if isinstance(logits, (tuple, list)) else logits
    scores = first[0].detach().float().cpu()
    return int(torch.argmax(scores)), scores.tolist()


def serves_predictions(subject: Subject) -> dict:
    from conformance.layout import imagenet_classes
    from conformance.serving.client import ServedModel, session_threads
    from conformance.serving.images import load_classes

    classes = load_classes(imagenet_classes())
    served = run_or_fail(subject, "serves_predictions", "starting the server with /predict",
                         lambda: ServedModel(subject.artifact.file, classes=imagenet_classes(),
                                             threads=session_threads()))
    answers = {}
    for name in ANSWERED:
        answers[name] = _predicted(subject, served, name, test_images()[name], classes)
    for what, request, status in bad_uploads(test_images()["photo.jpg"]):
        _refused(subject, served, what, request, status)
    return {"predictions": answers}


def _predicted(subject, served, name: str, image: bytes, classes: list[str]) -> int:
    expected, scores = eager_class(subject, image, served.convert_to_rgb)
    status, answer = served.predict(image, name)
    if status != 200:
        fail(subject, "serves_predictions", f"/predict answered {status} to {name}",
             f"answer: {answer}")
    got = answer.get("class_id")
    tied = got is not None and _within_float_noise(scores, got, expected)
    if got != expected and not tied:
        fail(subject, "serves_predictions", f"/predict gave class {got} for {name}, eager "
             f"gives {expected}", f"answer: {answer}; eager's scores of the two: "
             f"{scores[expected]:.6g} and {scores[got] if got is not None else 'none'}")
    if answer.get("class_name") != classes[got]:
        fail(subject, "serves_predictions", f"/predict named class {got} "
             f"{answer.get('class_name')!r}, the class index says {classes[got]!r}")
    return got


def _within_float_noise(scores: list[float], got: int, expected: int) -> bool:
    """Whether eager's scores of the two classes differ by no more than matches_eager's
    float32 tolerance allows (atol 1e-5 of the largest score, rtol 1e-4): then either is
    eager's answer within the noise of another runtime's arithmetic."""
    scale = max(abs(score) for score in scores) or 1.0
    return abs(scores[got] - scores[expected]) <= 1e-5 * scale + 1e-4 * abs(scores[expected])


def _refused(subject, served, what: str, request: dict, status: int) -> None:
    got, answer = served.predict(**request)
    if got != status or not answer.get("error"):
        fail(subject, "serves_predictions", f"/predict answered {got} to {what}, expected "
             f"{status} with a JSON error", f"answer: {answer}")
    status_after, _ = served.predict(test_images()["photo.jpg"], "photo.jpg")
    if status_after != 200:
        fail(subject, "serves_predictions", f"after {what}, the server no longer answers "
             f"a good image (status {status_after})")
