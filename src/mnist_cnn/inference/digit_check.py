"""A row's candidate strings checked digit by digit against the crop's ink.

The CRNN reads a row whole, which is what touching digits need; but where a digit stands apart from its
neighbours, the digit classifier (the bundled CNN, trained on single digits) can read it on its own, and
a piece of ink the size of a digit that no character of a string falls on says the string left a digit
out (most often a thin "1"). :class:`DigitCheck` turns both into a log-score per candidate string:

    weight * sum over the string's separate digits of log q(digit)  -  penalty * uncovered pieces

where ``q`` is the classifier's probability of the string's character for that digit's ink. The reader
adds it to each candidate's log-probability and renormalises within the candidates (the weights are
tuned on validation photos and kept in the reader file's ``decoding``, with the calibration they were
fitted with).

A string's characters sit at their peak frames on the string's most probable alignment
(:func:`~mnist_cnn.inference.ctc.align`). A piece of ink (8-connected, above ``INK`` of the crop's peak,
at least ``MIN_SHARE`` of the heaviest piece's mass) belongs to the one character whose position falls
within its columns; a piece spanning two characters' positions (touching digits) makes both not
separate; a piece under no character goes to the nearest one, and counts as *uncovered* when it is at
least ``DIGIT_HEIGHT`` of the crop's ink height tall.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

INK = 0.2  # a crop pixel is ink above this share of the peak
MIN_SHARE = 0.08  # pieces lighter than this share of the heaviest are specks (not digits, not parts)
DIGIT_HEIGHT = 10 / 24  # an uncovered piece this share of the ink's height or taller is a digit left out
Piece = tuple[int, int, int, int]  # (label, first column, column after the last, height)


@dataclass
class Pieces:
    """A crop's pieces of ink: the label map and each piece's columns and height."""

    labels: np.ndarray  # int [32, W]
    items: list[Piece]


def find_pieces(image: np.ndarray) -> Pieces:
    """The pieces of ink of a reader crop (float [32, W], peak 1), specks left out."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(image > INK, structure=np.ones((3, 3)))
    if n == 0:
        return Pieces(labels, [])
    mass = np.asarray(ndi.sum(image, labels, index=np.arange(1, n + 1)))
    items = [
        (i + 1, s[1].start, s[1].stop, s[0].stop - s[0].start)
        for i, s in enumerate(ndi.find_objects(labels))
        if mass[i] >= MIN_SHARE * mass.max()
    ]
    return Pieces(labels, items)


def assign(pieces: list[Piece], xs: list[float]) -> tuple[list[tuple[int, ...] | None], list[Piece]]:
    """Per character (at crop column ``xs[k]``): the labels of its pieces when it stands apart (None when
    a piece also holds another character, or none is its own); and the pieces under no character."""
    owned: list[list[int]] = [[] for _ in xs]
    shared: set[int] = set()
    uncovered = []
    for piece in pieces:
        label, x0, x1, _ = piece
        inside = [k for k, x in enumerate(xs) if x0 - 1 <= x <= x1 + 1]
        if len(inside) >= 2:
            shared.update(inside)
            continue
        if not inside:
            uncovered.append(piece)
            if not xs:
                continue
            inside = [int(np.argmin([abs((x0 + x1) / 2 - x) for x in xs]))]
        owned[inside[0]].append(label)
    return [None if k in shared or not own else tuple(sorted(own)) for k, own in enumerate(owned)], uncovered


def digit_image(image: np.ndarray, labels: np.ndarray, keep: tuple[int, ...]) -> np.ndarray:
    """The pieces ``keep`` of a crop as an MNIST-like uint8 [28, 28] (longer side 20 px, centre of mass)."""
    from mnist_cnn.inference.preprocessing.render import mnist_frame

    return mnist_frame(np.where(np.isin(labels, keep), image, 0.0))


@dataclass
class DigitCheck:
    """Scores candidate strings of one crop (see the module's docstring)."""

    classifier: Callable[[np.ndarray], np.ndarray]  # uint8 [N, 28, 28] -> probabilities [N, 10]
    weight: float
    penalty: float

    def scores(self, image: np.ndarray, texts: list[str], xs: list[list[float]]) -> tuple[np.ndarray, list[dict]]:
        """Per text (its characters at crop columns ``xs``): the log-score to add, and the classifier's
        probabilities [10] of each separate character (by position)."""
        pieces = find_pieces(image)
        found = [assign(pieces.items, x) for x in xs]
        keys = list(dict.fromkeys(k for owners, _ in found for k in owners if k is not None))
        probs: dict[tuple[int, ...], np.ndarray] = {}
        if keys and self.weight > 0:
            batch = np.stack([digit_image(image, pieces.labels, k) for k in keys])
            probs = dict(zip(keys, self.classifier(batch), strict=True))
        tall = DIGIT_HEIGHT * _ink_height(image)
        out, per_digit = [], []
        for text, (owners, uncovered) in zip(texts, found, strict=True):
            q = {j: probs[k] for j, k in enumerate(owners) if k is not None and k in probs}
            logq = sum(float(np.log(max(float(q[j][int(text[j])]), 1e-9))) for j in q)
            missed = sum(1 for p in uncovered if p[3] >= tall)
            out.append(self.weight * logq - self.penalty * missed)
            per_digit.append(q)
        return np.array(out), per_digit


def load_classifier(path: str | os.PathLike[str]) -> Callable[[np.ndarray], np.ndarray]:
    """A classifier file (safetensors + metadata) as uint8 [N, 28, 28] -> calibrated probabilities [N, C]."""
    from mnist_cnn.evaluation.metrics import predict_logits
    from mnist_cnn.models.files import load_model, temperature_of

    model, meta = load_model(path)
    t, norm = temperature_of(meta, path), meta["normalisation"]

    def probabilities(images: np.ndarray) -> np.ndarray:
        return (predict_logits(model, images, norm["mean"], norm["std"]) / t).softmax(1).numpy()

    return probabilities


def _ink_height(image: np.ndarray) -> int:
    rows = np.flatnonzero(image.max(axis=1) > INK)
    return int(rows[-1] - rows[0] + 1) if rows.size else image.shape[0]
