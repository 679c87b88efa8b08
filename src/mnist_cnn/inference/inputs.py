"""What users hand a predictor, turned into the uint8 ``[N, 28, 28]`` batch models take.

``as_batch`` accepts, for the public ``Predictor.predict``:

* a NumPy array: ``(28, 28)`` or ``(N, 28, 28)`` is taken as MNIST-format already (bright digit on
  black, like ``x_test`` of Keras's ``mnist.load_data()``), uint8 0..255 or float 0..1; any other
  ``(H, W)``, ``(H, W, C)``, ``(N, H, W)`` or ``(N, H, W, C)`` (C = 1, 3 or 4) is a photo/scan/drawing and
  goes through :func:`~mnist_cnn.inference.preprocessing.preprocess`;
* a PIL image, a file path (str or ``os.PathLike``), encoded image bytes or an open binary file
  (anything with ``read()``: ``open(path, "rb")``, ``io.BytesIO``, FastAPI's ``UploadFile.file``):
  always preprocessed;
* a list or tuple mixing any of these.

``preprocess=True`` preprocesses 28x28 arrays too (e.g. a 28x28 photo of dark ink on paper);
``preprocess=False`` takes every image as MNIST-format (it must then be 28x28).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np

from mnist_cnn.errors import ImageError

Preprocess = bool | Literal["auto"]
_CHANNELS = (1, 3, 4)


def as_batch(images: Any, preprocess: Preprocess = "auto") -> np.ndarray:
    """uint8 ``[N, 28, 28]`` MNIST-like images from any of the inputs in the module doc."""
    return as_batch_with_contrast(images, preprocess)[0]


def as_batch_with_contrast(images: Any, preprocess: Preprocess = "auto") -> tuple[np.ndarray, np.ndarray]:
    """:func:`as_batch` and, per image, the ink signal preprocessing measured [N] (NaN for an
    MNIST-format array taken as it is): what the calibration's contrast power needs."""
    items = split_items(images)
    if not items:
        return np.zeros((0, 28, 28), np.uint8), np.zeros(0)
    pairs = [_mnist_and_contrast(item, preprocess) for item in items]
    return np.stack([im for im, _ in pairs]), np.array([c for _, c in pairs], dtype=np.float64)


def split_items(images: Any) -> list[Any]:
    """One entry per image: arrays are split along their batch axis, lists are taken as they are."""
    if isinstance(images, (list, tuple)):
        return [one for item in images for one in split_items(item)]
    if isinstance(images, np.ndarray):
        if images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in _CHANNELS):
            return list(images)
        if images.ndim not in (2, 3):
            raise ImageError(
                f"array of shape {list(images.shape)}: expected (28, 28), (N, 28, 28), (H, W[, C]) or (N, H, W[, C])"
            )
    return [images]


def _mnist_and_contrast(image: Any, preprocess: Preprocess) -> tuple[np.ndarray, float]:
    """One image -> (uint8 ``[28, 28]``, ink signal): MNIST-format arrays as they are (NaN),
    everything else preprocessed."""
    from mnist_cnn.inference.preprocessing import preprocess as run_preprocess

    if isinstance(image, np.ndarray):
        array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
        if preprocess is False or (preprocess == "auto" and array.shape == (28, 28)):
            return mnist_pixels(array), float("nan")
        image = array
    elif preprocess is False:
        raise ImageError(f"preprocess=False needs 28x28 arrays, got a {type(image).__name__}")
    elif _is_binary_file(image):
        image = _read_file(image)
    if not isinstance(image, (np.ndarray, bytes, bytearray, memoryview, str, os.PathLike)) and not hasattr(
        image, "getpixel"
    ):  # a PIL image
        raise ImageError(
            f"cannot read a {type(image).__name__} as an image; pass an array, a PIL image, a file path, "
            "image bytes or a file opened in binary mode"
        )
    result = run_preprocess(image)
    return result.image, result.signal


def _is_binary_file(obj: Any) -> bool:
    """A file-like object (``read()``), not a PIL image (which has no ``read``) nor a path."""
    return callable(getattr(obj, "read", None)) and not isinstance(obj, (str, bytes, os.PathLike))


def _read_file(obj: Any) -> bytes:
    """The bytes of an open file, from where it stands (an upload's stream: read once, not rewound)."""
    data = obj.read()
    if isinstance(data, str):
        raise ImageError(f"{_file_name(obj)}: opened in text mode; open image files with open(path, 'rb')")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError(f"{_file_name(obj)}: read() gave a {type(data).__name__}, expected bytes")
    if not data:
        raise ImageError(f"{_file_name(obj)}: the file is empty (or already read to its end; seek(0) first)")
    return bytes(data)


def _file_name(obj: Any) -> str:
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else type(obj).__name__


def mnist_pixels(array: np.ndarray) -> np.ndarray:
    """A 28x28 MNIST-format array as uint8: uint8 as it is, floats in 0..1 scaled by 255, other
    numbers clipped to 0..255."""
    if array.shape != (28, 28):
        raise ImageError(
            f"an MNIST-format image must be 28x28, got {list(array.shape)}; pass preprocess=True (or 'auto') for photos"
        )
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ImageError(f"image of dtype {array.dtype}: expected numbers (uint8 0..255 or float 0..1)")
    a = np.nan_to_num(array.astype(np.float64), nan=0.0)
    if np.issubdtype(array.dtype, np.floating) and a.max(initial=0.0) <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
