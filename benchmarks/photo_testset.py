"""Photo-like test set: MNIST test digits rendered as users photograph them, then read back through
``mnist_cnn.inference.preprocessing`` and a model; accuracy per condition next to the model's accuracy on
the very same digits as clean 28x28 MNIST images.

Each condition starts from the same *plain* rendering (the digit upscaled with bicubic
interpolation, so strokes are smooth, as dark ink on white paper, centred, 100-160 px tall in
a 1.4-2x larger canvas, light sensor noise, saved as PNG) and changes one thing; ``all`` draws
every change at random at once:

* ``mnist28``: the untouched 28x28 MNIST image (checks that preprocessing is close to the identity)
* ``paper``: paper texture (fibres: low-frequency blotches + grain) and an off-white tint
* ``lighting``: a lighting gradient (up to 55% darker on one side) plus a soft-edged cast shadow
* ``jpeg``: JPEG quality 15-40 (block artefacts, ringing around strokes)
* ``placement``: anywhere in a canvas 1.5-6x the digit, digit 24-400 px tall
* ``white_on_black``: bright chalk on a dark (board/screen) background
* ``colour_ink``: blue/red/green/purple ink on tinted paper (kept as RGB)
* ``blur``: Gaussian blur with sigma 15-50% of the stroke width (out of focus, still legible)
* ``thin_pen``: a ballpoint on a large photo: strokes thinned to ~2-5 px on a 200-400 px digit
* ``all``: all of the above drawn at random

A digit on a page, photographed (:func:`render_page`: the digit redrawn with a pen of varying
width on tinted paper, 70-160 px tall in a photo 2-3.2x larger, camera blur, noise, phone JPEG),
one change each, ``notebook_all`` a realistic mix of all of them:

* ``ruled`` / ``grid``: ruled (sometimes with a red margin line) or squared paper, lines crossing the strokes
* ``form_box``: a printed box around the digit (touching or crossing it sometimes), neighbouring boxes
* ``shadow``: a hand's or phone's shadow, hard to very soft; ``page_edge``: the page's edge and a table beyond
* ``perspective``: the page tilted 15-35 degrees, seen through a pinhole camera
* ``ballpoint``: 1.5-4 px strokes on a big photo; ``marker``: strokes 1.5-2x MNIST's width
* ``stray_marks``: scribbles, dots, a neighbouring digit cut by the border
* ``small_jpeg``: downscaled to 60-160 px, JPEG quality 10-35; ``notebook_all``: all of these at random

Each condition also reports the mean confidence and the expected calibration error (15 bins).
Tune with ``--split val --seed 1``; report with test digits and ``--seed 2``:

    python benchmarks/photo_testset.py default --data-dir /work/shared/data/mnist --seed 2 --n 500 \
        --out docs/results/photo-pages-default.json --examples docs/results/photo-pages-examples.png

    python benchmarks/photo_testset.py /tmp/inf-model --data-dir /work/shared/data/mnist --n 500 \
        --out benchmarks/results/photo-testset.json --examples docs/results/photo-examples.png

``--model`` may also be a .onnx file or ``default``. The digits are ``--n`` consecutive test images
from ``--offset`` (default 5000: the first test digits were looked at while the preprocessing was
developed), or with ``--split val`` the validation digits the model did not train on, which is what
preprocessing choices are tuned on. Rendering is seeded, so runs are reproducible.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CONDITIONS = [
    "mnist28",
    "plain",
    "paper",
    "lighting",
    "jpeg",
    "placement",
    "white_on_black",
    "colour_ink",
    "blur",
    "thin_pen",
    "all",
    # a digit on a page, photographed (rendered by ``render_page``)
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
]
PAGE_CONDITIONS = CONDITIONS[CONDITIONS.index("ruled") :]
Rng = np.random.Generator
Pool = np.ndarray | None  # other digits, for the fragments of neighbouring digits among stray marks
Record = list[dict[str, Any]] | None  # a list each page's rendering options are appended to
EXAMPLES = 2  # examples per condition in the --examples figure
INKS = [(20, 40, 160), (170, 25, 30), (20, 110, 50), (90, 30, 120), (30, 30, 30)]  # blue, red, green, purple, black


# --------------------------------------------------------------------------- rendering


def upscale(digit: np.ndarray, height: int) -> np.ndarray:
    """uint8 [28, 28] -> ink coverage float [s, s] in 0..1 with the 20-px digit about ``height`` tall."""
    side = max(28, int(round(height * 28 / 20)))
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.BICUBIC), dtype=np.float32).clip(0, 255) / 255


def thin(alpha: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Redraw the strokes 2-5 px wide (a ballpoint pen on a big photo): the skeleton of the
    digit's mask widened to the pen's radius, edges anti-aliased. Returns (coverage, stroke width)."""
    from scipy import ndimage as ndi

    skeleton = zhang_suen(alpha >= 0.5)
    radius = rng.uniform(1.0, 2.5)
    to_line = ndi.distance_transform_edt(~skeleton)
    return np.clip(radius + 0.5 - to_line, 0, 1).astype(np.float32), 2 * radius + 1


