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
        out.crops.append(np.clip(np.rint(row.image * 255), 0, 255).astype(np.uint8))
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
    ends = np.cumsum(z["widths"])
    crops = [z["flat"][:, e - w : e] for e, w in zip(ends, z["widths"], strict=True)]
    return RowSet(crops, [str(t) for t in z["texts"]], [str(c) for c in z["conditions"]], int(z["missed"]))
