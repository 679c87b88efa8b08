"""Stage 2, ink and background: where the strokes depart from the paper, at analysis resolution.

The strokes are the strongest departures from a smooth background in any colour channel; whichever
direction (darker or brighter) clearly dominates is the ink (:func:`polarity`). The background is
first a block percentile (:func:`background`), then a grey closing/opening a few stroke widths wide
(:func:`morph_background`), which keeps shadows, gradients and paper blotches but not strokes. The
noise is the median of local block noise (:func:`robust_sigma`), the threshold Otsu's with hysteresis
(:func:`components`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.inference.preprocessing import opencv
from mnist_cnn.inference.preprocessing.params import DEFAULT, Params


@dataclass
class Analysis:
    """The image, its background model and the ink mask at analysis resolution."""

    pixels: np.ndarray  # uint8 [H, W, C] full resolution (C = 1 or 3)
    scale: float  # full-res px per analysis px (the integer reduction factor)
    bg: np.ndarray  # float32 [h, w, C] background estimate at analysis resolution
    sign: float  # +1: ink brighter than background; -1: darker (inverted)
    ink: np.ndarray  # float32 [h, w] ink strength (>= 0 is towards the ink side), grey levels
    noise: float
    threshold: float  # strong ink: a component needs some pixel above it
    low: float  # weak ink: components extend down to it (hysteresis)
    level: float  # stroke ink level: 75th percentile of the strong ink (chosen on validation digits)
    labels: np.ndarray  # int32 [h, w] connected components of ink > threshold (0 = background)
    comps: list[dict[str, Any]] = field(default_factory=list)  # per label: area, mass, bbox (analysis px)
    lines: np.ndarray | None = None  # bool [h, w]: paper lines and frames removed from the ink map
    p: Params = DEFAULT  # the parameters it was found with


def pool(a: np.ndarray, f: int, fn: Any) -> np.ndarray:
    """``fn`` (np.minimum / np.maximum) over ``f`` x ``f`` blocks of ``a`` [H, W, C] -> [ceil(H/f), ceil(W/f), C]."""
    H, W, C = a.shape
    h, w = -(-H // f), -(-W // f)
    padded = np.pad(a, ((0, h * f - H), (0, w * f - W), (0, 0)), mode="edge")
    rows = fn.reduce(padded.reshape(h, f, w * f, C), axis=1)  # [h, W', C]: one axis at a time is much faster
    return fn.reduce(rows.reshape(h, w, f, C), axis=2)


def morph_background(a: np.ndarray, sign: float, size: int, p: Params = DEFAULT) -> np.ndarray:
    """Per channel: grey closing (dark ink) or opening (bright ink) with a ``size`` square removes
    strokes narrower than ``size`` and keeps the rest, shadow edges included; then smoothed."""
    from scipy import ndimage as ndi

    morph = ndi.grey_opening if sign > 0 else ndi.grey_closing
    # smoothed, but hardly beyond the morphological background towards the paper (spill): smoothing
    # across a page edge would make a band of the dark table next to it look like ink (a line along
    # the edge that joined the digit); towards the ink it may depart by edge_slack
    lo, hi = (-p.spill, p.edge_slack) if sign > 0 else (-p.edge_slack, p.spill)
    out = np.empty_like(a)
    for k in range(a.shape[2]):
        m = morph(a[..., k], size=(size, size), mode="nearest")
        smooth = ndi.uniform_filter(m, size, mode="nearest")
        out[..., k] = np.clip(smooth, m + lo, m + hi)
    return out


def background(a: np.ndarray, percentile: float) -> np.ndarray:
    """Smooth background ``[h, w, C]``: a percentile per block on an ~8x8 grid, median-filtered
    over 3x3 blocks (a block full of ink is outvoted by its neighbours), bilinearly upsampled.
    Small images (< 48 px) get one value per channel: the median of the border."""
    from scipy import ndimage as ndi

    h, w, c = a.shape
    if max(h, w) < 48:
        return np.broadcast_to(np.median(border(a), axis=0), a.shape).astype(np.float32)
    step = max(6, -(-max(h, w) // 8))
    gy, gx = -(-h // step), -(-w // step)
    padded = np.pad(a, ((0, gy * step - h), (0, gx * step - w), (0, 0)), mode="symmetric")
    blocks = padded.reshape(gy, step, gx, step, c).transpose(0, 2, 1, 3, 4).reshape(gy, gx, step * step, c)
    grid = np.percentile(blocks, percentile, axis=2).astype(np.float32)  # [gy, gx, C]
    out = np.empty_like(a)
    for k in range(c):
        g = ndi.median_filter(grid[..., k], size=3, mode="nearest")
        # pixel coordinate p sits at grid coordinate p / step (block i spans [i, i + 1)): interpolate
        up = Image.fromarray(g, mode="F").resize((w, h), Image.Resampling.BILINEAR, box=(0, 0, w / step, h / step))
        out[..., k] = np.asarray(up)
    return out


def border(a: np.ndarray) -> np.ndarray:
    """The pixels ``[n, C]`` of a frame ~4% wide (at least 1 px) around ``a`` ``[h, w, C]``."""
    h, w, c = a.shape
    t = max(1, min(h, w) // 25)
    return np.concatenate(
        [a[:t].reshape(-1, c), a[-t:].reshape(-1, c), a[t:-t, :t].reshape(-1, c), a[t:-t, -t:].reshape(-1, c)]
    )


def polarity(a: np.ndarray, bg: np.ndarray, p: Params = DEFAULT) -> float:
    """+1 if the ink is brighter than the background, -1 if darker.

    The strokes are the strongest departures from the local (block-median) background, in any
    channel. If the k-th strongest bright departure and the k-th strongest dark one differ
    clearly, the larger wins; else (a thick digit filling the frame, a hard shadow's edge or the
    table beyond a page's edge depart both ways) the paper decides: light paper = dark ink. The
    paper is the brightest tenth of the border (a shadow or the table may cover most of it; ink
    that light covers a tenth of a dark border only where a digit fills the frame). Before the paper
    decides, the departures are compared once more after smoothing: in a dark, noisy photo (low light,
    the sensor's gain up) the noise departs both ways as far as the strokes, but smoothing takes the
    noise down and leaves strokes a few pixels wide."""
    from scipy import ndimage as ndi

    departure = a - bg
    for smooth in (0.0, 1.5):
        d = ndi.gaussian_filter(departure, (smooth, smooth, 0)) if smooth else departure
        bright, dark = channel_max(d).ravel(), channel_max(-d).ravel()
        k = max(10, bright.size // 5000)
        if bright.size <= 2 * k:
            break
        hi, lo = float(np.partition(bright, -k)[-k]), float(np.partition(dark, -k)[-k])
        if abs(hi - lo) > 0.5 * max(hi, lo, 1e-6):
            return 1.0 if hi > lo else -1.0
    paper = float(np.percentile(border(a).mean(axis=1), p.paper_percentile))
    return -1.0 if paper >= 128 else 1.0


def channel_max(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=2)`` for [h, w, C], as C-1 elementwise maxima: numpy's reduction over a short last
    axis is several times slower."""
    out = a[..., 0].copy()
    for k in range(1, a.shape[2]):
        np.maximum(out, a[..., k], out=out)
    return out


def ink_map(a: np.ndarray, bg: np.ndarray, sign: float) -> np.ndarray:
    """How far each pixel departs from the background towards the ink side, in any channel ``[h, w]``."""
    return channel_max(sign * (a - bg))


def sample(x: np.ndarray, n: int = 1 << 16) -> np.ndarray:
    """At most about ``n`` evenly strided values of ``x`` (medians of a 512x512 map need no more)."""
    flat = x.ravel()
    return flat[:: max(1, flat.size // n)]


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 * median absolute deviation: the background's noise, ignoring the sparse ink. On a
    big map, the median of the blocks' own values: a textured table or a page edge in part
    of the photo does not raise the paper's noise (which sets the threshold)."""
    if x.ndim == 2 and min(x.shape) >= 64:
        step = min(x.shape) // 8
        h, w = (x.shape[0] // step) * step, (x.shape[1] // step) * step
        blocks = x[:h, :w].reshape(h // step, step, w // step, step).transpose(0, 2, 1, 3).reshape(-1, step * step)
        med = np.median(blocks, axis=1, keepdims=True)
        return float(1.4826 * np.median(np.median(np.abs(blocks - med), axis=1)))
    x = sample(x)
    med = np.median(x)
    return float(1.4826 * np.median(np.abs(x - med)))


def otsu(values: np.ndarray, top: float, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` in [0, top]: maximises the between-class variance."""
    if values.size < 2 or top <= 0:
        return 0.0
    hist, edges = np.histogram(np.clip(values, 0, top), bins=bins, range=(0, top))
    p = hist.astype(np.float64) / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1 - w0))
    between = np.nan_to_num(between[:-1])
    return float(edges[1:][int(np.argmax(between))])


def floors(noise: float, p: Params = DEFAULT) -> tuple[float, float]:
    """The least (strong, weak) ink thresholds of a picture whose background noise is ``noise``: clear
    of the noise, and of the contrast a digit needs."""
    return max(p.noise_k * noise, p.min_contrast / 2), max(0.75 * p.noise_k * noise, p.min_contrast / 4)


def components(
    ink: np.ndarray, low: float | np.ndarray, high: float | np.ndarray
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """8-connected components of ``ink > low`` that reach ``ink > high`` somewhere (hysteresis
    thresholding: a faint stretch of a stroke stays attached), with their area, ink mass and bbox.
    OpenCV labels them (in raster order of their first pixel, as scipy's ``label`` does) with their
    boxes and areas in one pass."""
    cv2 = opencv.cv2()
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        (ink > low).astype(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    comps = []
    if n > 1:
        strong = np.zeros(n, bool)
        strong[labels[ink > high]] = True  # components reaching the high threshold
        masses = np.bincount(labels.ravel(), weights=ink.ravel(), minlength=n)
        for k in np.flatnonzero(strong[1:]) + 1:
            x, y, w, h, area = (int(v) for v in stats[k])
            comps.append({"label": int(k), "area": area, "mass": float(masses[k]), "bbox": (x, y, x + w, y + h)})
    return labels, comps
