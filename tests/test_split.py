"""The validation split: the same indices as scikit-learn's stratified train_test_split, without it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from mnist_cnn.data.datasets import train_val_split
from tests.conftest import synthetic_digits


def _sklearn(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """What train_val_split returned when it called scikit-learn (mnist-cnn 0.1/0.2)."""
    n = len(labels)
    try:
        tr, va = train_test_split(np.arange(n), test_size=val_size, stratify=labels, random_state=seed)
    except ValueError:
        tr, va = train_test_split(np.arange(n), test_size=val_size, random_state=seed)
    return np.sort(tr), np.sort(va)


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
@pytest.mark.parametrize("n, val_size", [(600, 100), (600, 1), (600, 599), (1000, 333), (60_000, 5000)])
def test_same_split_as_scikit_learn(n: int, val_size: int, seed: int):
    rng = np.random.default_rng(seed)
    labels = rng.choice(10, size=n, p=np.linspace(1, 3, 10) / np.linspace(1, 3, 10).sum()).astype(np.uint8)
    for got, want in zip(train_val_split(labels, val_size, seed), _sklearn(labels, val_size, seed), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([0, 0, 1, 1, 2, 2, 3, 3, 4], np.uint8),  # class 4 has one member: plain shuffled split
        np.array([0] * 50 + [1] * 3, np.uint8),  # rare class
        np.arange(20, dtype=np.uint8) % 7,
    ],
)
@pytest.mark.parametrize("val_size", [1, 3, 5])
def test_same_split_for_awkward_labels(labels: np.ndarray, val_size: int):
    if val_size >= len(labels):
        pytest.skip("val_size must be smaller than the set")
    for seed in range(5):
        got, want = train_val_split(labels, val_size, seed), _sklearn(labels, val_size, seed)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_synthetic_set_split_is_stratified_and_disjoint():
    _, labels = synthetic_digits(600)
    tr, va = train_val_split(labels, 100, 0)
    assert len(va) == 100 and not set(tr) & set(va) and len(tr) + len(va) == 600
    assert np.bincount(labels[va], minlength=10).tolist() == [10] * 10


@pytest.mark.integration
def test_same_split_as_scikit_learn_on_real_mnist(real_data):
    from mnist_cnn.data.datasets import load_dataset

    labels = load_dataset("mnist", real_data).train_labels
    for seed in range(3):
        for got, want in zip(train_val_split(labels, 5000, seed), _sklearn(labels, 5000, seed), strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", range(4))
def test_normalisation_equals_the_float_computation(seed: int):
    from mnist_cnn.data.datasets import normalisation

    images = np.random.default_rng(seed).integers(0, 256, size=(50 + seed, 28, 28), dtype=np.uint8)
    x = images.astype(np.float64) / 255.0
    mean, std = normalisation(images)
    assert mean == pytest.approx(float(x.mean()), rel=1e-12) and std == pytest.approx(float(x.std()), rel=1e-12)
    assert normalisation(np.zeros((2, 28, 28), np.uint8)) == (0.0, 1.0)  # blank: std 1, never a division by 0
