"""The number reader's training rows: numbers of MNIST digits rendered as photographed pages
(:func:`mnist_cnn.synth.numbers.render_number`, every condition), read back through the same row
finder the reader uses at prediction time (:func:`~mnist_cnn.inference.preprocessing.preprocess_rows`),
so the reader learns from exactly what it will be given: lines it crosses, a box's side, blur, noise.

A page whose found row does not hold every digit of the number (a missed or split row) is not used
for training (its label would be wrong for the crop) and is counted. Pages are rendered in a pool of
processes, each from its own seed, so a set is the same for the same seed and worker-independent.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.errors import MnistCnnError

LENGTHS = (2, 8)  # digits per number, inclusive
CHUNK = 200  # pages per task


@dataclass
class RowSet:
    """Row crops (uint8 [32, W], ink bright) and their strings."""

    crops: list[np.ndarray] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    missed: int = 0  # pages whose found row does not hold the whole number

    def extend(self, other: RowSet) -> None:
        self.crops += other.crops
        self.texts += other.texts
        self.conditions += other.conditions
        self.missed += other.missed


def covers(box: tuple[int, int, int, int], digit_boxes: list[list[int]]) -> bool:
    """Whether ``box`` holds the centre of every digit's box."""
    left, top, right, bottom = box
    return all(left <= (d[0] + d[2]) / 2 <= right and top <= (d[1] + d[3]) / 2 <= bottom for d in digit_boxes)


def pages(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, height: tuple[int, int] = (28, 100)
) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """``n`` photographed numbers drawn from ``images``/``labels``: (condition, JPEG, what was drawn);
    conditions at random, ``all`` a third of the time."""
    from mnist_cnn.synth.numbers import NUMBER_CONDITIONS, render_number

    rng = np.random.default_rng(seed)
    single = NUMBER_CONDITIONS[:-1]
    for _ in range(n):
        cond = "all" if rng.random() < 1 / 3 else str(single[int(rng.integers(len(single)))])
        idx = rng.integers(0, len(images), int(rng.integers(LENGTHS[0], LENGTHS[1] + 1)))
        data, info = render_number(images[idx], cond, rng, labels[idx], height=height)
        yield cond, data, info


def render_rows(
    images: np.ndarray, labels: np.ndarray, n: int, seed: int, height: tuple[int, int] = (28, 100)
) -> RowSet:
    """:func:`pages` read back into row crops (the row holding the whole number)."""
    from mnist_cnn.inference.preprocessing import preprocess_rows
    from mnist_cnn.inference.preprocessing.rows import as_uint8

    out = RowSet()
    for cond, data, info in pages(images, labels, n, seed, height):
        try:
            rows = preprocess_rows(data)
        except MnistCnnError:
            out.missed += 1
            continue
        row = next((r for r in rows if covers(r.box, info["boxes"])), None)
        if row is None:
            out.missed += 1
            continue
        out.crops.append(as_uint8(row.image))
        out.texts.append(info["text"])
        out.conditions.append(cond)
    return out


