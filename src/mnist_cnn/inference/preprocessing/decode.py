"""Stage 1, decode: bytes, a path, a PIL image or an array -> an upright 8-bit ``L`` or ``RGB`` image.

Safe on hostile input: the pixel-count cap is checked from the header before decoding (decompression
bombs), truncated or corrupt files are refused with one line, the first frame of an animation is
taken, 16-bit and CMYK are converted, EXIF orientation is applied, and transparency is composited on a
contrasting background. A large JPEG is decoded reduced by its DCT (:func:`decode_image`'s
``min_side``), which costs a fraction of a full decode and keeps more pixels than the crop needs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mnist_cnn.errors import ImageError, first_line

MAX_FILE_BYTES = 200 * 2**20  # largest image file read: a 48 MP PNG fits; a 2 GB (sparse) file is refused unread
MAX_PIXELS = 50_000_000  # default decode cap (width*height): a 48 MP phone photo fits, a bomb does not


FULL_SIZE = "mnist_cnn.full_size"  # image.info key: (width, height) of the upright image before DCT reduction


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """Encoded image bytes -> PIL image in mode ``L`` or ``RGB`` (8 bit), upright, first frame.

    With ``min_side``, a JPEG whose longer side is at least twice that is decoded reduced by its DCT
    (1/2, 1/4 or 1/8, keeping the longer side >= ``min_side``): a 12 MP photo decodes in a third of
    the time. ``image.info[FULL_SIZE]`` then holds the upright size the file has at full resolution.

    Raises :class:`ImageError` (one line) for empty, unrecognised, truncated or corrupt files and
    for images with more than ``max_pixels`` pixels (checked from the header, before decoding)."""
    if not data:
        raise ImageError("the image is empty (0 bytes); send a PNG or JPEG of a digit")
    from PIL import UnidentifiedImageError

    # our cap is checked from the header, before any pixel is decoded; Pillow's own bomb error
    # (above ~179 MP) can only come first when max_pixels is set higher than that
    try:
        img = Image.open(io.BytesIO(bytes(data)))
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format; send a PNG, JPEG, GIF, BMP, TIFF or WebP") from None
    except Image.DecompressionBombError:
        raise ImageError(f"the image has too many pixels (limit {max_pixels:,}); send a smaller image") from None
    except Exception as exc:  # noqa: BLE001 - plugins raise SyntaxError, ValueError, struct.error ...
        raise ImageError(f"cannot read the image header ({_why(exc)}); the file is corrupt") from None
    w, h = img.size
    if w < 1 or h < 1 or w * h > max_pixels:
        raise ImageError(
            f"the image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} "
            "(decompression bomb guard); send a smaller image"
        )
    try:
        img.seek(0)  # animated GIF/PNG/WebP: the first frame
        if min_side and img.format == "JPEG" and max(w, h) >= 2 * min_side:
            f = max(w, h) / min_side
            img.draft(img.mode, (int(w / f), int(h / f)))  # the smallest DCT scale still >= that size
        img.load()
        reduced = img.size
        out = standard_mode(upright(img))
    except Exception as exc:  # noqa: BLE001 - truncated data is an OSError, broken streams anything
        raise ImageError(f"the image data is truncated or corrupt ({_why(exc)}); re-save or re-send it") from None
    if reduced != (w, h):  # EXIF orientation may have swapped the axes
        out.info[FULL_SIZE] = (h, w) if out.size != reduced else (w, h)
    return out


def _why(exc: BaseException) -> str:
    return first_line(exc)[:120]


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phone photos are stored sideways with a 'rotate' tag)."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a malformed EXIF block should not lose the image
        return img


def standard_mode(img: Image.Image) -> Image.Image:
    """Any mode -> ``L`` (grey) or ``RGB``, 8 bits; transparency composited on a contrasting colour."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_alpha(img.convert("RGBA"))
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float grey -> uint8: 16-bit scales by 1/257, float 0..1 by 255."""
    a = a.astype(np.float64)
    top = float(np.nanmax(a)) if a.size else 0.0
    if top > 255:
        a = a / 257.0  # 16-bit range
    elif 0 < top <= 1.0:
        a = a * 255.0  # float 0..1
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    """Composite on white, unless the visible pixels are light (white strokes on a transparent
    canvas would vanish on white): then on black. Fully opaque images are just dropped to RGB."""
    a = np.asarray(rgba)
    alpha = a[..., 3]
    if alpha.min() == 255:
        return rgba.convert("RGB")
    visible = alpha > 127
    light = visible.any() and float(a[..., :3][visible].mean()) > 127
    bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def load_image(image: Any, max_pixels: int = MAX_PIXELS, min_side: int | None = None) -> Image.Image:
    """A PIL image, encoded bytes, a file path or a uint8 array -> PIL image in ``L``/``RGB``
    (``min_side``: see :func:`decode_image`)."""
    if isinstance(image, Image.Image):
        w, h = image.size
        if w * h == 0:
            raise ImageError(f"the image is {w}x{h} pixels: nothing to read; send an image of a digit")
        if w * h > max_pixels:
            raise ImageError(f"the image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
        return standard_mode(upright(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), max_pixels, min_side)
    if isinstance(image, (str, os.PathLike)):
        return decode_image(read_image_file(image), max_pixels, min_side)
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ImageError(f"array of shape {image.shape} has no pixels; pass an image of a digit")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return load_image(Image.fromarray(_to_uint8(image) if image.dtype != np.uint8 else image), max_pixels)
        raise ImageError(f"array of shape {image.shape}: expected [H, W] grey or [H, W, 3|4] colour")
    raise ImageError(f"cannot preprocess a {type(image).__name__}; pass a PIL image, bytes, a path or an array")


def read_image_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, refusing one larger than ``max_bytes`` before reading it."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise ImageError(
                    f"{p}: the file is {size / 2**20:,.0f} MiB; image files over "
                    f"{max_bytes / 2**20:,.0f} MiB are refused (is it really a photo?)"
                )
            return fh.read(max_bytes)
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a folder, expected an image file") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- analysis (find the ink)
