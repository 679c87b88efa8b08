"""Stage 5, render: crop the chosen components at full resolution and make the MNIST-like 28x28.

The crop's ink is mapped to 0..1 from just above the noise to the stroke level, so strokes keep
anti-aliased edges like MNIST's; strokes far thinner than MNIST's at the final scale are thickened
(a fine pen on a big photo would otherwise vanish), far bolder ones thinned. The longer side is scaled
to 20 px with Lanczos (aspect kept), pasted into 28x28 and shifted by whole pixels so the centre of
mass lands where MNIST's does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.errors import ImageError
from mnist_cnn.inference.preprocessing.ink import Analysis, ink_map
from mnist_cnn.inference.preprocessing.params import DEFAULT, Params
from mnist_cnn.inference.preprocessing.result import PreprocessResult
from mnist_cnn.inference.preprocessing.segment import comps_box

OUT_SIZE, BOX = 28, 20  # MNIST: 28x28 frame, digit's longer side 20 px


def render(an: Analysis, comps: list[dict[str, Any]]) -> PreprocessResult:
    """Crop the chosen components at full resolution and make the 28x28 MNIST-like image."""
    box, v = cut_out(an, comps, margin=1)  # v: float32 [bh, bw] 0..1 at (up to) full resolution
    H, W = an.pixels.shape[:2]
    work_scale = 1.0  # full-res px per work px
    if max(v.shape) > an.p.work_side:  # box-reduce huge crops: still >= 50x the final 20 px
        f = -(-max(v.shape) // an.p.work_side)
        v = np.asarray(Image.fromarray(v, mode="F").reduce(f))
        work_scale = float(f)
    v = tight(v)
    # MNIST's widths were measured at half its ink level: the same cut here, in v's 0..1 units
    lo = ink_floor(an)
    cut = float(np.clip((0.5 * an.level - lo) / max(an.level - lo, 1.0), 0.05, 0.95))
    width = stroke_width(v, cut) * BOX / max(v.shape)  # at the 28x28 scale
    v, filt = _fix_stroke(v, width, an.p)
    small = _scale_to_box(tight(v))
    image, shift = _paste_centred(small, an.p.com_target)
    bbox_full = (box[0], box[1], box[2], box[3])
    return PreprocessResult(
        image=image,
        inverted=an.sign < 0,
        bbox=bbox_full,
        size=(W, H),
        background=float(np.median(an.bg.mean(axis=2))),
        contrast=an.level,
        noise=an.noise,
        threshold=an.threshold,
        stroke_width=width,
        stroke_filter=int(round(filt * work_scale)),
        components=len(comps),
        shift=shift,
    )


def cut_out(an: Analysis, comps: list[dict[str, Any]], margin: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The components' ink at full resolution: (box in the picture's pixels, ``margin`` analysis px
    around their boxes; :func:`soft_ink` of it, only within the components grown by 2 px for the
    anti-aliased stroke edges, but not into the lines that cross them)."""
    from scipy import ndimage as ndi

    keep = ndi.binary_dilation(np.isin(an.labels, [c["label"] for c in comps]), iterations=2)
    if an.lines is not None and an.lines.any():
        keep &= ~an.lines
    l, t, r, b = comps_box(comps)
    H, W = an.pixels.shape[:2]
    s = an.scale
    box = (
        max(0, int((l - margin) * s)),
        max(0, int((t - margin) * s)),
        min(W, int(np.ceil((r + margin) * s))),
        min(H, int(np.ceil((b + margin) * s))),
    )
    return box, soft_ink(an, box, keep)


def soft_ink(an: Analysis, box: tuple[int, int, int, int], keep: np.ndarray) -> np.ndarray:
    """Ink 0..1 of the full-resolution crop ``box``: background (upsampled from the analysis copy)
    removed, 0 at the noise floor, 1 at the typical stroke level; outside the digit's mask 0."""
    x0, y0, x1, y1 = box
    crop = an.pixels[y0:y1, x0:x1].astype(np.float32)  # [bh, bw, C]
    bh, bw = crop.shape[:2]
    s = an.scale
    h, w = an.ink.shape
    src = (x0 / s, y0 / s, min(w, x1 / s), min(h, y1 / s))  # the same box in analysis coordinates
    bg = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(an.bg[..., k]), mode="F").resize(
                    (bw, bh), Image.Resampling.BILINEAR, box=src
                )
            )
            for k in range(crop.shape[2])
        ],
        axis=2,
    )
    ink = ink_map(crop, bg, an.sign)  # [bh, bw]
    m = np.asarray(Image.fromarray(keep.astype(np.uint8) * 255).resize((bw, bh), Image.Resampling.NEAREST, box=src)) > 0
    lo = ink_floor(an)
    hi = max(an.level, lo + 1.0)
    return (np.clip((ink - lo) / (hi - lo), 0.0, 1.0) * m).astype(np.float32)


