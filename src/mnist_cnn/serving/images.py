"""Untrusted image bytes -> a PIL image, decoding no more than the limits allow.

A request's images arrive as :data:`Source` items. :func:`decode_bounded` reads an image's size
from its header before decoding it, refuses what is over the pixel limits, and decodes a large image
at reduced size in greyscale (:func:`decode_reduced`). :func:`untrusted` runs any step on client
data so that an unexpected failure is the image's fault (422), never a 500. :func:`png_data_url`
turns the 28x28 the model saw back into the preview the page shows.
"""

from __future__ import annotations

import base64
import io
import logging
import math
from typing import Any

import numpy as np

from mnist_cnn.errors import ImageError, InvalidImage, MnistCnnError, PayloadTooLarge, first_line
from mnist_cnn.serving.limits import Limits

log = logging.getLogger("mnist_cnn.server")

# A request's images before decoding: encoded bytes, a uint8 [28, 28] pixel array, or the error
# that stands for an item already refused (a batch answers it in its slot).
Source = bytes | np.ndarray | MnistCnnError


def decode_bounded(data: bytes, limits: Limits, budget: int | None = None) -> tuple[Any, int]:
    """Encoded image bytes -> (PIL image, width x height of the file), decoding at most what the limits allow.

    * empty, unreadable or over ``max_pixels`` (from the header, before decoding): the library's
      :func:`~mnist_cnn.inference.preprocessing.decode_image` error (422);
    * more than ``budget`` pixels (what is left of the request's ``max_request_pixels``): 413;
    * up to ``max_decoded_pixels``: exactly the library's ``decode_image`` (colour kept, so the
      answer equals ``mnist-cnn predict``'s);
    * larger: decoded at reduced size in greyscale (:func:`decode_reduced`), so that preprocessing
      works on at most ``max_decoded_pixels`` one-byte pixels whatever was uploaded."""
    from PIL import Image

    from mnist_cnn.inference.preprocessing import decode_image

    if not data:
        raise InvalidImage("the image is empty (0 bytes); send a PNG or JPEG")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Exception:  # noqa: BLE001 - decode_image words every kind of bad header; let it
        img, w, h = None, 0, 0
    if img is None or w < 1 or h < 1 or w * h > limits.max_pixels:
        decoded = untrusted(decode_image, data, max_pixels=limits.max_pixels)  # raises its message
        return decoded, decoded.width * decoded.height
    if budget is not None and w * h > budget:
        raise PayloadTooLarge(
            f"the images of this request have more than {limits.max_request_pixels:,} pixels in total "
            "(--max-request-pixels); send fewer or smaller images"
        )
    if w * h <= limits.max_decoded_pixels:
        return untrusted(decode_image, data, max_pixels=limits.max_pixels), w * h
    return untrusted(decode_reduced, img, limits.max_decoded_pixels), w * h


# EXIF orientation -> the transpose that makes the image upright (as PIL.ImageOps.exif_transpose)
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270"}
_UPRIGHT |= {7: "TRANSVERSE", 8: "ROTATE_90"}


def decode_reduced(img: Any, max_pixels: int) -> Any:
    """An opened (not yet decoded) PIL image -> upright greyscale ``L`` image of at most ``max_pixels``.

    JPEG is decoded at 1/2, 1/4 or 1/8 scale and in greyscale straight from the file (``draft``);
    other formats are decoded whole (their size is capped by ``max_pixels`` of the request limits),
    then box-reduced by an integer factor (``reduce``) before anything else is done with them.
    ``info[FULL_SIZE]`` holds the upright size at full resolution, as the library's own reduced
    decode does, so that boxes found in the image (``/api/read``) are given in the file's pixels."""
    from PIL import Image

    from mnist_cnn.inference.preprocessing import standard_mode
    from mnist_cnn.inference.preprocessing.decode import FULL_SIZE

    w, h = img.size
    f = math.ceil(math.sqrt(w * h / max_pixels))
    try:
        orientation = int(img.getexif().get(0x0112) or 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block should not lose the image
        orientation = 1
    try:
        img.seek(0)  # animated GIF/PNG/WebP: the first frame
        img.draft("L", (max(1, w // f), max(1, h // f)))  # JPEG only; a no-op for other formats
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated data is an OSError, broken streams anything
        raise ImageError(
            f"the image data is truncated or corrupt ({first_line(exc)[:120]}); re-save or re-send it"
        ) from None
    img = _reducible(img)
    f = math.ceil(math.sqrt(img.width * img.height / max_pixels))
    if f > 1:
        img = img.reduce(f)
    img = standard_mode(img).convert("L")  # transparency composited as the library does, then grey
    if orientation in _UPRIGHT:
        img = img.transpose(getattr(Image.Transpose, _UPRIGHT[orientation]))
    out = Image.fromarray(np.asarray(img), mode="L")  # no metadata left that could rotate it again
    out.info[FULL_SIZE] = (h, w) if orientation in (5, 6, 7, 8) else (w, h)  # boxes found in it map back to the file's
    return out


def _reducible(img: Any) -> Any:
    """A mode ``Image.reduce`` supports, with the same meaning (palette indices cannot be averaged)."""
    if img.mode in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F"):
        return img
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img.convert("RGBA" if "A" in img.getbands() else "RGB")


def untrusted(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a decode/preprocess step on client data: an unexpected failure is the image's fault (422),
    logged with its traceback, never a 500. Our own errors pass through with their status."""
    try:
        return fn(*args, **kwargs)
    except MnistCnnError:
        raise
    except MemoryError:
        raise InvalidImage("the image is too large to process; send a smaller one") from None
    except Exception as exc:
        log.warning("image rejected by %s", getattr(fn, "__name__", fn), exc_info=True)
        raise InvalidImage(
            f"cannot process this image ({type(exc).__name__}); send a PNG or JPEG of one digit"
        ) from None


def png_data_url(image: np.ndarray) -> str:
    """uint8 ``[28, 28]`` -> ``data:image/png;base64,...`` for the page's preprocessed view."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
