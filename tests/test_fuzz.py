"""Property-based fuzzing (hypothesis): the IDX reader and image preprocessing on arbitrary input
either return a well-formed result or raise the project's own error, nothing else.

The strategies live here so that ``benchmarks/fuzz.py`` runs the same properties with many more
examples. Examples are derandomised (the same on every run, as CI should be); the long run in
benchmarks/fuzz.py explores at random.
"""

from __future__ import annotations

import atexit
import gzip
import io
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnist_cnn.data.idx import IDX_DTYPES
from mnist_cnn.data.idx import read_idx
from mnist_cnn.errors import DataError, ImageError

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_WORKDIR = Path(tempfile.mkdtemp(prefix="mnist-cnn-fuzz-"))
atexit.register(shutil.rmtree, _WORKDIR, True)

# --------------------------------------------------------------------------- IDX


def idx_encode(arr: np.ndarray, code: int) -> bytes:
    """The IDX bytes of ``arr`` (header + big-endian body), independently of the package's writer."""
    be = IDX_DTYPES[code]
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(be).tobytes()


_CODES = st.one_of(st.sampled_from(sorted(IDX_DTYPES)), st.integers(0, 255))
_DIM = st.one_of(st.integers(0, 6), st.sampled_from([2**16, 2**31, 2**32 - 1]))


@st.composite
def idx_like(draw) -> bytes:
    """Bytes that look like an IDX file: a plausible header (sometimes lying), a body of random
    length, sometimes a flipped byte; then maybe a truncation."""
    code = draw(_CODES)
    dims = draw(st.lists(_DIM, max_size=4))
    magic = draw(st.sampled_from([b"\0\0", b"\0\0", b"\0\0", b"\0\1", b"\x1f\x8b"]))
    head = magic + bytes([code, draw(st.sampled_from([len(dims), len(dims), draw(st.integers(0, 255))]))])
    head += struct.pack(f">{len(dims)}I", *dims)
    declared = int(np.prod(dims, dtype=object)) * IDX_DTYPES.get(code, np.dtype("u1")).itemsize
    n = declared if declared <= 4096 and draw(st.booleans()) else draw(st.integers(0, 300))
    blob = head + draw(st.binary(min_size=n, max_size=n))
    if blob and draw(st.booleans()):
        i = draw(st.integers(0, len(blob) - 1))
        blob = blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1 :]
    if draw(st.booleans()):
        blob = blob[: draw(st.integers(0, len(blob)))]
    return blob


def idx_inputs() -> st.SearchStrategy[tuple[bytes, bool]]:
    """(file bytes, gzip it?) from arbitrary bytes or IDX-like bytes."""
    return st.tuples(st.one_of(st.binary(max_size=600), idx_like()), st.booleans())


def _gzip_maybe_damaged(payload: bytes, cut: int | None) -> bytes:
    blob = gzip.compress(payload, mtime=0)
    return blob if cut is None else blob[: cut % (len(blob) + 1)]


def check_read_idx(blob: bytes, name: str) -> np.ndarray | None:
    """The property: ``read_idx`` returns an array that re-encodes to exactly the input (the reader
    accepts nothing beyond the declared body), or raises DataError. Anything else fails."""
    path = _WORKDIR / name
    path.write_bytes(blob)
    try:
        arr = read_idx(path)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc), str(exc)
        return None
    assert isinstance(arr, np.ndarray) and arr.dtype.isnative
    code = next(k for k, v in IDX_DTYPES.items() if v.newbyteorder("=") == arr.dtype)
    raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    assert idx_encode(arr, code) == raw
    return arr


@FAST
@given(idx_inputs())
def test_read_idx_on_arbitrary_raw_bytes(case):
    blob, _ = case
    check_read_idx(blob, "raw.idx")


@FAST
@given(idx_inputs(), st.one_of(st.none(), st.integers(0, 10_000)))
def test_read_idx_on_arbitrary_gzipped_bytes(case, cut):
    blob, _ = case
    check_read_idx(_gzip_maybe_damaged(blob, cut), "file.gz")


@FAST
@given(st.binary(max_size=600))
def test_read_idx_on_bytes_named_gz(blob):
    check_read_idx(blob, "named.gz")


@FAST
@given(hnp.arrays(st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
                  hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)),
       st.booleans())
def test_read_idx_round_trips_every_valid_file(arr, gz):
    code = next(k for k, v in IDX_DTYPES.items() if v.newbyteorder("=") == arr.dtype)
    raw = idx_encode(arr, code)
    back = check_read_idx(gzip.compress(raw) if gz else raw, "valid.gz" if gz else "valid.idx")
    assert back is not None and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


# --------------------------------------------------------------------------- preprocessing

