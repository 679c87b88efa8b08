"""Property-based fuzzing (hypothesis): the IDX reader and image preprocessing on arbitrary input
either return a well-formed result or raise the project's own error, nothing else.

The strategies and the properties live in ``benchmarks/fuzz.py``, which runs them with many more
examples; here they run with few. Examples are derandomised (the same on every run, as CI should
be); the long run in benchmarks/fuzz.py explores at random.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from benchmarks.fuzz import (
    check_preprocess,
    check_read_idx,
    gzip_maybe_damaged,
    idx_encode,
    idx_inputs,
    image_arrays,
    image_bytes,
)
from mnist_cnn.data.idx import IDX_DTYPES
from mnist_cnn.errors import ImageError

FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --------------------------------------------------------------------------- IDX


@FAST
@given(idx_inputs())
def test_read_idx_on_arbitrary_raw_bytes(case):
    blob, _ = case
    check_read_idx(blob, "raw.idx")


@FAST
@given(idx_inputs(), st.one_of(st.none(), st.integers(0, 10_000)))
def test_read_idx_on_arbitrary_gzipped_bytes(case, cut):
    blob, _ = case
    check_read_idx(gzip_maybe_damaged(blob, cut), "file.gz")


@FAST
@given(st.binary(max_size=600))
def test_read_idx_on_bytes_named_gz(blob):
    check_read_idx(blob, "named.gz")


@FAST
@given(
    hnp.arrays(
        st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    st.booleans(),
)
def test_read_idx_round_trips_every_valid_file(arr, gz):
    code = next(k for k, v in IDX_DTYPES.items() if v.newbyteorder("=") == arr.dtype)
    raw = idx_encode(arr, code)
    back = check_read_idx(gzip.compress(raw) if gz else raw, "valid.gz" if gz else "valid.idx")
    assert back is not None and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


# --------------------------------------------------------------------------- preprocessing


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
