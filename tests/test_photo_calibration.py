"""benchmarks/photo_calibration.py: the temperature fitted on clean validation digits and their page
photos, half the weight each. Synthetic scores and a stand-in predictor: no model, no MNIST files."""

from __future__ import annotations

import numpy as np

from benchmarks import photo_calibration as pc
from mnist_cnn.evaluation.calibration import fit_temperature, nll
from mnist_cnn.inference.predictors import Predictor
from tests.conftest import synthetic_digits


def _scores(n: int, margin: float, wrong: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose top class is right except for a ``wrong`` fraction, at the same margin."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    top = np.where(rng.random(n) < wrong, (y + 1) % 10, y)
    z = rng.normal(0, 0.1, (n, 10))
    z[np.arange(n), top] += margin
    return z, y


def test_the_balanced_temperature_weighs_both_sets_equally() -> None:
    clean, photos = _scores(3000, 3.0, 0.003, 0), _scores(600, 3.0, 0.12, 1)
    t_clean, t_photos = fit_temperature(*clean), fit_temperature(*photos)
    t = pc.balanced_temperature(clean, photos)
    assert t_clean < t < t_photos  # photos that are wrong more often at the same margin want a larger T
    # half the weight each: the mean of the two sets' mean NLLs is at its minimum there
    loss = lambda s: nll(*clean, s) + nll(*photos, s)  # noqa: E731
    assert loss(t) <= min(loss(t * 0.97), loss(t * 1.03))
    # not the pooled fit, which the 5x larger clean set would dominate
    pooled = fit_temperature(np.concatenate([clean[0], photos[0]]), np.concatenate([clean[1], photos[1]]))
    assert pooled < t


class _Stub(Predictor):
    """A predictor whose calibrated probabilities put 0.9 on the digit's label (T = 0.5)."""

    temperature = 0.5

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        p = np.full((len(images), 10), 0.1 / 9)
        p[np.arange(len(images)), self.labels[: len(images)]] = 0.9
        return p


def test_photo_scores_render_preprocess_and_undo_the_temperature() -> None:
    x, y = synthetic_digits(4, seed=3)
    y = y.astype(int)
    out = pc.photo_scores(_Stub(y), x, y, ["ruled"])["ruled"]
    assert out["n"] == 4 and len(out["scores"]) == len(out["labels"]) <= 4
    z = out["scores"]
    p = np.exp(z / 0.5 - np.log(np.exp(z / 0.5).sum(1, keepdims=True)))  # softmax(scores / T) = the stub's
    assert np.allclose(p.max(1), 0.9)
    per = pc.photo_scores(_Stub(y), x, y, ["ruled", "plain"], {"ruled": 2})  # fewer renderings of one condition
    assert per["ruled"]["n"] == 2 and per["plain"]["n"] == 4 and len(per["ruled"]["labels"]) <= 2


def test_faint_photos_get_a_contrast_power_and_clean_digits_keep_the_temperature() -> None:
    from mnist_cnn.evaluation.calibration import contrast_factors

    clean = _scores(3000, 3.0, 0.003, 0)
    bold, faint = _scores(500, 3.0, 0.02, 1), _scores(500, 3.0, 0.3, 2)  # the same margin, faint ink wrong more
    photos = (np.concatenate([bold[0], faint[0]]), np.concatenate([bold[1], faint[1]]))
    contrast = np.concatenate([np.full(500, 220.0), np.full(500, 60.0)])
    t, q = pc.contrast_calibration(clean, photos, contrast)
    assert q > 0.3  # faint photos want a higher temperature than bold ones
    w = pc.halves(3000, 1000)
    z = np.concatenate([clean[0], photos[0]])
    y = np.concatenate([clean[1], photos[1]])
    f = contrast_factors(np.concatenate([np.full(3000, np.nan), contrast]), q)[:, None]
    assert nll(z / f, y, t, weights=w) < nll(z, y, pc.balanced_temperature(clean, photos), weights=w)
