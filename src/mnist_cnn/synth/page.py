"""One digit written on a page and photographed (:func:`render_page`), under one page condition."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.synth.paper import (
    INKS,
    PAPER_LINES,
    apply_layers,
    beyond_edge,
    draw_layer,
    encode,
    form_box,
    homography,
    place_at,
    ruled,
    shadow,
    smooth_noise,
    stray_marks,
    warp,
)
from mnist_cnn.synth.strokes import ballpoint, pen_width, upscale

Rng = np.random.Generator
Pool = np.ndarray | None  # other digits, for the fragments of neighbouring digits among stray marks
Record = list[dict[str, Any]] | None  # a list each page's rendering options are appended to
PAGE_CONDITIONS = [
    "ruled",
    "grid",
    "form_box",
    "shadow",
    "page_edge",
    "perspective",
    "ballpoint",
    "marker",
    "stray_marks",
    "small_jpeg",
    "notebook_all",
    "crossed_line",
    "cut_border",
    "low_light",
]


def page_options(cond: str, rng: np.random.Generator) -> dict[str, Any]:
    """The page rendering options of ``cond``; ``notebook_all`` draws a realistic mix of all."""
    o: dict[str, Any] = {
        "height": int(rng.integers(70, 161)),
        "canvas": rng.uniform(2.0, 3.2),
        "paper": "plain",  # plain | ruled | grid | form_box | crossed_line | cut_border
        "pen": "normal",  # normal | ballpoint | marker
        "shadow": False,
        "edge": False,
        "tilt": 0.0,
        "stray": False,
        "small": 0,  # longer side of the downscaled photo (0: full size)
        "jpeg": int(rng.integers(80, 96)),  # phones save JPEGs
        "dark": 0.0,  # 0: daylight; else the light level (0.2-0.45), with the sensor's noise
    }
    if cond in ("ruled", "grid", "form_box", "crossed_line", "cut_border"):
        o["paper"] = cond
    elif cond == "shadow":
        o["shadow"] = True
    elif cond == "page_edge":
        o["edge"] = True
    elif cond == "perspective":
        o["tilt"] = rng.uniform(15, 35)
    elif cond in ("ballpoint", "marker"):
        o["pen"] = cond
    elif cond == "stray_marks":
        o["stray"] = True
    elif cond == "low_light":
        o["dark"] = rng.uniform(0.2, 0.45)
    elif cond == "small_jpeg":
        o["canvas"] = rng.uniform(1.5, 2.5)
        o["small"], o["jpeg"] = int(rng.integers(60, 161)), int(rng.integers(10, 36))
    elif cond == "notebook_all":
        o["paper"] = str(rng.choice(["plain", "ruled", "grid", "form_box"], p=[0.15, 0.35, 0.3, 0.2]))
        o["pen"] = str(rng.choice(["normal", "ballpoint", "marker"], p=[0.5, 0.3, 0.2]))
        o["shadow"] = rng.random() < 0.5
        o["edge"] = rng.random() < 0.4
        o["tilt"] = rng.uniform(0, 35) if rng.random() < 0.7 else 0.0
        o["stray"] = rng.random() < 0.5
        if rng.random() < 0.3:
            o["small"], o["jpeg"] = int(rng.integers(80, 161)), int(rng.integers(15, 36))
        else:
            o["jpeg"] = int(rng.integers(40, 96))
    if o["pen"] == "ballpoint":
        o["height"] = int(rng.integers(200, 451))  # a thin pen on a big photo
    return o


def render_page(digit: np.ndarray, cond: str, rng: Rng, pool: Pool = None, record: Record = None) -> bytes:
    """One digit written on a page and photographed, under page condition ``cond``."""
    from scipy.ndimage import gaussian_filter

    o = page_options(cond, rng)
    if record is not None:
        record.append(o)
    height = o["height"]
    alpha = upscale(digit, height)
    stroke = 2.6 * height / 20  # MNIST's median stroke width at this size
    if o["pen"] == "ballpoint":
        pen = rng.uniform(1.5, 4.0)
        alpha = ballpoint(alpha, pen)
    elif o["pen"] == "marker":
        pen = stroke * rng.uniform(1.5, 2.0)
        alpha = pen_width(alpha, (pen - stroke) / 2)
    else:  # the writer's pen: 0.75-1.3x MNIST's width
        pen = stroke * rng.uniform(0.75, 1.3)
        alpha = pen_width(alpha, (pen - stroke) / 2)
    s = alpha.shape[0]
    shape = (int(s * o["canvas"] * rng.uniform(0.85, 1.15)), int(s * o["canvas"] * rng.uniform(0.85, 1.15)))
    h, w = shape
    y = int((h - s) / 2 + rng.uniform(-0.12, 0.12) * h)
    x = int((w - s) / 2 + rng.uniform(-0.12, 0.12) * w)
    a = place_at(alpha, shape, y, x)
    rows, cols = np.flatnonzero(a.max(1) > 0.3), np.flatnonzero(a.max(0) > 0.3)
    ink_box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    paper = np.array(rng.uniform(225, 252, 3), np.float32)
    img = paper[None, None, :] * (1 + 0.03 * smooth_noise(shape, max(8, h // 8), rng))[..., None]
    layers: list[tuple] = []
    if o["paper"] in ("ruled", "grid"):
        layers += ruled(shape, height, rng, grid=o["paper"] == "grid")
    elif o["paper"] == "form_box":
        layers += form_box(shape, ink_box, height, rng)
    elif o["paper"] == "crossed_line":
        layers.append(crossing_line(shape, ink_box, height, rng))
    elif o["paper"] == "cut_border":
        layers.append(cutting_border(shape, ink_box, height, rng))
    if o["stray"]:
        layers.append((stray_marks(shape, ink_box, height, rng, pool, pen), INKS[-1]))
    ink = INKS[int(rng.integers(len(INKS)))] if rng.random() < 0.5 else INKS[-1]
    layers.append((a, ink))
    apply_layers(img, layers, rng)
    fill = paper
    if o["edge"]:
        img, fill = beyond_edge(img, ink_box, height, rng)
    if o["tilt"]:
        img = warp(img.astype(np.float32), homography(w, h, o["tilt"], rng), fill)
    if o["shadow"]:
        img *= shadow(shape, rng)[..., None]
    img = gaussian_filter(img, (rng.uniform(0.3, 1.0),) * 2 + (0,))  # camera optics
    if o["dark"]:
        img = img * o["dark"] + rng.normal(0, rng.uniform(5.0, 12.0), img.shape)  # the sensor's gain turned up
    else:
        img += rng.normal(0, rng.uniform(1.5, 5.0), img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    if o["small"]:
        f = o["small"] / max(im.size)
        im = im.resize(
            (max(8, round(im.width * f)), max(8, round(im.height * f))), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
    return encode(im, "JPEG", quality=o["jpeg"])


def crossing_line(shape: tuple[int, int], ink_box: tuple[int, int, int, int], height: float, rng: Rng) -> tuple:
    """A ruled line (1-3 px, slightly slanted) that always crosses the digit's strokes, through its
    middle 15-85%, as a (coverage, colour) layer."""
    h, w = shape
    left, t, r, b = ink_box
    y = t + rng.uniform(0.15, 0.85) * (b - t)
    slope = np.tan(np.radians(rng.uniform(-3, 3)))
    lw = rng.uniform(1.0, 1.0 + height / 50)
    colour = PAPER_LINES[int(rng.integers(len(PAPER_LINES)))] if rng.random() < 0.7 else (40, 40, 90)
    y0, y1 = y - slope * (left + r) / 2, y + slope * (w - (left + r) / 2)

    def line(d: Any, ss: int) -> None:
        d.line([(0, y0 * ss), (w * ss, y1 * ss)], fill=255, width=max(1, round(lw * ss)))

    return draw_layer(shape, line), colour


def cutting_border(shape: tuple[int, int], ink_box: tuple[int, int, int, int], height: float, rng: Rng) -> tuple:
    """A printed box too small for the digit: one side (sometimes two) cuts through its strokes,
    5-25% of the digit inside its edge; the others clear of it."""
    left, t, r, b = ink_box
    m = [rng.uniform(0.05, 0.3) * height for _ in range(4)]
    for side in rng.choice(4, size=2 if rng.random() < 0.3 else 1, replace=False):
        m[side] = -rng.uniform(0.05, 0.25) * ((r - left) if side in (0, 2) else (b - t))
    box = (left - m[0], t - m[1], r + m[2], b + m[3])
    lw = rng.uniform(1.5, 2 + height / 40)
    colour = tuple(int(v) for v in rng.uniform(20, 120, 3))

    def draw(d: Any, ss: int) -> None:
        d.rectangle([v * ss for v in box], outline=255, width=max(1, round(lw * ss)))

    return draw_layer(shape, draw), colour
