"""Integration tests on the real MNIST in ../shared/data/mnist (skipped with a reason when absent)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.integration


def test_real_data_loads_with_expected_shapes(real_data):
    from mnist_cnn.data.datasets import load_dataset

    ds = load_dataset("mnist", real_data)
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert sorted(set(ds.train_labels.tolist())) == list(range(10))
    # the test files are the official ones, byte for byte
    assert (
        ds.checksums["t10k-images-idx3-ubyte.gz"] == "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    )


@pytest.mark.slow  # trains on real MNIST
def test_model1_one_epoch_on_a_few_thousand_images(real_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        "--model",
        "model1",
        "--data-dir",
        str(real_data),
        "--epochs",
        "1",
        "--train-subset",
        "4000",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_accuracy"] > 0.85  # chance is 0.10
    r = run_cli("evaluate", str(out), "--data-dir", str(real_data), "--split", "val", "--json")
    assert r.exit_code == 0, r.output
    val = json.loads(r.stdout)
    assert val["n"] == 5000 and val["accuracy"] == pytest.approx(m["val_accuracy"], abs=1e-9)


@pytest.mark.slow  # trains on real MNIST
def test_fast99_recipe_trains_on_real_data(real_data, tmp_path):
    r = run_cli(
        "train",
        "--recipe",
        "fast99",
        "--data-dir",
        str(real_data),
        "--train-subset",
        "10000",
        "--out",
        str(tmp_path / "f"),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "f" / "metrics.json").read_text())
    assert m["test_accuracy"] > 0.95


def test_the_bundled_reader_reads_photographed_numbers_of_test_digits(real_data):
    """A sanity floor on real digits (benchmarks/numbers.py has the figures): 40 numbers of 2-8 MNIST
    test digits written on a page (spaced, tight, touching, ruled) and photographed; the bundled
    reader reads at least 85% exactly, and its string probability is higher when it is right."""
    import numpy as np

    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.errors import ImageError
    from mnist_cnn.inference.reader import DEFAULT_READER, NumberReader
    from mnist_cnn.synth.numbers import render_number

    if not DEFAULT_READER.exists():
        pytest.skip(f"no number reader bundled at {DEFAULT_READER}")
    ds = load_dataset("mnist", real_data)
    reader = NumberReader()
    rng = np.random.default_rng(7)
    right, probs = [], []
    for k in range(40):
        idx = rng.integers(0, len(ds.test_labels), int(rng.integers(2, 9)))
        cond = ("spaced", "tight", "touching", "ruled")[k % 4]
        data, info = render_number(ds.test_images[idx], cond, rng, ds.test_labels[idx])
        try:
            reading = reader.read(data)
        except ImageError:
            right.append(False)
            probs.append(0.0)
            continue
        right.append(reading.number == info["text"])
        probs.append(reading.probability)
    assert np.mean(right) >= 0.85, np.mean(right)
    ok, p = np.array(right), np.array(probs)
    assert p[ok].mean() > p[~ok].mean() if (~ok).any() else True
