"""The tutorial's image endpoint, done properly: `POST /predict` takes an uploaded image
(the form field `file`), runs the ImageNet pipeline (resize to 256, centre crop to 224,
normalize), and answers the top class as JSON, `{"class_id": 281, "class_name": "tabby"}`;
`GET /` is a page with an upload form that shows the answer.

What the tutorial leaves undone is answered here: a request without a file, an empty
file, a file that is not an image, a truncated image or one too large gets a 4xx with a
JSON error that says so, and the server goes on serving. A colour image in another mode
(a palette, CMYK) is converted to RGB; a grayscale image, or one with transparency, is
refused with a 422 that says how to send it (the tutorial's server crashes on both), unless
the server is started with `--convert-to-rgb`: then the gray is copied to each channel and
the alpha dropped, as torchvision's dataset loaders do, and the user owns the choice."""
from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

# The largest upload and image the endpoint takes: a 20 MiB body, 40 megapixels.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000


class ImageError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ImagePipeline:
    """torchvision's ImageNet inference transform (the tutorial's): the same in the
    server and in the check that computes eager's answer."""
    resize: int = 256
    crop: int = 224
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)

    def __call__(self, image):
        """The image as a normalized batch of one, [1, 3, crop, crop]."""
        from torchvision import transforms

        steps = transforms.Compose([transforms.Resize(self.resize),
                                    transforms.CenterCrop(self.crop), transforms.ToTensor(),
                                    transforms.Normalize(self.mean, self.std)])
        return steps(image).unsqueeze(0)


def read_image(data: bytes, convert_to_rgb: bool = False):
    """The uploaded bytes as an RGB image; ImageError with the status and reason."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(400, "the file is empty")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # beyond twice this PIL refuses; here: beyond it
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(413, f"the image is {image.width}x{image.height}, more than "
                                  f"{MAX_PIXELS:,} pixels")
        image.load()
    except UnidentifiedImageError:
        raise ImageError(400, "the file is not an image that PIL can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(413, f"the image is too large: {exc}") from None
    except OSError as exc:  # truncated or corrupt data
        raise ImageError(400, f"the image could not be decoded: {exc}") from None
    return as_rgb(image, convert_to_rgb)


def as_rgb(image, convert_to_rgb: bool = False):
    """The image in RGB when that is what it shows: a colour image without transparency
    is converted; a grayscale one or one with transparency only with `convert_to_rgb`
    (the model would see three copies of the gray, or the colour hidden under the alpha:
    the sender's choice to make, not the server's)."""
    if image.mode == "RGB":
        return image
    bands = image.getbands()
    transparent = ("transparency" in image.info or
                   any(band in bands for band in "Aa") and not _opaque(image))
    gray = len([band for band in bands if band not in "Aa"]) == 1 and image.mode != "P"
    if convert_to_rgb or not (transparent or gray):
        return image.convert("RGB")
    if transparent:
        raise ImageError(422, f"the image has transparency (mode {image.mode}); the model "
                              f"takes RGB, and dropping the alpha leaves whatever colour "
                              f"the transparent pixels hold: flatten it onto a background "
                              f"first, or serve with --convert-to-rgb to drop the alpha")
    raise ImageError(422, f"the image is grayscale (mode {image.mode}); the model takes "
                          f"colour (RGB) images: send an RGB one, or serve with "
                          f"--convert-to-rgb to copy the gray to each channel")


def _opaque(image) -> bool:
    """Whether an alpha channel is 255 everywhere (most screenshots and exported PNGs):
    dropping it then hides nothing."""
    band = "A" if "A" in image.getbands() else "a"
    return image.getchannel(band).getextrema() == (255, 255)


def load_classes(file: Path) -> list[str]:
    """Class names by index from a JSON object {"0": "tench", ...} (or the tutorial's
    {"0": ["n01440764", "tench"], ...})."""
    table = json.loads(Path(file).read_text())
    names = [table[str(i)] for i in range(len(table))]
    return [name[-1] if isinstance(name, list) else name for name in names]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Image classifier</title></head>
<body>
<h1>Image classifier</h1>
<form id="upload"><input type="file" name="file" id="file" accept="image/*">
<button type="submit">Predict</button></form>
<p id="answer" role="status"></p>
<script>
// The answer, or what went wrong; data-state says when it is there (for a browser test).
document.getElementById("upload").addEventListener("submit", async (event) => {
  event.preventDefault();
  const answer = document.getElementById("answer");
  answer.dataset.state = "waiting";
  answer.textContent = "predicting...";
  try {
    const response = await fetch("predict", {method: "POST", body: new FormData(event.target)});
    const body = await response.json().catch(
      () => ({error: `the server answered ${response.status} without a JSON error`}));
    answer.textContent = response.ok ? `${body.class_name} (class ${body.class_id})`
                                     : `error: ${body.error}`;
  } catch (failure) {
    answer.textContent = `error: ${failure}`;
  }
  answer.dataset.state = "done";
});
</script></body></html>
"""


def add_predict_routes(app, model, classes: list[str], pipeline: ImagePipeline,
                       convert_to_rgb: bool = False) -> None:
    """`/predict` and the page, on an app whose `model` takes the pipeline's tensor."""
    from flask import jsonify, request

    app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES

    @app.errorhandler(413)
    def too_large(_):
        return jsonify(error=f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MiB"), 413

    @app.get("/")
    def page():
        return PAGE

    @app.post("/predict")
    def predict():
        if request.mimetype != "multipart/form-data":
            return jsonify(error=f"send the image as multipart/form-data in the field "
                                 f"'file', not {request.mimetype or 'no type'}"), 415
        upload = request.files.get("file")
        if upload is None:
            return jsonify(error="no file: send the image in the form field 'file'"), 400
        try:
            tensor = pipeline(read_image(upload.read(), convert_to_rgb))
        except ImageError as exc:
            return jsonify(error=str(exc)), exc.status
        try:
            (logits, *_) = model([tensor.numpy()], {})
        except Exception as exc:
            from conformance.serving.app import model_error

            return jsonify(error=model_error(exc)), 422
        class_id = int(logits[0].argmax())
        return jsonify(class_id=class_id, class_name=classes[class_id])
