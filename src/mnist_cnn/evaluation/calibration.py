"""Calibration: a temperature that makes the softmax's probabilities mean what they say.

A model trained with label smoothing (or over-fitted) gives probabilities that are too low (or too
high) for how often it is right. Temperature scaling divides the logits by one number ``T`` fitted
on held-out data (the validation split) to minimise the negative log-likelihood of
``softmax(logits / T)``; the predicted class never changes, only how sure the model says it is.

A photo's answer gets one more factor. Preprocessing measures how clearly the ink stands out of
the paper's noise (``PreprocessResult.signal``: twice the ink's contrast over the noise, on a 0..255
scale); ink lost in noise (a hairline ballpoint shrunk into a small JPEG) is where a page photo's
answers go wrong while the softmax still says 0.9. For such an image the temperature is
``T * (255 / signal) ** power`` (:func:`contrast_factors`), ``power`` fitted with ``T``
(:func:`fit_contrast_temperature`). Images that were not preprocessed (MNIST-format tensors) and
clean scans (signal 255) keep ``T``.

Everything here takes *scores*: logits, or log-probabilities (e.g. the log of an ensemble's mean
probabilities); softmax is the same for both. NumPy only (no torch), float64 inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

T_MIN, T_MAX = 0.05, 20.0  # the range a fitted temperature is searched (and accepted) in
POWER_MAX = 3.0  # the range [0, POWER_MAX] a fitted contrast power is searched in
FULL_CONTRAST = 255.0  # grey levels: ink as far from the paper as 8-bit images go
N_BINS = 15  # confidence bins of the expected calibration error
_GOLDEN = (math.sqrt(5) - 1) / 2


def log_softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``log softmax(scores / T)`` row by row, float64."""
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``softmax(scores / T)`` row by row (float64; the caller casts)."""
    return np.exp(log_softmax(scores, temperature))


def log_probs(probs: np.ndarray) -> np.ndarray:
    """``log p`` (float64, zeros clipped to the smallest normal float): scores for probabilities."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), np.finfo(np.float64).tiny, None))


def rescale_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities ``p`` -> ``softmax(log p / T)`` (float32): the same as dividing the logits by T."""
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float32)
    return softmax(log_probs(probs), temperature).astype(np.float32)


def nll(scores: np.ndarray, labels: np.ndarray, temperature: float = 1.0, weights: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(scores / T)``; with ``weights`` [N],
    the weighted mean (a row of weight 2 counts as that row twice)."""
    y = np.asarray(labels, dtype=np.int64)
    losses = -log_softmax(scores, temperature)[np.arange(len(y)), y]
    return float(losses.mean() if weights is None else np.average(losses, weights=weights))


def fit_temperature(
    scores: np.ndarray, labels: np.ndarray, tol: float = 1e-6, weights: np.ndarray | None = None
) -> float:
    """The ``T`` in ``[T_MIN, T_MAX]`` that minimises :func:`nll` (golden-section search on ``log T``;
    the NLL is convex in ``1/T``, so it has one minimum there); ``weights`` as for :func:`nll`."""
    if len(labels) == 0:
        raise ValueError("fit_temperature needs at least one labelled example")
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)

    def loss(log_t: float) -> float:
        return nll(s, y, math.exp(log_t), weights)

    return math.exp(_golden_min(loss, math.log(T_MIN), math.log(T_MAX), tol))


def _golden_min(loss: Any, lo: float, hi: float, tol: float) -> float:
    """The minimiser of a unimodal ``loss`` on ``[lo, hi]`` (golden-section search)."""
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = loss(a), loss(b)
    while hi - lo > tol:
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = loss(b)
    return (lo + hi) / 2


def contrast_factors(contrast: Any, power: float) -> np.ndarray:
    """Per image, the factor its temperature is multiplied by: ``(255 / contrast) ** power`` [N]
    (contrast clipped to 1..255). NaN (an image that was not preprocessed) or ``power`` 0: 1."""
    c = np.asarray(contrast, dtype=np.float64).reshape(-1)
    f = (FULL_CONTRAST / np.clip(np.nan_to_num(c, nan=FULL_CONTRAST), 1.0, FULL_CONTRAST)) ** power
    return np.asarray(f, dtype=np.float64)


