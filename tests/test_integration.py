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