def check_preprocess(image) -> None:
    """The property: a uint8 [28, 28] MNIST-like image, or ImageError with a one-line message."""
    from mnist_cnn.inference.preprocessing import preprocess

    try:
        res = preprocess(image)
    except ImageError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    assert isinstance(res.image, np.ndarray) and res.image.shape == (28, 28) and res.image.dtype == np.uint8
    assert res.image.max() > 0  # a digit was found: something is drawn


_ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int16, np.int64, np.float32, np.float64, np.bool_])
# zero-size images: test_zero_size_arrays_are_an_image_error and the fuzzer findings below
_SHAPES = st.one_of(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48),
                    st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4, 5])),
                    hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6))


@st.composite
def image_arrays(draw) -> np.ndarray:
    """Arbitrary arrays, half of them with a bright or dark blob drawn on a flat background."""
    arr = draw(hnp.arrays(_ARRAY_DTYPES, _SHAPES))  # floats include NaN and +-inf
    if arr.ndim in (2, 3) and arr.shape[0] > 4 and arr.shape[1] > 4 and draw(st.booleans()):
        arr = np.zeros(arr.shape, dtype=arr.dtype)
        r, c = arr.shape[0] // 4, arr.shape[1] // 4
        top = np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else 1
        arr[r : 3 * r + 1, c : c + max(1, c // 2)] = draw(st.sampled_from([1, top]))
    return arr


@st.composite
def image_bytes(draw) -> bytes:
    """Arbitrary bytes, or a real PNG/JPEG/GIF/BMP of a random small image, maybe damaged."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=400))
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "I;16", "1", "P", "CMYK"]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "GIF", "BMP", "TIFF"]))
    assume(not (fmt == "JPEG" and mode in ("RGBA", "I;16", "P")) and not (fmt == "GIF" and mode == "I;16"))
    assume(not (fmt == "BMP" and mode in ("I;16", "CMYK")) and not (fmt == "PNG" and mode == "CMYK"))
    w, h = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    from PIL import Image

    pixels = draw(st.binary(min_size=w * h, max_size=w * h))
    img = Image.frombytes("L", (w, h), pixels).convert(mode) if mode != "I;16" else \
        Image.fromarray(np.frombuffer(pixels, np.uint8).reshape(h, w).astype(np.uint16) * 257)
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):  # Pillow cannot write this mode in this format: not a test case
        assume(False)
    blob = buf.getvalue()
    if draw(st.booleans()):  # damage: truncate, or overwrite a few bytes
        if draw(st.booleans()):
            blob = blob[: draw(st.integers(0, len(blob)))]
        else:
            i = draw(st.integers(0, len(blob) - 1))
            blob = blob[:i] + draw(st.binary(min_size=1, max_size=8)) + blob[i + 8 :]
    return blob


@FAST
@given(image_arrays())
def test_preprocess_on_arbitrary_arrays(arr):
    check_preprocess(arr)


@FAST
@given(image_bytes())
def test_preprocess_on_arbitrary_bytes(blob):
    check_preprocess(blob)


# Inputs the fuzzers found that once broke the property (IndexError/ValueError from numpy on an
# empty array; an IndexError in preprocessing._tight when the mapped ink came out empty), kept as
# regression cases.
def _dark_pixels_on_ones() -> np.ndarray:
    a = np.ones((16, 36), np.uint16)
    a[0, [*range(13), 14, 15, 16]] = 0
    a[[12, 13, 13, 14], [31, 31, 32, 30]] = 0
    return a


FUZZER_FINDINGS = {
    "zero-size 0x0": np.zeros((0, 0), np.uint8),
    "zero-size 0x5": np.zeros((0, 5), np.uint8),
    "zero-size 5x0x3": np.zeros((5, 0, 3), np.uint8),
    "3x3 bool corner strokes": np.array([[0, 0, 0], [1, 0, 1], [1, 1, 1]], dtype=bool),
    # the long run of benchmarks/fuzz.py: stroke thinning left nothing for the second crop
    "2x5 faint strokes": np.array([[6, 7, 6, 0, 0], [25, 0, 0, 0, 0]], dtype=np.uint8),
    "16x36 uint16 ones with a few dark pixels": _dark_pixels_on_ones(),
}


@pytest.mark.parametrize("name", list(FUZZER_FINDINGS))
def test_preprocess_fuzzer_findings(name):
    check_preprocess(FUZZER_FINDINGS[name])


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0, 3)])
def test_zero_size_arrays_are_an_image_error(shape):
    from mnist_cnn.inference.preprocessing import preprocess

    with pytest.raises(ImageError, match="no pixels"):
        preprocess(np.zeros(shape, np.uint8))