def read_pages(reader: Any, images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Photos of :func:`pages` read end to end by ``reader`` (a ``NumberReader``): each answer's string
    probability (before end-to-end calibration) and whether it was right. The answer is the row whose
    box holds most of the number's digits; a photo where no digit was found gives no answer."""
    from mnist_cnn.inference.preprocessing import preprocess_rows

    probs, right = [], []
    for _, data, info in pages(images, labels, n, seed):
        try:
            rows = preprocess_rows(data)
        except MnistCnnError:
            continue
        row = max(rows, key=lambda r: sum(covers(r.box, [b]) for b in info["boxes"]))
        reading = reader.read_crop(row)
        probs.append(reading.raw_probability)
        right.append(reading.number == info["text"])
    return np.array(probs), np.array(right)


def make_rows(images: np.ndarray, labels: np.ndarray, n: int, seed: int, workers: int = 1, **kw: Any) -> RowSet:
    """:func:`render_rows` for ``n`` pages in chunks of :data:`CHUNK`, in ``workers`` forked processes."""
    chunks = [(images, labels, min(CHUNK, n - i), seed * 100_003 + i // CHUNK) for i in range(0, n, CHUNK)]
    out = RowSet()
    if workers <= 1 or len(chunks) == 1:
        for c in chunks:
            out.extend(render_rows(*c, **kw))
        return out
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        for part in pool.map(_render_chunk, [(c, kw) for c in chunks]):
            out.extend(part)
    return out


def _render_chunk(job: tuple[tuple, dict[str, Any]]) -> RowSet:
    args, kw = job
    return render_rows(*args, **kw)


def save_rows(path: str, rows: RowSet) -> None:
    """One .npz: the crops concatenated along the width, their widths, strings and conditions."""
    widths = np.array([c.shape[1] for c in rows.crops], np.int32)
    flat = np.concatenate(rows.crops, axis=1) if rows.crops else np.zeros((32, 0), np.uint8)
    np.savez(
        path,
        flat=flat,
        widths=widths,
        texts=np.array(rows.texts),
        conditions=np.array(rows.conditions),
        missed=rows.missed,
    )


def load_rows(path: str) -> RowSet:
    z = np.load(path)
    flat, widths = z["flat"], z["widths"]  # each z[...] reads the file again: once
    ends = np.cumsum(widths)
    crops = [flat[:, e - w : e] for e, w in zip(ends, widths, strict=True)]
    return RowSet(crops, [str(t) for t in z["texts"]], [str(c) for c in z["conditions"]], int(z["missed"]))


def elastic(digit: np.ndarray, alpha: float, rng: np.random.Generator, sigma: float = 4.0) -> np.ndarray:
    """``digit`` (float [H, W]) bent by a smooth random displacement field (Simard et al. 2003): each
    pixel is sampled from where a Gaussian-smoothed (``sigma`` px) uniform field of strength ``alpha``
    points; at alpha 34 on a 28-px digit a stroke moves ~1-2 px, as another writer's hand would."""
    from scipy import ndimage as ndi

    h, w = digit.shape
    dy, dx = (ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma, mode="constant") * alpha for _ in range(2))
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return ndi.map_coordinates(digit, [yy + dy, xx + dx], order=1, mode="constant").astype(digit.dtype)


def synth_rows(images: np.ndarray, labels: np.ndarray, n: int, seed: int, bend: float = 0.0) -> RowSet:
    """``n`` rows composed directly at the reader's scale (no page, no camera: ~1 ms each), for many
    more digit shapes and neighbour pairs than rendered pages give: 2-8 digits at 0.85-1.15x size,
    each a little up or down, gaps from wide to overlapping (ink max-blended), strokes thinned or
    thickened, a stray line across sometimes, blur and noise. ``bend`` > 0: each digit is also bent
    by :func:`elastic` with a strength drawn from 0..``bend`` (shapes no training writer made)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    out = RowSet()
    for _ in range(n):
        idx = rng.integers(0, len(images), int(rng.integers(LENGTHS[0], LENGTHS[1] + 1)))
        lo, hi = [(0.02, 0.5), (0.3, 0.8), (0.06, 0.2), (-0.1, -0.02), (-0.22, -0.1)][int(rng.integers(5))]
        canvas = np.zeros((60, 40 * len(idx) + 40), np.float32)
        x = 10.0
        for i in idx:
            s = int(round(34 * rng.uniform(0.85, 1.15)))  # 28 px frame whose 20-px digit becomes ~24 px
            d = np.asarray(Image.fromarray(images[i]).resize((s, s), Image.Resampling.BILINEAR), np.float32) / 255
            d = elastic(d, rng.uniform(0, bend), rng) if bend > 0 else d
            cols = np.flatnonzero(d.max(0) > 0.1)
            d = d[:, cols[0] : cols[-1] + 1] if cols.size else d
            y = int(round((60 - s) / 2 + rng.uniform(-2.5, 2.5)))
            xi = int(round(x))
            region = canvas[y : y + s, xi : xi + d.shape[1]]
            np.maximum(region, d[: region.shape[0], : region.shape[1]], out=region)
            x += d.shape[1] + rng.uniform(lo, hi) * 24
        if rng.random() < 0.3:
            canvas = (ndi.grey_dilation if rng.random() < 0.5 else ndi.grey_erosion)(canvas, size=(2, 2))
        if rng.random() < 0.15:  # a stray piece of a line the row finder did not take out
            yl = int(rng.integers(15, 45))
            x0 = int(rng.integers(0, canvas.shape[1] // 2))
            canvas[yl : yl + int(rng.integers(1, 3)), x0 : x0 + int(rng.integers(10, 60))] = rng.uniform(0.5, 1)
        crop = _to_reader_scale(canvas, rng)
        if crop is None:
            continue
        out.crops.append(crop)
        out.texts.append("".join(str(int(labels[i])) for i in idx))
        out.conditions.append("synthetic")
    return out


def _to_reader_scale(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A composed row cut to its ink, scaled so the ink is 24 px tall, in the reader's 32-px crop."""
    from scipy import ndimage as ndi

    from mnist_cnn.inference.preprocessing.rows import INK_HEIGHT, as_uint8, to_reader_crop

    on = canvas > 0.1
    if not on.any():
        return None
    ys, xs = np.flatnonzero(on.any(1)), np.flatnonzero(on.any(0))
    v = canvas[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    f = INK_HEIGHT / v.shape[0]
    w = max(1, round(v.shape[1] * f))
    v = np.asarray(Image.fromarray(v).resize((w, INK_HEIGHT), Image.Resampling.BILINEAR))
    if rng.random() < 0.3:
        v = ndi.gaussian_filter(v, rng.uniform(0.4, 1.0))
    v = np.clip(v * rng.uniform(0.7, 1.0) + rng.normal(0, rng.uniform(0, 0.06), v.shape), 0, 1)
    return as_uint8(to_reader_crop(v))
