"""A number (a row of MNIST digits) written on a page and photographed (:func:`render_number`).

The digits are redrawn with one pen (0.75-1.3x MNIST's stroke width), 40-150 px tall with a little
jitter in size and baseline, placed left to right with a gap measured between their ink: wide, tight,
touching (strokes meet) or overlapping. Each condition changes one thing; ``all`` draws a realistic
mix of every change at once:

* ``spaced`` / ``tight`` / ``touching`` / ``overlapping``: the gap between neighbours' ink
* ``comb``: one digit per box of a printed comb (a form's boxes), strokes touching the boxes sometimes
* ``box``: a printed box around the whole number; ``ruled`` / ``grid``: paper lines crossing the strokes
* ``page_edge``: one or two page edges near the number, a table beyond (a wedge in a corner)
* ``perspective``: the page tilted 15-35 degrees; ``shadow``: a hand's shadow over uneven light
* ``colour``: coloured ink on tinted paper; ``motion_blur``: a shaken phone
* ``low_res``: digits 12-22 px tall in the photo; ``jpeg``: JPEG quality 8-25
* ``low_light``: a dark photo with strong sensor noise

``render_number`` returns the JPEG and what was drawn: the string, each digit's box in the photo.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.synth.paper import (
    INKS,
    apply_layers,
    beyond_edge,
    draw_layer,
    encode,
    homography,
    place_at,
    ruled,
    shadow,
    smooth_noise,
    warp,
)
from mnist_cnn.synth.strokes import pen_width, upscale

NUMBER_CONDITIONS = [
    "spaced",
    "tight",
    "touching",
    "overlapping",
    "comb",
    "box",
    "ruled",
    "grid",
    "page_edge",
    "perspective",
    "shadow",
    "colour",
    "motion_blur",
    "low_res",
    "jpeg",
    "low_light",
    "all",
]
GAPS = {  # gap between neighbours' ink, in digit heights
    "spaced": (0.3, 0.8),
    "tight": (0.06, 0.2),
    "touching": (-0.1, -0.02),
    "overlapping": (-0.22, -0.1),
    "natural": (0.02, 0.5),
}
PAPERS = [(250, 235, 160), (250, 205, 215), (185, 215, 245), (200, 235, 200), (235, 225, 205)]  # pastel


def number_options(cond: str, rng: np.random.Generator) -> dict[str, Any]:
    """The rendering options of ``cond`` (see the module's docstring)."""
    o: dict[str, Any] = {
        "height": int(rng.integers(40, 151)),
        "gap": "natural",
        "paper": "plain",  # plain | ruled | grid | comb | box
        "edge": False,
        "tilt": 0.0,
        "shadow": False,
        "colour": False,
        "motion": 0.0,  # motion blur length, digit heights
        "small": 0.0,  # digit height in the downscaled photo, px (0: full size)
        "jpeg": int(rng.integers(75, 96)),
        "dark": 0.0,  # 0: daylight; else the light level (0.2-0.45)
    }
    if cond in ("spaced", "tight", "touching", "overlapping"):
        o["gap"] = cond
    elif cond in ("comb", "box", "ruled", "grid"):
        o["paper"] = cond
    elif cond == "page_edge":
        o["edge"] = True
    elif cond == "perspective":
        o["tilt"] = rng.uniform(15, 35)
    elif cond in ("shadow", "colour"):
        o[cond] = True
    elif cond == "motion_blur":
        o["motion"] = rng.uniform(0.06, 0.16)
    elif cond == "low_res":
        o["small"] = rng.uniform(12, 22)
    elif cond == "jpeg":
        o["jpeg"] = int(rng.integers(8, 26))
    elif cond == "low_light":
        o["dark"] = rng.uniform(0.2, 0.45)
    elif cond == "all":
        _mix(o, rng)
    return o


def _mix(o: dict[str, Any], rng: np.random.Generator) -> None:
    """``all``: every change at random, about as often as people meet it."""
    o["gap"] = str(rng.choice(["natural", "spaced", "tight", "touching", "overlapping"], p=[0.4, 0.15, 0.2, 0.15, 0.1]))
    o["paper"] = str(rng.choice(["plain", "ruled", "grid", "comb", "box"], p=[0.3, 0.25, 0.2, 0.15, 0.1]))
    o["edge"] = rng.random() < 0.3
    o["tilt"] = rng.uniform(0, 35) if rng.random() < 0.5 else 0.0
    o["shadow"] = rng.random() < 0.35
    o["colour"] = rng.random() < 0.35
    o["motion"] = rng.uniform(0.03, 0.12) if rng.random() < 0.2 else 0.0
    o["small"] = rng.uniform(14, 26) if rng.random() < 0.2 else 0.0
    o["jpeg"] = int(rng.integers(15, 96))
    o["dark"] = rng.uniform(0.22, 0.5) if rng.random() < 0.15 else 0.0


def _digit_strokes(digits: np.ndarray, height: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each digit's coverage [s, w] cropped to its ink columns, one pen for the whole number."""
    stroke = 2.6 * height / 20  # MNIST's median stroke width at this size
    grow = (stroke * rng.uniform(0.75, 1.3) - stroke) / 2
    out = []
    for d in digits:
        a = pen_width(upscale(d, int(height * rng.uniform(0.9, 1.1))), grow)
        cols = np.flatnonzero(a.max(0) > 0.05)
        out.append(a[:, cols[0] : cols[-1] + 1] if cols.size else a)
    return out


def _layout(strokes: list[np.ndarray], o: dict[str, Any], rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Left x and top y of each digit (row coordinates, may be < 0): gaps between the ink, the
    boxes of a comb, a little baseline jitter and slope."""
    h = o["height"]
    lo, hi = GAPS[o["gap"]]
    if o["paper"] == "comb":
        lo, hi = 0.25, 0.55  # the comb's pitch leaves room around each digit
    xs, ys, x = [], [], 0.0
    slope = rng.uniform(-0.04, 0.04)
    for a in strokes:
        xs.append(int(round(x)))
        ys.append(int(round(slope * x + rng.uniform(-0.06, 0.06) * h - (a.shape[0] - h * 28 / 20) / 2)))
        x += a.shape[1] + rng.uniform(lo, hi) * h
    return xs, ys


def _comb(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]], height: float, rng: np.random.Generator):
    """A printed comb: one box per digit, equal pitch, the digits' ink sometimes touching the sides."""
    top = min(b[1] for b in boxes) - rng.uniform(-0.04, 0.25) * height
    bottom = max(b[3] for b in boxes) + rng.uniform(-0.04, 0.25) * height
    centres = [(b[0] + b[2]) / 2 for b in boxes]
    pitch = float(np.median(np.diff(centres))) if len(centres) > 1 else (boxes[0][2] - boxes[0][0]) * 1.4
    lw = rng.uniform(1.5, 2 + height / 40)
    x0 = centres[0] - pitch / 2 + rng.uniform(-0.08, 0.08) * pitch

    def draw(d: Any, ss: int) -> None:
        for k in range(len(boxes) + 1):
            x = x0 + k * pitch
            d.line([(x * ss, top * ss), (x * ss, bottom * ss)], fill=255, width=max(1, round(lw * ss)))
        for y in (top, bottom):
            d.line([(x0 * ss, y * ss), ((x0 + len(boxes) * pitch) * ss, y * ss)], 255, max(1, round(lw * ss)))

    return draw_layer(shape, draw)


def _box(shape: tuple[int, int], ink: tuple[int, int, int, int], height: float, rng: np.random.Generator):
    """A printed box around the whole number (touching the outer digits' ink sometimes)."""
    m = [rng.uniform(-0.04, 0.4) * height for _ in range(4)]
    box = (ink[0] - m[0], ink[1] - m[1], ink[2] + m[2], ink[3] + m[3])
    lw = rng.uniform(1.5, 2 + height / 40)
    return draw_layer(
        shape, lambda d, ss: d.rectangle([v * ss for v in box], outline=255, width=max(1, round(lw * ss)))
    )


def render_number(
    digits: np.ndarray, cond: str, rng: np.random.Generator, labels: Any = None, height: tuple[int, int] | None = None
) -> tuple[bytes, dict]:
    """``digits`` uint8 [n, 28, 28] written left to right on a page and photographed under ``cond``.

    Returns (JPEG bytes, info): ``info["options"]`` what was drawn, ``info["boxes"]`` each digit's
    ink box (left, top, right, bottom) in the photo's pixels, ``info["text"]`` the string when
    ``labels`` (the digits' classes) is given; ``height``: the digits' height range in page px
    (default 40-150)."""
    o = number_options(cond, rng)
    if height is not None:
        o["height"] = int(rng.integers(height[0], height[1] + 1))
    h = o["height"]
    strokes = _digit_strokes(digits, h, rng)
    xs, ys = _layout(strokes, o, rng)
    row_w = xs[-1] + strokes[-1].shape[1] - min(xs)
    room = 1.5 if o["tilt"] else 1.0  # a tilted page is zoomed to fill the photo: more page around the number
    shape = (int(h * room * rng.uniform(2.4, 4.0)), int(row_w + h * room * rng.uniform(1.0, 2.5)))
    oy = int((shape[0] - h * 28 / 20) / 2 + rng.uniform(-0.15, 0.15) * h)
    ox = int((shape[1] - row_w) / 2 + rng.uniform(-0.2, 0.2) * h) - min(xs)
    ink = np.zeros(shape, np.float32)
    boxes = []
    for a, x, y in zip(strokes, xs, ys, strict=True):
        ink = np.maximum(ink, place_at(a, shape, y + oy, x + ox))
        rows = np.flatnonzero(a.max(1) > 0.3)
        boxes.append((x + ox, y + oy + int(rows[0]), x + ox + a.shape[1], y + oy + int(rows[-1]) + 1))
    whole = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    img, fill = _paper(shape, ink, boxes, whole, o, rng)
    hom = _tilt(shape, boxes, o["tilt"], rng) if o["tilt"] else None
    if hom is not None:
        img = warp(img.astype(np.float32), hom, fill)
    im, scale = _camera(img, o, rng)
    info = {"options": o, "boxes": [_photo_box(b, hom, scale) for b in boxes]}
    if labels is not None:
        info["text"] = "".join(str(int(v)) for v in labels)
    return encode(im, "JPEG", quality=o["jpeg"]), info


def _paper(shape, ink, boxes, whole, o, rng) -> tuple[np.ndarray, np.ndarray]:
    """The page with its printed lines and the ink, float RGB [h, w, 3]; and the colour beyond it."""
    h = o["height"]
    paper = np.array(rng.uniform(225, 252, 3), np.float32)
    if o["colour"]:
        paper = np.array(PAPERS[int(rng.integers(len(PAPERS)))], np.float32) * rng.uniform(0.9, 1.0)
    img = paper[None, None, :] * (1 + 0.03 * smooth_noise(shape, max(8, shape[0] // 8), rng))[..., None]
    layers: list[tuple] = []
    if o["paper"] in ("ruled", "grid"):
        layers += ruled(shape, h, rng, grid=o["paper"] == "grid")
    elif o["paper"] == "comb":
        layers.append((_comb(shape, boxes, h, rng), tuple(int(v) for v in rng.uniform(20, 140, 3))))
    elif o["paper"] == "box":
        layers.append((_box(shape, whole, h, rng), tuple(int(v) for v in rng.uniform(20, 140, 3))))
    colour = INKS[int(rng.integers(len(INKS) - 1))] if o["colour"] else INKS[-1]
    layers.append((ink, colour))
    apply_layers(img, layers, rng)
    fill = paper
    if o["edge"]:
        img, fill = beyond_edge(img, whole, h, rng)
    return img, fill


def _camera(img: np.ndarray, o: dict[str, Any], rng: np.random.Generator) -> tuple[Image.Image, float]:
    """Light, shake, optics, noise and resolution of the phone: (photo, photo px per page px)."""
    from scipy.ndimage import gaussian_filter

    if o["shadow"]:
        img = img * shadow(img.shape[:2], rng)[..., None]
    if o["motion"]:
        img = _motion_blur(img, o["motion"] * o["height"], rng)
    img = gaussian_filter(img, (rng.uniform(0.3, 1.0),) * 2 + (0,))  # camera optics
    noise = rng.uniform(1.5, 5.0)
    if o["dark"]:
        img = img * o["dark"]
        noise = rng.uniform(5.0, 12.0)  # the sensor's gain turned up
    img = img + rng.normal(0, noise, img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    scale = 1.0
    if o["small"]:
        scale = o["small"] / o["height"]
        size = (max(8, round(im.width * scale)), max(8, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return im, scale


def _motion_blur(img: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """The photo smeared along a line ``length`` px long at a random angle."""
    from scipy.ndimage import convolve

    n = max(3, int(round(length)) | 1)
    k = np.zeros((n, n), np.float32)
    a = rng.uniform(0, np.pi)
    c = (n - 1) / 2
    for t in np.linspace(-c, c, 4 * n):
        k[int(round(c + t * np.sin(a))), int(round(c + t * np.cos(a)))] = 1
    k /= k.sum()
    return np.stack([convolve(img[..., c].astype(np.float32), k, mode="nearest") for c in range(img.shape[2])], axis=2)


def _tilt(shape: tuple[int, int], boxes: list, tilt: float, rng: np.random.Generator) -> np.ndarray | None:
    """A homography that keeps every digit inside the photo (a person frames the number), or None."""
    h, w = shape
    for _ in range(20):
        hom = homography(w, h, tilt, rng)
        seen = [_photo_box(b, hom, 1.0) for b in boxes]
        if all(b[0] >= 2 and b[1] >= 2 and b[2] <= w - 2 and b[3] <= h - 2 for b in seen):
            return hom
    return None


def _photo_box(b: tuple[int, int, int, int], hom: np.ndarray | None, scale: float) -> list[int]:
    """A page box in the photo's pixels: its corners through the homography, then the downscale."""
    pts = np.array([[b[0], b[1], 1], [b[2], b[1], 1], [b[0], b[3], 1], [b[2], b[3], 1]], float)
    if hom is not None:
        pts = (hom @ pts.T).T
        pts = pts / pts[:, 2:]
    pts = pts[:, :2] * scale
    return [int(pts[:, 0].min()), int(pts[:, 1].min()), int(np.ceil(pts[:, 0].max())), int(np.ceil(pts[:, 1].max()))]
