"""Shared fixtures: tiny synthetic IDX data sets (made in the test) and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import torch

torch.set_num_threads(1)  # tests are tiny; one thread keeps them predictable on a busy 2-core box

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("MNIST_CNN_REAL_DATA", REPO.parent / "shared" / "data" / "mnist"))


def synthetic_digits(n: int, seed: int = 0, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k is a bright bar at a class-specific position plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r = 4 + 2 * int(k)
        images[i, r : r + 2, 4:24] = 255
        images[i, 4:24, r : r + 2] = 200
    return images, labels.astype(np.uint8)


def write_dataset(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    from mnist_cnn.data.idx import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = synthetic_digits(n, s)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A folder with a valid tiny MNIST-format data set (600 train / 200 test)."""
    return write_dataset(tmp_path / "data")


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {REAL_DATA} (set MNIST_CNN_REAL_DATA)")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's cache or data-dir variable by accident."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_CNN_DATA_DIR", raising=False)