def ink_floor(an: Analysis) -> float:
    """Ink below this is background (0) in the output: just above the noise, so the strokes keep
    their anti-aliased edges like MNIST's (the digit's mask already excludes the rest)."""
    return min(an.low, max(3.0 * an.noise, an.p.min_contrast / 4))


def tight(v: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """``v`` cropped to the box of its pixels above ``floor`` (of the max)."""
    on = v > floor * float(v.max())
    if not on.any():  # e.g. a faint 1-px stroke that stroke thinning removed
        raise ImageError("no digit found after background removal; try a photo with more contrast")
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    return v[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(v: np.ndarray, cut: float = 0.5) -> float:
    """Mean stroke width in pixels of ``v``'s mask (>= cut): 2 * area / boundary length, exact for
    long strokes of width >= 2 (a 1-px line reads as 2)."""
    from scipy import ndimage as ndi

    m = v >= cut
    area = int(m.sum())
    if area == 0:
        return 0.0
    edge = int((m & ~ndi.binary_erosion(m)).sum())
    return 2.0 * area / max(edge, 1)


def _fix_stroke(v: np.ndarray, width: float, p: Params = DEFAULT) -> tuple[np.ndarray, int]:
    """Thicken (max filter) strokes thinner than MNIST's 5th percentile to its median; thin (min
    filter) strokes far bolder than any in MNIST to its ~95th percentile. Returns (v, filter size)."""
    from scipy import ndimage as ndi

    if width <= 0 or p.stroke_thin <= width <= p.stroke_thick:
        return v, 0
    px_per_out = max(v.shape) / BOX  # work px per output px
    target = p.stroke_target if width < p.stroke_thin else p.thick_target
    k = int(round(abs(target - width) * px_per_out)) + 1  # a k-wide filter changes widths by k - 1
    if k < 2:
        return v, 0
    if width < p.stroke_thin:
        pad = np.pad(v, k)  # room to grow at the edges
        return ndi.maximum_filter(pad, size=k), k
    return ndi.minimum_filter(v, size=k), -k


def mnist_like(v: np.ndarray, com: tuple[float, float] = DEFAULT.com_target) -> np.ndarray:
    """Bright ink ``v`` (0..1, any size) made MNIST-like: cropped to its ink, the longer side 20 px, its
    centre of mass at ``com`` in 28x28. uint8 [28, 28]; all 0 where there is no ink."""
    if v.size == 0 or float(v.max()) <= 0.05:
        return np.zeros((OUT_SIZE, OUT_SIZE), np.uint8)
    return _paste_centred(_scale_to_box(tight(v)), com)[0]


def _scale_to_box(v: np.ndarray) -> np.ndarray:
    """Longer side -> 20 px, aspect kept, Lanczos (anti-aliased); peak rescaled to 1. float32 [h<=20, w<=20]."""
    h, w = v.shape
    f = BOX / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    out = np.asarray(Image.fromarray(v.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    out = np.clip(out, 0.0, None)
    top = float(out.max())
    return out / top if top > 0 else out


def _paste_centred(small: np.ndarray, com: tuple[float, float]) -> tuple[np.ndarray, tuple[int, int]]:
    """Paste ``small`` [h, w] (0..1) into 28x28 so its centre of mass is at ``com``
    (whole-pixel shift, kept inside the frame). Returns (uint8 [28, 28], shift from centred)."""
    h, w = small.shape
    total = float(small.sum())
    ys, xs = np.mgrid[:h, :w]
    cy = float((small * ys).sum()) / total if total else (h - 1) / 2
    cx = float((small * xs).sum()) / total if total else (w - 1) / 2
    top = int(np.clip(round(com[0] - cy), 0, OUT_SIZE - h))
    left = int(np.clip(round(com[1] - cx), 0, OUT_SIZE - w))
    out = np.zeros((OUT_SIZE, OUT_SIZE), np.float32)
    out[top : top + h, left : left + w] = small
    shift = (top - (OUT_SIZE - h) // 2, left - (OUT_SIZE - w) // 2)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), shift