def _zs_tables() -> tuple[np.ndarray, np.ndarray]:
    """Zhang-Suen deletion tables over the 256 neighbourhood codes (bit i: neighbour P(i+2),
    P2 = north, then clockwise), one per sub-iteration."""
    t1, t2 = np.zeros(256, bool), np.zeros(256, bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]  # P2..P9
        b = sum(p)
        a = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        p2, p3, p4, p5, p6, p7, p8, p9 = p
        if 2 <= b <= 6 and a == 1:
            t1[code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
            t2[code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return t1, t2


ZS_TABLES = _zs_tables()
ZS_KERNEL = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], np.int32)


def zhang_suen(mask: np.ndarray) -> np.ndarray:
    """A connected one-pixel skeleton of ``mask`` (Zhang & Suen 1984, table-driven)."""
    from scipy import ndimage as ndi

    m = mask.copy()
    changed = True
    while changed:
        changed = False
        for table in ZS_TABLES:
            code = ndi.correlate(m.astype(np.int32), ZS_KERNEL, mode="constant")
            delete = m & table[code]
            if delete.any():
                m &= ~delete
                changed = True
    return m


def place(alpha: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator, centred: bool) -> np.ndarray:
    """Put ``alpha`` [s, s] into a zero canvas (h, w), centred or at a random position (may be cropped by
    at most the empty margin of the 28x28 frame, never the digit)."""
    h, w = canvas
    s = alpha.shape[0]
    margin = int(s * 4 / 28)  # MNIST's empty border, scaled
    out = np.zeros((h, w), np.float32)
    if centred:
        y, x = (h - s) // 2, (w - s) // 2
    else:
        y = int(rng.integers(-margin, max(-margin + 1, h - s + margin)))
        x = int(rng.integers(-margin, max(-margin + 1, w - s + margin)))
    ys, xs = slice(max(0, y), min(h, y + s)), slice(max(0, x), min(w, x + s))
    out[ys, xs] = alpha[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    return out


def smooth_noise(shape: tuple[int, int], scale: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std noise with features ~``scale`` px (bicubic-upsampled coarse noise)."""
    h, w = shape
    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    up = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BICUBIC))
    return (up - up.mean()) / (up.std() + 1e-6)


def lighting(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative light field [h, w]: a linear gradient (to 45-100%) times a soft cast shadow."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * xx / w + np.sin(a) * yy / h
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    light = 1.0 - rng.uniform(0.25, 0.55) * t
    b = rng.uniform(0, 2 * np.pi)  # shadow edge: a line through a random point, softened
    px, py = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    d = np.cos(b) * (xx - px) + np.sin(b) * (yy - py)
    soft = rng.uniform(0.03, 0.15) * max(h, w)
    shadow = 1.0 - rng.uniform(0.2, 0.4) / (1.0 + np.exp(-d / soft))
    return light * shadow


def render(digit: np.ndarray, cond: str, rng: Rng, pool: Pool = None, record: Record = None) -> bytes:
    """One MNIST digit as an encoded photo-like image under condition ``cond`` (``pool``: other
    digits, for the fragments of neighbouring digits among stray marks; ``record``: a page's
    rendering options are appended to it)."""
    if cond in PAGE_CONDITIONS:
        return render_page(digit, cond, rng, pool, record)
    if cond == "mnist28":
        return encode(Image.fromarray(digit), "PNG")
    opts = pick(cond, rng)
    height = opts["height"]
    alpha = upscale(digit, height)
    stroke = 2.6 * height / 20  # MNIST's median stroke width at this size
    if opts["thin"]:
        alpha, stroke = thin(alpha, rng)
    s = alpha.shape[0]
    ratio = opts["canvas"]
    canvas = (int(s * ratio * rng.uniform(0.8, 1.2)), int(s * ratio * rng.uniform(0.8, 1.2)))
    canvas = (max(canvas[0], s // 2), max(canvas[1], s // 2))
    a = place(alpha, canvas, rng, centred=not opts["offcentre"])  # [h, w] ink coverage
    if opts["blur"]:
        sigma = rng.uniform(0.15, 0.5) * stroke  # out of focus, but still legible
        from scipy.ndimage import gaussian_filter

        a = gaussian_filter(a, sigma)
    h, w = a.shape
    paper = np.array(opts["paper"], np.float32)  # RGB
    ink = np.array(opts["ink"], np.float32)
    img = paper[None, None, :] * (1 - a[..., None]) + ink[None, None, :] * a[..., None]  # [h, w, 3]
    if opts["texture"]:
        tex = 1 + 0.04 * smooth_noise((h, w), max(8, h // 10), rng) + 0.025 * rng.standard_normal((h, w))
        img *= tex[..., None].astype(np.float32)
    if opts["lighting"]:
        img *= lighting((h, w), rng)[..., None]
    img += rng.normal(0, opts["noise"], img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    if not opts["colour"]:
        im = im.convert("L")
    return encode(im, "JPEG", quality=opts["jpeg"]) if opts["jpeg"] else encode(im, "PNG")


def pick(cond: str, rng: np.random.Generator) -> dict[str, Any]:
    """The rendering options of ``cond``: the plain ones with one (``all``: every) change."""
    o: dict[str, Any] = {
        "height": int(rng.integers(100, 161)),
        "canvas": rng.uniform(1.4, 2.0),
        "offcentre": False,
        "paper": (245, 245, 242),
        "ink": (25, 25, 25),
        "texture": False,
        "lighting": False,
        "noise": 2.0,
        "jpeg": 0,
        "colour": False,
        "blur": False,
        "thin": False,
    }
    every = cond == "all"

    def on(name: str) -> bool:  # in `all`, each change is drawn with probability 1/2
        return cond == name or (every and rng.random() < 0.5)

    if on("paper"):
        o["texture"] = True
        o["paper"] = tuple(float(v) for v in rng.uniform(200, 250, 3))
    if on("lighting"):
        o["lighting"] = True
    if on("jpeg"):
        o["jpeg"] = int(rng.integers(15, 41))
    if on("placement"):
        o["offcentre"] = True
        o["height"] = int(np.exp(rng.uniform(np.log(24), np.log(400))))
        o["canvas"] = rng.uniform(1.5, 6.0)
    if on("white_on_black"):
        o["paper"] = tuple(float(v) for v in rng.uniform(10, 70, 3))
        o["ink"] = tuple(float(v) for v in rng.uniform(200, 250, 3))
    if on("colour_ink"):
        o["colour"] = True
        o["ink"] = INKS[int(rng.integers(len(INKS)))]
        o["paper"] = tuple(float(v) for v in rng.uniform(215, 250, 3))
    if on("blur"):
        o["blur"] = True
    if on("thin_pen"):
        o["thin"] = True
        o["height"] = int(rng.integers(200, 401))
    if every:
        o["noise"] = float(rng.uniform(1, 6))
    return o


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- a digit on a page, photographed

PAPER_LINES = [(110, 150, 210), (150, 175, 215), (150, 150, 150), (170, 185, 190)]  # blue, light blue, greys
TABLES = [(95, 60, 35), (140, 95, 55), (45, 40, 38), (110, 110, 105), (60, 80, 120), (150, 40, 40)]


def pen_width(alpha: np.ndarray, grow: float) -> np.ndarray:
    """The digit's mask (coverage >= 0.5) grown (``grow`` > 0, px per side) or shrunk, redrawn as
    solid ink with a 1-px anti-aliased edge: a wider or narrower pen along the same strokes."""
    from scipy import ndimage as ndi

    m = alpha >= 0.5
    sd = ndi.distance_transform_edt(~m) - ndi.distance_transform_edt(m)  # +outside, -inside, pixel centres
    edge = sd - 0.5 * np.sign(sd)  # distance to the mask's edge
    return np.clip(0.5 + grow - edge, 0, 1).astype(np.float32)


def ballpoint(alpha: np.ndarray, width: float) -> np.ndarray:
    """The strokes redrawn ``width`` px wide along the digit's skeleton. The skeleton is found at
    ~160 px (fast), then refined at full resolution (its blocks are only a few px wide)."""
    from scipy import ndimage as ndi

    k = max(1, alpha.shape[0] // 160)
    s = alpha.shape[0]
    small = np.asarray(Image.fromarray(alpha, mode="F").resize((s // k, s // k), Image.BILINEAR))
    skel = zhang_suen(small >= 0.5)
    if k > 1:
        up = np.zeros((s, s), bool)
        big = np.kron(skel, np.ones((k, k), bool))
        up[: big.shape[0], : big.shape[1]] = big
        skel = zhang_suen(up)
    return np.clip(width / 2 + 0.5 - ndi.distance_transform_edt(~skel), 0, 1).astype(np.float32)


def draw_layer(shape: tuple[int, int], draw: Any, ss: int = 2) -> np.ndarray:
    """Coverage [h, w] 0..1 of whatever ``draw(ImageDraw, ss)`` paints at ``ss``x supersampling."""
    from PIL import ImageDraw

    h, w = shape
    img = Image.new("L", (w * ss, h * ss), 0)
    draw(ImageDraw.Draw(img), ss)
    return np.asarray(img.resize((w, h), Image.BOX), dtype=np.float32) / 255


def ruled(shape: tuple[int, int], height: float, rng: np.random.Generator, grid: bool) -> list[tuple]:
    """Ruled (or, ``grid``, squared) paper lines as (coverage, colour) layers: spacing relative to
    the digit, 1-3 px, blue or grey, a red margin line sometimes."""
    h, w = shape
    spacing = height * (rng.uniform(0.25, 0.7) if grid else rng.uniform(0.5, 1.4))
    lw = rng.uniform(1.0, 1.0 + height / (80 if grid else 50))
    colour = PAPER_LINES[int(rng.integers(len(PAPER_LINES)))]
    y0, x0 = rng.uniform(0, spacing), rng.uniform(0, spacing)

    def lines(d: Any, ss: int) -> None:
        for y in np.arange(y0, h, spacing):
            d.line([(0, y * ss), (w * ss, y * ss)], fill=255, width=max(1, round(lw * ss)))
        if grid:
            for x in np.arange(x0, w, spacing):
                d.line([(x * ss, 0), (x * ss, h * ss)], fill=255, width=max(1, round(lw * ss)))

    layers = [(draw_layer(shape, lines), colour)]
    if not grid and rng.random() < 0.35:  # the red margin line
        x = rng.uniform(0.05, 0.95) * w
        mw = lw * rng.uniform(1, 2)
        margin = draw_layer(shape, lambda d, ss: d.line([(x * ss, 0), (x * ss, h * ss)], 255, max(1, round(mw * ss))))
        layers.append((margin, (215, 90, 90)))
    return layers


def form_box(
    shape: tuple[int, int], ink_box: tuple[int, int, int, int], height: float, rng: np.random.Generator
) -> list[tuple]:
    """A printed form box around the digit (margins from slightly inside to well outside the ink, so
    strokes touch or cross it sometimes), and sometimes the neighbouring boxes of a comb."""
    left, t, r, b = ink_box
    m = [rng.uniform(-0.06, 0.3) * height for _ in range(4)]
    box = (left - m[0], t - m[1], r + m[2], b + m[3])
    lw = rng.uniform(1.5, 2 + height / 40)
    colour = tuple(int(v) for v in rng.uniform(20, 120, 3))
    neighbours = int(rng.integers(0, 3)) if rng.random() < 0.5 else 0
    bw = box[2] - box[0]

    def draw(d: Any, ss: int) -> None:
        for k in range(-neighbours, neighbours + 1):
            x0, x1 = box[0] + k * bw, box[2] + k * bw
            d.rectangle([x0 * ss, box[1] * ss, x1 * ss, box[3] * ss], outline=255, width=max(1, round(lw * ss)))

    return [(draw_layer(shape, draw), colour)]


def stray_marks(
    shape: tuple[int, int],
    ink_box: tuple[int, int, int, int],
    height: float,
    rng: np.random.Generator,
    pool: np.ndarray | None,
    pen: float,
) -> np.ndarray:
    """Coverage of 1-4 things that are not the digit, smaller than it and away from it: scribbles,
    dots, and a fragment of a neighbouring digit cut by the photo's border."""
    h, w = shape
    left, t, r, b = ink_box
    gap = 0.2 * height

    def spot(size: float) -> tuple[float, float]:  # a centre whose box of ``size`` stays off the digit
        for _ in range(50):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            if x + size / 2 < left - gap or x - size / 2 > r + gap or y + size / 2 < t - gap or y - size / 2 > b + gap:
                return x, y
        return (0.0, 0.0)

    out = np.zeros(shape, np.float32)
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.choice(["scribble", "dot", "fragment"], p=[0.45, 0.3, 0.25])
        if kind == "fragment" and pool is not None and len(pool):
            other = upscale(pool[int(rng.integers(len(pool)))], height * rng.uniform(0.6, 1.0))
            other = pen_width(other, rng.uniform(-0.1, 0.2) * pen)
            s = other.shape[0]
            side = int(rng.integers(4))  # the fragment sticks in from this side, cut by the border
            cut = rng.uniform(0.35, 0.7) * s
            along = rng.uniform(0.1, 0.9)
            y, x = [
                (along * h - s / 2, cut - s),
                (along * h - s / 2, w - cut),
                (cut - s, along * w - s / 2),
                (h - cut, along * w - s / 2),
            ][side]
            y, x = int(y), int(x)
            ys, xs = slice(max(0, y), min(h, y + s)), slice(max(0, x), min(w, x + s))
            piece = other[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
            if piece.size and not (
                xs.stop > left - gap and xs.start < r + gap and ys.stop > t - gap and ys.start < b + gap
            ):
                out[ys, xs] = np.maximum(out[ys, xs], piece)
            continue
        size = rng.uniform(0.05, 0.12) * height if kind == "dot" else rng.uniform(0.15, 0.5) * height
        cx, cy = spot(size)
        if kind == "dot":
            mark = draw_layer(
                shape,
                lambda d, ss, cx=cx, cy=cy, rad=size / 2: d.ellipse(
                    [(cx - rad) * ss, (cy - rad) * ss, (cx + rad) * ss, (cy + rad) * ss], fill=255
                ),
            )
        else:
            pts = np.cumsum(rng.normal(0, size / 3, (int(rng.integers(3, 7)), 2)), axis=0)
            pts = pts - pts.mean(0) + (cx, cy)
            width = pen * rng.uniform(0.5, 1.2)
            mark = draw_layer(
                shape,
                lambda d, ss, pts=pts, width=width: d.line(
                    [(px * ss, py * ss) for px, py in pts], 255, max(1, round(width * ss)), "curve"
                ),
            )
        out = np.maximum(out, mark)
    return out


def page_edge(shape: tuple[int, int], ink_box: tuple[int, int, int, int], height: float, rng: np.random.Generator):
    """(on-page mask float [h, w], table RGB [h, w, 3]): one or two page edges (a corner) at
    0.1-0.8 digit heights from the ink, up to 15 degrees off the axes; beyond them a textured table."""
    h, w = shape
    left, t, r, b = ink_box
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    page = np.ones(shape, np.float32)
    sides = rng.choice(4, size=2 if rng.random() < 0.35 else 1, replace=False)
    for side in sides:
        a = np.radians(rng.uniform(-15, 15))
        d = rng.uniform(0.1, 0.8) * height
        # signed distance to an edge line, > 0 on the page side; the digit's box stays on the page
        if side == 0:  # left
            x0 = left - d - abs(np.tan(a)) * (b - t)
            dist = (xx - x0 - np.tan(a) * (yy - (t + b) / 2)) * np.cos(a)
        elif side == 1:  # right
            x0 = r + d + abs(np.tan(a)) * (b - t)
            dist = (x0 + np.tan(a) * (yy - (t + b) / 2) - xx) * np.cos(a)
        elif side == 2:  # top
            y0 = t - d - abs(np.tan(a)) * (r - left)
            dist = (yy - y0 - np.tan(a) * (xx - (left + r) / 2)) * np.cos(a)
        else:
            y0 = b + d + abs(np.tan(a)) * (r - left)
            dist = (y0 + np.tan(a) * (xx - (left + r) / 2) - yy) * np.cos(a)
        page = np.minimum(page, np.clip(dist + 0.5, 0, 1))
    base = np.array(TABLES[int(rng.integers(len(TABLES)))], np.float32) * rng.uniform(0.7, 1.2)
    grain = smooth_noise((h, max(2, w // 8)), 3, rng)  # streaks: noise stretched along x
    grain = np.asarray(Image.fromarray(grain, mode="F").resize((w, h), Image.BICUBIC))
    if rng.random() < 0.5:
        grain = np.asarray(Image.fromarray(grain, mode="F").transpose(Image.Transpose.TRANSPOSE).resize((w, h)))
    table = base[None, None, :] * (1 + 0.12 * grain[..., None])
    return page, np.clip(table, 0, 255)


def shadow(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative light [h, w]: a hand's or phone's shadow (an ellipse reaching in from one
    side, 25-65% darker, edge from hard to very soft) over a mild gradient."""
    from scipy.ndimage import gaussian_filter

    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    cx, cy = w / 2 + np.cos(a) * rng.uniform(0.4, 0.9) * w, h / 2 + np.sin(a) * rng.uniform(0.4, 0.9) * h
    rx, ry = rng.uniform(0.3, 0.8) * w, rng.uniform(0.3, 0.8) * h
    rot = rng.uniform(0, np.pi)
    u = (np.cos(rot) * (xx - cx) + np.sin(rot) * (yy - cy)) / rx
    v = (-np.sin(rot) * (xx - cx) + np.cos(rot) * (yy - cy)) / ry
    inside = (u**2 + v**2 < 1).astype(np.float32)
    soft = rng.uniform(0.3, 0.08 * max(h, w))
    inside = gaussian_filter(inside, soft)
    t = np.cos(a) * xx / w + np.sin(a) * yy / h
    grad = 1 - rng.uniform(0, 0.25) * (t - t.min()) / (np.ptp(t) + 1e-6)
    return (1 - rng.uniform(0.25, 0.65) * inside) * grad


def homography(w: int, h: int, tilt: float, rng: np.random.Generator) -> np.ndarray:
    """3x3 map of page pixels to photo pixels: the page rotated ``tilt`` degrees about a random
    in-plane axis (plus up to 8 degrees of roll) and seen by a pinhole camera of focal length
    0.9-1.6x the photo, zoomed so that the page still fills the photo."""
    ax = rng.uniform(0, np.pi)
    k = np.array([np.cos(ax), np.sin(ax), 0.0])
    th = np.radians(tilt)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * kx @ kx  # Rodrigues
    roll = np.radians(rng.uniform(-8, 8))
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    rot = rot @ rz
    f = rng.uniform(0.9, 1.6) * max(w, h)
    cx, cy = w / 2, h / 2
    m = np.column_stack([rot[:, 0], rot[:, 1], [0, 0, f]])  # page (x, y, 1) -> camera
    kmat = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]])
    hom = kmat @ m @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    inv = np.linalg.inv(hom)
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    for zoom in np.arange(1.0, 2.01, 0.05):  # the least zoom whose photo corners all see the page
        z = np.array([[zoom, 0, cx * (1 - zoom)], [0, zoom, cy * (1 - zoom)], [0, 0, 1]])
        p = (inv @ np.linalg.inv(z) @ corners.T).T
        p = p[:, :2] / p[:, 2:]
        if (p >= -1).all() and (p[:, 0] <= w + 1).all() and (p[:, 1] <= h + 1).all():
            break
    return z @ hom


def warp(img: np.ndarray, hom: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``img`` [h, w, 3] float seen through the homography (bicubic), ``fill`` beyond the page."""
    h, w = img.shape[:2]
    inv = np.linalg.inv(hom)
    coeffs = tuple((inv / inv[2, 2]).ravel()[:8])
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        ch = Image.fromarray(np.ascontiguousarray(img[..., c]), mode="F")
        out[..., c] = np.asarray(
            ch.transform((w, h), Image.PERSPECTIVE, coeffs, Image.BICUBIC, fillcolor=float(fill[c]))
        )
    return out


def page_options(cond: str, rng: np.random.Generator) -> dict[str, Any]:
    """The page rendering options of ``cond``; ``notebook_all`` draws a realistic mix of all."""
    o: dict[str, Any] = {
        "height": int(rng.integers(70, 161)),
        "canvas": rng.uniform(2.0, 3.2),
        "paper": "plain",  # plain | ruled | grid | form_box
        "pen": "normal",  # normal | ballpoint | marker
        "shadow": False,
        "edge": False,
        "tilt": 0.0,
        "stray": False,
        "small": 0,  # longer side of the downscaled photo (0: full size)
        "jpeg": int(rng.integers(80, 96)),  # phones save JPEGs
    }
    if cond in ("ruled", "grid", "form_box"):
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
    if o["stray"]:
        layers.append((stray_marks(shape, ink_box, height, rng, pool, pen), INKS[-1]))
    ink = INKS[int(rng.integers(len(INKS)))] if rng.random() < 0.5 else INKS[-1]
    layers.append((a, ink))
    for cov, colour in layers:  # ink absorbs light: layers multiply
        tint = 1 - (1 - np.array(colour, np.float32) / 255 * rng.uniform(0.9, 1.1)) * rng.uniform(0.85, 1.0)
        img *= 1 - cov[..., None] * (1 - np.clip(tint, 0, 1))[None, None, :]
    fill = paper
    if o["edge"]:
        on_page, table = page_edge(shape, ink_box, height, rng)
        img = img * on_page[..., None] + table * (1 - on_page[..., None])
        fill = table.mean(axis=(0, 1))
    if o["tilt"]:
        img = warp(img.astype(np.float32), homography(w, h, o["tilt"], rng), fill)
    if o["shadow"]:
        img *= shadow(shape, rng)[..., None]
    img = gaussian_filter(img, (rng.uniform(0.3, 1.0),) * 2 + (0,))  # camera optics
    img += rng.normal(0, rng.uniform(1.5, 5.0), img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    if o["small"]:
        f = o["small"] / max(im.size)
        im = im.resize((max(8, round(im.width * f)), max(8, round(im.height * f))), Image.BILINEAR, reducing_gap=2.0)
    return encode(im, "JPEG", quality=o["jpeg"])


def place_at(alpha: np.ndarray, shape: tuple[int, int], y: int, x: int) -> np.ndarray:
    """``alpha`` [s, s] pasted into a zero canvas ``shape`` with its top-left corner at (y, x), clipped."""
    h, w = shape
    s = alpha.shape[0]
    out = np.zeros(shape, np.float32)
    ys, xs = slice(max(0, y), min(h, y + s)), slice(max(0, x), min(w, x + s))
    out[ys, xs] = alpha[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    return out


# --------------------------------------------------------------------------- evaluation


def evaluate(
    predictor: Any,
    digits: np.ndarray,
    labels: np.ndarray,
    cond: str,
    seed: int,
    keep: int = 0,
    pool: np.ndarray | None = None,
) -> dict[str, Any]:
    """Render, preprocess and predict every digit under ``cond``; failures ("no digit found")
    count as wrong, with confidence 0 (no answer was given)."""
    from mnist_cnn.errors import MnistCnnError
    from mnist_cnn.inference.preprocessing import preprocess

    rng = np.random.default_rng([seed, CONDITIONS.index(cond)])
    images, contrast, ok, failed, examples = [], [], [], 0, []
    options: list[dict[str, Any]] = []
    t_pre = 0.0
    for i, d in enumerate(digits):
        data = render(d, cond, rng, digits if pool is None else pool, options)
        t = time.perf_counter()
        try:
            result = preprocess(data)
            pre = result.image
            ok.append(i)
            images.append(pre)
            contrast.append(result.signal)
        except MnistCnnError:
            failed += 1
            pre = None
        t_pre += time.perf_counter() - t
        if i < keep:
            examples.append((data, pre))
    probs = np.zeros((len(digits), 10))
    if images:  # as `predict` does: the model, then each photo's contrast factor (versions before it: none)
        for_photos = getattr(predictor, "for_photos", lambda p, _: p)
        probs[ok] = for_photos(predictor.predict_proba(np.stack(images)), contrast)
    pred = np.where(probs.max(1) > 0, probs.argmax(1), -1)
    correct = pred == labels
    ink_contrast = np.full(len(digits), np.nan)
    ink_contrast[ok] = contrast
    return {
        "condition": cond,
        "n": len(digits),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(probs.max(1).mean()),
        "ece": ece(probs, labels),
        "no_digit_found": failed,
        "preprocess_ms": 1000 * t_pre / len(digits),
        "examples": examples,
        "pred": pred,
        "probs": probs,  # [n, C] calibrated; all zero where no digit was found
        "contrast": ink_contrast,  # [n] grey levels, what preprocessing measured; NaN: no digit found
        "factors": factors(options, correct) if cond == "notebook_all" else [],
    }


def factors(options: list[dict[str, Any]], correct: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy of the mixed condition's images with and without each of its ingredients (which
    of them, alone or together, make the errors)."""
    o = options
    masks = {f"paper {v}": [x["paper"] == v for x in o] for v in ("plain", "ruled", "grid", "form_box")}
    masks |= {f"pen {v}": [x["pen"] == v for x in o] for v in ("normal", "ballpoint", "marker")}
    masks |= {
        "shadow": [x["shadow"] for x in o],
        "page edge": [x["edge"] for x in o],
        "tilt > 20 degrees": [x["tilt"] > 20 for x in o],
        "stray marks": [x["stray"] for x in o],
        "small JPEG": [bool(x["small"]) for x in o],
        "ballpoint and small JPEG": [x["pen"] == "ballpoint" and bool(x["small"]) for x in o],
        "neither ballpoint nor small JPEG": [x["pen"] != "ballpoint" and not x["small"] for x in o],
        "neither, and no shadow": [x["pen"] != "ballpoint" and not x["small"] and not x["shadow"] for x in o],
    }
    rows = []
    for name, m in masks.items():
        m = np.array(m, bool)
        if m.any():
            rows.append({"factor": name, "n": int(m.sum()), "accuracy": float(correct[m].mean())})
    return rows


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (15 equal-width confidence bins), from
    ``mnist_cnn.evaluation.calibration`` when the installed package has it."""
    try:
        from mnist_cnn.evaluation.calibration import expected_calibration_error  # type: ignore[import-not-found]
    except ImportError:
        conf, correct = probs.max(1), probs.argmax(1) == labels
        bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
        gap = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins))
        return float(gap / len(labels))
    return float(expected_calibration_error(probs, labels, n_bins=n_bins))


def example_figure(rows: list[dict[str, Any]], path: Path, per_row: int = 6) -> None:
    """One row per condition: each rendered input (thumbnail) next to its 28x28 preprocessed image."""
    cell, pad = 84, 6
    w = per_row * (2 * cell + 3 * pad)
    fig = Image.new("RGB", (w + 130, len(rows) * (cell + pad) + pad), (255, 255, 255))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(fig)
    for r, row in enumerate(rows):
        y = pad + r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), row["condition"], fill=(0, 0, 0))
        for c, (data, pre) in enumerate(row["examples"][:per_row]):
            x = 130 + c * (2 * cell + 3 * pad)
            src = Image.open(io.BytesIO(data)).convert("RGB")
            src.thumbnail((cell, cell))
            fig.paste(src, (x, y))
            if pre is not None:
                fig.paste(Image.fromarray(pre).resize((cell, cell), Image.NEAREST).convert("RGB"), (x + cell + pad, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.save(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="run folder, .safetensors, .onnx or default")
    ap.add_argument("--data-dir", type=Path, help="folder with the MNIST IDX files")
    ap.add_argument("--n", type=int, default=500, help="digits per condition")
    ap.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="test digits (for reporting) or the validation split the model did not train on "
        "(val_size 5000, seed 0: for tuning preprocessing without looking at the test set)",
    )
    ap.add_argument(
        "--offset", type=int, default=5000, help="first digit used (test digits 0..999 were looked at while developing)"
    )
    ap.add_argument("--seed", type=int, default=0, help="rendering seed: tune on 1 (with --split val), report on 2")
    ap.add_argument("--conditions", nargs="*", default=CONDITIONS, choices=CONDITIONS)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--examples", type=Path, help="write a PNG with rendered inputs and their 28x28 versions")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.inference.predictors import load_predictor

    predictor = load_predictor(args.model)
    ds = load_dataset("mnist", args.data_dir)
    if args.split == "test":
        images, all_labels = ds.test_images, ds.test_labels
    else:
        from mnist_cnn.data.datasets import train_val_split

        _, va = train_val_split(ds.train_labels, 5000, 0)
        images, all_labels = ds.train_images[va], ds.train_labels[va]
    pick_ = slice(args.offset, args.offset + args.n) if args.split == "test" else slice(0, args.n)
    digits, labels = images[pick_], all_labels[pick_].astype(int)
    reference = float((predictor.predict_proba(digits).argmax(1) == labels).mean())
    print(
        f"model {predictor.info.get('model_id')} ({predictor.info.get('name')}, {predictor.info.get('backend')}); "
        f"the same {len(digits)} {args.split} digits as clean MNIST: {100 * reference:.2f}%"
    )
    rows = []
    for cond in args.conditions:
        r = evaluate(predictor, digits, labels, cond, args.seed, keep=EXAMPLES if args.examples else 0)
        r["clean_accuracy"] = reference
        rows.append(r)
        print(
            f"{cond:>15}: {100 * r['accuracy']:6.2f}%  confidence {r['mean_confidence']:.3f}  ECE {r['ece']:.3f}  "
            f"(no digit found: {r['no_digit_found']}, preprocess {r['preprocess_ms']:.1f} ms/image)",
            flush=True,
        )
        for f in r["factors"]:
            print(f"{'':>17}{f['factor']:>34}: {100 * f['accuracy']:6.2f}% of {f['n']}")
    if args.examples:
        example_figure(rows, args.examples, per_row=EXAMPLES)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import machine, write_json

        write_json(
            args.out,
            {
                "model": str(args.model),
                "model_info": {k: predictor.info.get(k) for k in ("name", "model_id", "backend", "accuracy")},
                "n": len(digits),
                "split": args.split,
                "offset": args.offset if args.split == "test" else 0,
                "seed": args.seed,
                "clean_accuracy_same_digits": reference,
                "conditions": [
                    {k: v for k, v in r.items() if k not in ("examples", "pred", "probs", "contrast")} for r in rows
                ],
                "machine": machine(),
            },
        )


if __name__ == "__main__":
    main()
