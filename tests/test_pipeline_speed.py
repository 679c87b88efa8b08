"""The image pipeline's fast paths give the same answers: the parameters object, reduced JPEG decoding,
the line search's shortcuts, and folders preprocessed in a pool of processes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_cnn.errors import ImageError
from mnist_cnn.inference.preprocessing import DEFAULT, decode_image, preprocess
from mnist_cnn.inference.preprocessing.decode import FULL_SIZE
from mnist_cnn.inference.preprocessing.lines import _runs, _thin_line_possible, horizontal_lines
from tests.helpers import encode


def _page(w: int, h: int, lines: bool = True) -> Image.Image:
    """A dark 7 in the middle of a light page, optionally ruled."""
    img = Image.new("L", (w, h), 235)
    d = ImageDraw.Draw(img)
    s = h / 100
    if lines:
        for y in np.arange(6 * s, h, 8 * s):
            d.line([(0, y), (w, y)], fill=150, width=max(1, round(0.3 * s)))
    x0, y0 = w / 2 - 10 * s, h / 2 - 15 * s
    d.line([(x0, y0), (x0 + 20 * s, y0), (x0 + 8 * s, y0 + 30 * s)], fill=20, width=max(2, round(2.5 * s)))
    return img


def test_params_are_honoured():
    """A different parameters object changes what is decided: a digit 100 grey levels from its paper
    is found by default and refused when 120 levels are demanded."""
    data = encode(Image.eval(_page(200, 200, lines=False), lambda v: 135 if v < 100 else v))
    assert preprocess(data).contrast > 60
    with pytest.raises(ImageError, match="no digit found"):
        preprocess(data, params=dataclasses.replace(DEFAULT, min_contrast=120.0))


def test_a_large_jpeg_is_decoded_reduced_and_reported_in_its_own_pixels():
    img = _page(3400, 2400).convert("RGB")
    data = encode(img, "JPEG", quality=90)
    reduced = decode_image(data, min_side=1000)
    assert reduced.size == (1700, 1200)  # 1/2: 1/4 would be under 1,000 px
    assert reduced.info[FULL_SIZE] == (3400, 2400)
    assert decode_image(data).size == (3400, 2400)  # without min_side: full size, as before
    small, full = (
        preprocess(data, params=dataclasses.replace(DEFAULT, jpeg_min_side=1000)),
        preprocess(data, params=dataclasses.replace(DEFAULT, jpeg_min_side=10**6)),
    )
    assert small.size == full.size == (3400, 2400)
    assert np.allclose(small.bbox, full.bbox, atol=12)  # the same box, in the file's pixels
    assert np.abs(small.image.astype(int) - full.image).mean() < 8


def test_a_rotated_large_jpeg_reports_its_upright_size():
    img = _page(3400, 2400).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 270 to view
    data = encode(img, "JPEG", quality=90, exif=exif)
    out = decode_image(data, min_side=1000)
    assert out.size == (1200, 1700) and out.info[FULL_SIZE] == (2400, 3400)


def _runs_reference(x: np.ndarray, w: int, min_len: float, gap: int = 4) -> np.ndarray:
    """The scipy formulation the cumulative-sum version replaces."""
    from scipy import ndimage as ndi

    occ = np.zeros(w, bool)
    occ[x] = True
    labels, k = ndi.label(ndi.binary_closing(occ, np.ones(2 * gap + 1, bool), border_value=0) | occ)
    long = 1 + np.flatnonzero(np.bincount(labels.ravel(), minlength=k + 1)[1:] >= min_len)
    return np.isin(labels, long)


def test_runs_equal_the_morphological_definition():
    rng = np.random.default_rng(0)
    for _ in range(3000):
        w = int(rng.integers(1, 70))
        x = rng.integers(0, w, int(rng.integers(0, w + 1)))
        min_len = float(rng.uniform(0, 30))
        assert np.array_equal(_runs(x, w, min_len), _runs_reference(x, w, min_len)), (x, w, min_len)


def test_the_line_search_is_skipped_only_without_thin_ink():
    ruled = np.zeros((200, 300), bool)
    ruled[50:53, :] = ruled[120:122, 10:290] = True  # two thin ruled lines
    bold = np.zeros((200, 300), bool)
    bold[40:60, 30:270] = True  # a bold bar (a scan's stroke): thicker than any line
    rule = DEFAULT.paper_line
    assert _thin_line_possible(ruled, 120, rule)
    assert horizontal_lines(ruled, 120, rule).sum() == ruled.sum()
    assert not _thin_line_possible(bold, 120, rule)
    assert not horizontal_lines(bold, 120, rule).any()


def _folder(tmp_path: Path, n: int) -> list[Path]:
    files = []
    for i in range(n):
        img = Image.new("L", (60, 60), 0)
        ImageDraw.Draw(img).line([(20 + i % 7, 10), (30, 50)], fill=255, width=5)
        files.append(tmp_path / f"{i:03d}.png")
        img.save(files[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    return files[:5] + [bad] + files[5:]


def test_a_pool_of_processes_prepares_the_same_files_in_order(tmp_path, monkeypatch):
    from mnist_cnn.inference import batch

    files = _folder(tmp_path, 12)
    one = batch.prepare_files(files, workers=1)
    monkeypatch.setattr(batch, "POOL_MIN_FILES", 2)
    seen = []
    two = batch.prepare_files(files, workers=2, progress=seen.append)
    assert len(two) == len(one) == len(files) and sum(seen) == len(files)
    for a, b in zip(one, two):
        if isinstance(a, dict):
            assert a == b and "error" in a
        else:
            assert a[0] == b[0] and np.array_equal(a[1][0].image, b[1][0].image)
