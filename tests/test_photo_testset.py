"""The photo benchmark's generator (benchmarks/photo_testset.py): seeded, and every page condition
really draws what it names. Tiny digits keep it fast; no model, no MNIST files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import photo_testset as pt
from tests.conftest import synthetic_digits


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    x, _ = synthetic_digits(8, seed=5)
    return x


def _render(digit: np.ndarray, cond: str, seed: int, pool: np.ndarray) -> bytes:
    return pt.render(digit, cond, np.random.default_rng([seed, pt.CONDITIONS.index(cond)]), pool)


def _grey(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("L"), dtype=np.float32)


@pytest.mark.parametrize("cond", pt.PAGE_CONDITIONS)
def test_rendering_is_seeded(cond: str, digits: np.ndarray) -> None:
    a = _render(digits[0], cond, 1, digits)
    assert a == _render(digits[0], cond, 1, digits)
    assert a != _render(digits[0], cond, 2, digits)


@pytest.mark.parametrize(
    ("cond", "key"),
    [
        ("ruled", "paper"),
        ("grid", "paper"),
        ("form_box", "paper"),
        ("shadow", "shadow"),
        ("page_edge", "edge"),
        ("perspective", "tilt"),
        ("ballpoint", "pen"),
        ("marker", "pen"),
        ("stray_marks", "stray"),
        ("small_jpeg", "small"),
    ],
)
def test_each_condition_changes_its_own_option(cond: str, key: str) -> None:
    rng = np.random.default_rng(0)
    plain = pt.page_options("plain", np.random.default_rng(0))
    opts = pt.page_options(cond, rng)
    assert opts[key] != plain[key]
    changed = {k for k in opts if opts[k] != plain[k]} - {"height", "canvas", "jpeg"}
    assert changed == {key} or (cond == "small_jpeg" and changed == {"small"})


def test_notebook_all_mixes_the_conditions() -> None:
    rng = np.random.default_rng(0)
    drawn = [pt.page_options("notebook_all", rng) for _ in range(60)]
    assert {o["paper"] for o in drawn} == {"plain", "ruled", "grid", "form_box"}
    assert {o["pen"] for o in drawn} == {"normal", "ballpoint", "marker"}
    for key in ("shadow", "edge", "stray"):
        assert 0 < sum(o[key] for o in drawn) < 60
    assert 0 < sum(o["tilt"] > 0 for o in drawn) < 60 and 0 < sum(o["small"] > 0 for o in drawn) < 60


def test_the_lines_and_frames_are_drawn(digits: np.ndarray) -> None:
    shape, height = (200, 240), 80.0
    rng = np.random.default_rng(0)
    (lines, _), *_ = pt.ruled(shape, height, rng, grid=False)
    rows = (lines > 0.5).mean(axis=1)
    assert (rows > 0.95).sum() >= 2  # whole rows: lines across the page
    (grid, _), *_ = pt.ruled(shape, height, rng, grid=True)
    assert ((grid > 0.5).mean(axis=0) > 0.95).sum() >= 2  # and whole columns
    (box, _), *_ = pt.form_box(shape, (80, 60, 140, 140), height, rng)
    assert box.sum() > 2 * (60 + 80)  # a closed outline around the ink box
    marks = pt.stray_marks(shape, (80, 60, 140, 140), height, np.random.default_rng(3), digits, 8.0)
    assert marks.max() > 0.5 and marks[60:141, 80:141].max() < 0.5  # marks, but not on the digit


def test_pen_width_grows_and_shrinks_the_strokes(digits: np.ndarray) -> None:
    alpha = pt.upscale(digits[0], 100)
    ink = (alpha >= 0.5).sum()
    assert pt.pen_width(alpha, 4.0).sum() > 1.3 * ink
    assert pt.pen_width(alpha, -2.0).sum() < 0.9 * ink
    thin = pt.ballpoint(alpha, 2.0)
    assert 0 < thin.sum() < 0.5 * ink


def test_perspective_keeps_the_page_filling_the_photo() -> None:
    rng = np.random.default_rng(0)
    img = np.full((120, 160, 3), 200.0, np.float32)
    warped = pt.warp(img, pt.homography(160, 120, 35.0, rng), np.zeros(3))
    assert (warped > 150).mean() > 0.97  # no fill (0) shows: zoomed until the page covers it


def test_conditions_differ_from_plain(digits: np.ndarray) -> None:
    plain = _grey(_render(digits[1], "plain", 4, digits))
    for cond in pt.PAGE_CONDITIONS:
        img = _grey(_render(digits[1], cond, 4, digits))
        assert img.shape != plain.shape or np.abs(img - plain).mean() > 1.0, cond


def test_ece() -> None:
    labels = np.array([0, 1, 1, 0])
    sure = np.eye(10)[labels]
    assert pt.ece(sure, labels) == pytest.approx(0.0, abs=1e-9)
    half = np.full((4, 10), 0.0)
    half[:, 0] = 0.9  # 90% sure of "0", right half of the time
    half[:, 1] = 0.1
    assert pt.ece(half, labels) == pytest.approx(0.4, abs=1e-6)


def test_recording_a_pages_options_does_not_change_it(digits: np.ndarray) -> None:
    record: list[dict] = []
    rng = np.random.default_rng([1, pt.CONDITIONS.index("notebook_all")])
    with_record = [pt.render(d, "notebook_all", rng, digits, record) for d in digits[:3]]
    rng = np.random.default_rng([1, pt.CONDITIONS.index("notebook_all")])
    assert with_record == [pt.render(d, "notebook_all", rng, digits) for d in digits[:3]]
    assert len(record) == 3 and {"paper", "pen", "shadow", "edge", "tilt", "stray", "small"} <= set(record[0])


def test_factors_split_the_mixed_conditions_accuracy() -> None:
    base = {"paper": "plain", "pen": "normal", "shadow": False, "edge": False, "tilt": 0.0, "stray": False, "small": 0}
    options = [base, {**base, "pen": "ballpoint", "small": 100}, {**base, "shadow": True}, {**base, "paper": "grid"}]
    rows = {r["factor"]: r for r in pt.factors(options, np.array([True, False, False, True]))}
    assert rows["ballpoint and small JPEG"] == {"factor": "ballpoint and small JPEG", "n": 1, "accuracy": 0.0}
    assert rows["shadow"]["accuracy"] == 0.0 and rows["paper plain"]["n"] == 3 and rows["paper grid"]["accuracy"] == 1.0
    assert rows["neither, and no shadow"] == {"factor": "neither, and no shadow", "n": 2, "accuracy": 1.0}
    assert "paper form_box" not in rows  # no image had it


def test_main_writes_every_conditions_figures_as_json(run_dir: Path, tiny_data: Path, tmp_path: Path) -> None:
    """The whole command on a tiny model and data set: the JSON it writes holds each condition's figures
    (not the per-image arrays, which are not JSON)."""
    out = tmp_path / "pages.json"
    pt.main([str(run_dir), "--data-dir", str(tiny_data), "--n", "3", "--offset", "0", "--seed", "2",
             "--conditions", "plain", "notebook_all", "--out", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["conditions"]
    assert [r["condition"] for r in rows] == ["plain", "notebook_all"]
    assert all(r["n"] == 3 and 0.0 <= r["accuracy"] <= 1.0 and "contrast" not in r for r in rows)
