"""Strokes: an MNIST digit upscaled, thinned to its skeleton, redrawn with a wider or narrower pen."""

from __future__ import annotations

import numpy as np
from PIL import Image


def upscale(digit: np.ndarray, height: float) -> np.ndarray:
    """uint8 [28, 28] -> ink coverage float [s, s] in 0..1 with the 20-px digit about ``height`` tall."""
    side = max(28, int(round(height * 28 / 20)))
    return (
        np.asarray(Image.fromarray(digit).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32).clip(0, 255)
        / 255
    )


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
    small = np.asarray(Image.fromarray(alpha, mode="F").resize((s // k, s // k), Image.Resampling.BILINEAR))
    skel = zhang_suen(small >= 0.5)
    if k > 1:
        up = np.zeros((s, s), bool)
        big = np.kron(skel, np.ones((k, k), bool))
        up[: big.shape[0], : big.shape[1]] = big
        skel = zhang_suen(up)
    return np.clip(width / 2 + 0.5 - ndi.distance_transform_edt(~skel), 0, 1).astype(np.float32)
