"""Which test images a model gets wrong, and how: the galleries and confused pairs of every report."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from mnist_cnn.evaluation.metrics import EvalResult
from mnist_cnn.reports.html import digit_png

# --------------------------------------------------------------------------- galleries + pairs


def most_confident_mistakes(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to ``k`` wrong predictions, highest predicted probability first."""
    preds, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(preds != labels)
    return wrong[np.argsort(-conf[wrong], kind="stable")][:k]


def least_confident_correct(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to ``k`` right predictions, lowest predicted probability first."""
    preds, conf = probs.argmax(1), probs.max(1)
    right = np.flatnonzero(preds == labels)
    return right[np.argsort(conf[right], kind="stable")][:k]


def confused_pairs(cm: np.ndarray, classes: list[str] | tuple[str, ...], k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` unordered class pairs {a, b} with the most confusions ``cm[a, b] + cm[b, a]``
    (rows: true class), each with both directions, largest first; pairs never confused are left out."""
    sym = np.triu(cm + cm.T, 1)  # [C, C] upper triangle: each unordered pair once
    flat = np.argsort(-sym, axis=None, kind="stable")[:k]
    out = []
    for a, b in zip(*np.unravel_index(flat, sym.shape)):
        if sym[a, b] == 0:
            break
        ca, cb = classes[a], classes[b]
        out.append(
            {
                "pair": f"{ca} ↔ {cb}",
                "a": ca,
                "b": cb,
                "total": int(sym[a, b]),
                "a_as_b": int(cm[a, b]),
                "b_as_a": int(cm[b, a]),
                "breakdown": f"{ca}→{cb}: {int(cm[a, b])}, {cb}→{ca}: {int(cm[b, a])}",
            }
        )
    return out


def prediction_cards(
    images: np.ndarray, result: EvalResult, classes: list[str] | tuple[str, ...], idx: np.ndarray, top: int = 3
) -> list[tuple[bytes, str]]:
    """Gallery cards (PNG, caption HTML): test index, true and predicted class, top probabilities."""

    cards = []
    for i in idx:
        p = result.probs[i]
        t, y = int(result.labels[i]), int(result.preds[i])
        mark = "ok" if t == y else "bad"
        tops = " · ".join(f"{html.escape(classes[j])} {100 * p[j]:.1f}%" for j in np.argsort(-p)[:top])
        cap = (
            f"#{int(i)} true <b>{html.escape(classes[t])}</b><br>"
            f'<span class="{mark}">pred {html.escape(classes[y])}</span> {100 * p[y]:.1f}%<br><small>{tops}</small>'
        )
        cards.append((digit_png(images[i]), cap))
    return cards
