"""The page and the camera: paper, printed lines and boxes, stray marks, page edges and the table, shadows,
perspective, encoding. Coverage layers are float [h, w] in 0..1; images float RGB [h, w, 3] in 0..255."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.synth.strokes import pen_width, upscale

INKS = [(20, 40, 160), (170, 25, 30), (20, 110, 50), (90, 30, 120), (30, 30, 30)]  # blue, red, green, purple, black


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
    up = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.Resampling.BICUBIC))
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


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


PAPER_LINES = [(110, 150, 210), (150, 175, 215), (150, 150, 150), (170, 185, 190)]  # blue, light blue, greys
TABLES = [(95, 60, 35), (140, 95, 55), (45, 40, 38), (110, 110, 105), (60, 80, 120), (150, 40, 40)]


def draw_layer(shape: tuple[int, int], draw: Any, ss: int = 2) -> np.ndarray:
    """Coverage [h, w] 0..1 of whatever ``draw(ImageDraw, ss)`` paints at ``ss``x supersampling."""
    from PIL import ImageDraw

    h, w = shape
    img = Image.new("L", (w * ss, h * ss), 0)
    draw(ImageDraw.Draw(img), ss)
    return np.asarray(img.resize((w, h), Image.Resampling.BOX), dtype=np.float32) / 255


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


def beyond_edge(
    img: np.ndarray, ink_box: tuple[int, int, int, int], height: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``img`` with the page's edge and the table beyond it (:func:`page_edge`), and the colour a
    perspective warp fills in beyond the page: (image, fill RGB)."""
    on_page, table = page_edge(img.shape[:2], ink_box, height, rng)
    return img * on_page[..., None] + table * (1 - on_page[..., None]), table.mean(axis=(0, 1))


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
    grain = np.asarray(Image.fromarray(grain, mode="F").resize((w, h), Image.Resampling.BICUBIC))
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
            ch.transform(
                (w, h), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC, fillcolor=float(fill[c])
            )
        )
    return out


def place_at(alpha: np.ndarray, shape: tuple[int, int], y: int, x: int) -> np.ndarray:
    """``alpha`` [sh, sw] pasted into a zero canvas ``shape`` with its top-left corner at (y, x), clipped."""
    h, w = shape
    sh, sw = alpha.shape
    out = np.zeros(shape, np.float32)
    ys, xs = slice(max(0, y), min(h, y + sh)), slice(max(0, x), min(w, x + sw))
    out[ys, xs] = alpha[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    return out


def apply_layers(img: np.ndarray, layers: list[tuple], rng: np.random.Generator) -> None:
    """Print each (coverage [h, w], RGB colour) layer onto ``img`` [h, w, 3] in place: ink absorbs
    light, so layers multiply; each colour a little lighter or darker than named."""
    for cov, colour in layers:
        tint = 1 - (1 - np.array(colour, np.float32) / 255 * rng.uniform(0.9, 1.1)) * rng.uniform(0.85, 1.0)
        img *= 1 - cov[..., None] * (1 - np.clip(tint, 0, 1))[None, None, :]