def contrast_power(calibration: Any, source: Any) -> float:
    """A model's ``calibration.contrast_power`` (0 when the record or the field is absent), or a
    :class:`~mnist_cnn.errors.CheckpointError` naming the file when it is not a number in ``[0, POWER_MAX]``."""
    from mnist_cnn.errors import CheckpointError

    q = calibration.get("contrast_power", 0.0) if isinstance(calibration, dict) else 0.0
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 <= q <= POWER_MAX:
        raise CheckpointError(
            f"{source}: metadata field 'calibration.contrast_power' must be a number from 0 to {POWER_MAX:g}, "
            f"not {q!r:.40}; re-fit it with benchmarks/photo_calibration.py --write, or remove the field"
        )
    return float(q)


def soften(probs: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Calibrated probabilities [N, C] with row i's temperature multiplied by ``factors[i]``:
    ``softmax(log p / f)`` (exact: ``log p`` is the scaled logits up to a constant). float32."""
    p = np.asarray(probs)
    if len(p) == 0 or np.all(factors == 1.0):
        return np.asarray(p, dtype=np.float32)
    return softmax(log_probs(p) / np.asarray(factors, dtype=np.float64)[:, None]).astype(np.float32)


def fit_contrast_temperature(
    scores: np.ndarray, labels: np.ndarray, contrast: np.ndarray, weights: np.ndarray | None = None, tol: float = 1e-4
) -> tuple[float, float]:
    """``(T, power)`` minimising :func:`nll` of ``softmax(scores / (T * contrast_factors(contrast, power)))``:
    for each power the best ``T`` (:func:`fit_temperature` on the scores divided by their factors), the
    power by golden-section search on ``[0, POWER_MAX]``. ``contrast`` NaN: a row without one (factor 1)."""
    s = np.asarray(scores, dtype=np.float64)

    def fitted(power: float) -> tuple[float, float]:
        scaled = s / contrast_factors(contrast, power)[:, None]
        t = fit_temperature(scaled, labels, weights=weights)
        return t, nll(scaled, labels, t, weights)

    power = _golden_min(lambda q: fitted(q)[1], 0.0, POWER_MAX, tol)
    if fitted(0.0)[1] <= fitted(power)[1]:  # the edge of the range (the search never evaluates it)
        power = 0.0
    return fitted(power)[0], power


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins: per bin its edges, how many answers fell in it, their mean
    confidence and how many of them were right (NaN for an empty bin)."""

    edges: np.ndarray  # [n_bins + 1]
    counts: np.ndarray  # [n_bins]
    confidence: np.ndarray  # [n_bins]
    accuracy: np.ndarray  # [n_bins]

    @property
    def ece(self) -> float:
        n = self.counts.sum()
        if n == 0:
            return float("nan")
        used = self.counts > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.counts[used] * gap).sum() / n)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> ReliabilityBins:
    """Bin the top-class probability of each row of ``probs`` [N, C] into ``n_bins`` equal bins."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    conf = p.max(axis=1) if len(p) else np.zeros(0)
    right = (p.argmax(axis=1) == y).astype(np.float64) if len(p) else np.zeros(0)
    return confidence_bins(conf, right, n_bins)


def confidence_bins(conf: np.ndarray, right: np.ndarray, n_bins: int = N_BINS) -> ReliabilityBins:
    """Bin answers by their confidence ``conf`` [N] (0..1); ``right`` [N]: whether each was right."""
    conf = np.asarray(conf, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    which = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(which, weights=conf, minlength=n_bins) / counts
        accuracy = np.bincount(which, weights=right, minlength=n_bins) / counts
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), counts, confidence, accuracy)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> float:
    """ECE: the mean |accuracy - confidence| over equal-width confidence bins, weighted by their size."""
    return reliability_bins(probs, labels, n_bins).ece


def calibration_metrics(scores: np.ndarray, labels: np.ndarray, temperature: float) -> dict[str, float]:
    """NLL and ECE of ``scores`` before (T = 1) and after dividing them by ``temperature``."""
    return {
        "nll_before": nll(scores, labels),
        "nll_after": nll(scores, labels, temperature),
        "ece_before": expected_calibration_error(softmax(scores), labels),
        "ece_after": expected_calibration_error(softmax(scores, temperature), labels),
    }


def calibration_record(scores: np.ndarray, labels: np.ndarray, split: str = "validation split") -> dict[str, Any]:
    """Fit a temperature on ``scores``/``labels`` -> the ``calibration`` metadata a model file stores."""
    t = fit_temperature(scores, labels)
    return {
        "method": "temperature",
        "temperature": t,
        "fitted_on": f"{split} (n={len(labels)})",
        **calibration_metrics(scores, labels, t),
    }


def not_fitted(reason: str) -> dict[str, Any]:
    """The ``calibration`` metadata of a model that has no held-out data to fit on: T = 1, and why."""
    return {"method": "none", "temperature": 1.0, "fitted_on": None, "reason": reason}
