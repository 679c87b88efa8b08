"""Long fuzz run: the properties defined here (tests/test_fuzz.py runs them with a few derandomised
examples) with many more (random, not derandomised) hypothesis examples. Each target either holds
for every example or reports its shrunk failing input. Prints a Markdown table (examples run,
failures, seconds) and optionally writes JSON.

    python benchmarks/fuzz.py --examples 20000 --image-examples 3000 --out benchmarks/results/fuzz.json

Property per target: ``read_idx`` returns an array that re-encodes to exactly the input, or raises
DataError (one line, naming the file); ``preprocess`` returns a 28x28 uint8 digit or raises
ImageError (one line). Any other exception, or a malformed result, is a failure.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import io
import shutil
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_json  # noqa: E402
from mnist_cnn.data.idx import IDX_DTYPES, read_idx
from mnist_cnn.errors import DataError, ImageError

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


def gzip_maybe_damaged(payload: bytes, cut: int | None) -> bytes:
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
# zero-size images: test_zero_size_arrays_are_an_image_error and the fuzzer findings in tests/test_fuzz.py
_SHAPES = st.one_of(
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=48),
    st.tuples(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 3, 4, 5])),
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6),
)


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
    img = (
        Image.frombytes("L", (w, h), pixels).convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.frombuffer(pixels, np.uint8).reshape(h, w).astype(np.uint16) * 257)
    )
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


# --------------------------------------------------------------------------- the long run


def _targets() -> dict[str, tuple[st.SearchStrategy, Callable[[Any], None], str]]:
    """name -> (strategy, check, which example budget: idx or image)."""
    any_shape = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=2, max_dims=3, min_side=0, max_side=8))
    return {
        "read_idx: raw bytes (arbitrary + IDX-like)": (idx_inputs(), lambda c: check_read_idx(c[0], "raw.idx"), "idx"),
        "read_idx: gzipped, maybe truncated": (
            st.tuples(idx_inputs(), st.one_of(st.none(), st.integers(0, 10_000))),
            lambda c: check_read_idx(gzip_maybe_damaged(c[0][0], c[1]), "file.gz"),
            "idx",
        ),
        "read_idx: arbitrary bytes named .gz": (st.binary(max_size=2000), lambda b: check_read_idx(b, "n.gz"), "idx"),
        "preprocess: arbitrary arrays": (image_arrays(), check_preprocess, "image"),
        "preprocess: arrays incl. zero-size": (any_shape, check_preprocess, "image"),
        "preprocess: encoded images, maybe damaged": (image_bytes(), check_preprocess, "image"),
    }


def run_target(strategy: st.SearchStrategy, check: Callable[[Any], None], examples: int) -> dict[str, Any]:
    count = {"n": 0}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(strategy)
    def prop(case: Any) -> None:
        count["n"] += 1
        count["last"] = case  # after shrinking, hypothesis replays the minimal failing example last
        check(case)

    t = time.perf_counter()
    failure = None
    try:
        prop()
    except Exception as exc:  # noqa: BLE001 - a failing property: record it, go on with the next target
        tb = traceback.extract_tb(exc.__traceback__)[-1]
        failure = (
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''} "
            f"(at {Path(tb.filename).name}:{tb.lineno})"
        )
    out = {"examples": count["n"], "failure": failure, "seconds": round(time.perf_counter() - t, 1)}
    if failure:
        with np.printoptions(threshold=2000, linewidth=200):
            out["example"] = repr(count.get("last"))[:4000]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=20000, help="examples per read_idx target")
    ap.add_argument("--image-examples", type=int, default=3000, help="examples per preprocess target")
    ap.add_argument("--only", help="run only targets whose name contains this")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    import warnings

    warnings.simplefilter("ignore")  # numpy/PIL warnings on garbage input are expected, not failures
    results = {}
    print("| target | examples | failures | seconds |\n| --- | ---: | --- | ---: |", flush=True)
    for name, (strategy, check, budget) in _targets().items():
        if args.only and args.only not in name:
            continue
        r = run_target(strategy, check, args.examples if budget == "idx" else args.image_examples)
        results[name] = r
        print(f"| {name} | {r['examples']:,} | {r['failure'] or '0'} | {r['seconds']} |", flush=True)
        if r["failure"]:
            print(f"<!-- minimal failing example: {r['example']} -->", flush=True)
    write_json(args.out, {"command": " ".join(sys.argv), "results": results})


if __name__ == "__main__":
    main()
