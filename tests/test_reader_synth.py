"""The reader's composed training rows: elastic bending of each digit (another writer's hand)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from mnist_cnn.training.reader_data import elastic, synth_rows


def _bar() -> np.ndarray:
    d = np.zeros((34, 34), np.float32)
    d[5:29, 15:19] = 1.0  # an upright stroke
    return d


def test_bending_moves_strokes_a_little_and_keeps_their_ink() -> None:
    d = _bar()
    assert np.array_equal(elastic(d, 0.0, np.random.default_rng(0)), d)
    bent = elastic(d, 34.0, np.random.default_rng(0))
    assert bent.dtype == d.dtype and bent.shape == d.shape
    assert not np.allclose(bent, d)  # the stroke moved
    assert abs(float(bent.sum()) - float(d.sum())) < 0.35 * float(d.sum())  # ...stretched or squeezed, not lost
    shift = np.subtract(ndi.center_of_mass(bent), ndi.center_of_mass(d))
    assert float(np.hypot(*shift)) < 3.0  # a bend, not a move to elsewhere
    assert np.array_equal(bent, elastic(d, 34.0, np.random.default_rng(0)))  # the generator alone decides
    stronger = elastic(d, 80.0, np.random.default_rng(0))
    assert np.abs(stronger - d).sum() > np.abs(bent - d).sum()


def test_composed_rows_with_bent_digits_are_valid_rows_and_differ() -> None:
    images = np.stack([(_bar() * 255).astype(np.uint8)[3:31, 3:31]] * 20)
    labels = np.ones(20, np.int64)
    plain = synth_rows(images, labels, 12, seed=4)
    bent = synth_rows(images, labels, 12, seed=4, bend=40.0)
    assert len(bent.texts) == 12 and all(set(t) == {"1"} and 2 <= len(t) <= 8 for t in bent.texts)
    assert all(c.dtype == np.uint8 and c.shape[0] == 32 and c.shape[1] % 4 == 0 for c in bent.crops)
    assert any(a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(plain.crops, bent.crops, strict=True))
