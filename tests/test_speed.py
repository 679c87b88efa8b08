"""The speed machinery (issue 13): optimiser kernel choice, what-ran records, and the side-by-side
benchmark's own pieces (the Keras reference's IDX reader, the published reference recipe) on tiny data.
Timings themselves are never asserted here: benchmarks/speed.py measures them."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import keras_reference, speed
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ConfigError
from mnist_cnn.models.registry import create_model
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.engine import train
from mnist_cnn.training.steps import make_optimizer, optimizer_impl


@pytest.mark.parametrize(
    ("choice", "device", "expected"),
    [
        ("auto", "cpu", {"fused": True}),  # measured faster on CPU, and resume stays exact
        ("auto", "cuda", {"fused": True}),
        ("auto", "mps", {}),  # torch's own choice where fused kernels are not certain
        ("auto", "xpu", {}),
        ("fused", "mps", {"fused": True}),
        ("foreach", "cpu", {"foreach": True}),
        ("loop", "cpu", {"foreach": False}),
    ],
)
def test_optimizer_impl_choice(choice, device, expected):
    assert optimizer_impl(choice, device) == expected


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "nesterov"])
def test_optimizers_take_the_fused_kernels_on_cpu_and_step(name):
    model = create_model("fastnet", width=4)
    opt = make_optimizer(TrainConfig(optimizer=name, optimizer_impl="fused"), model)
    assert opt.defaults["fused"] is True
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert make_optimizer(TrainConfig(optimizer=name, optimizer_impl="loop"), model).defaults["foreach"] is False


def test_speed_recipes_take_the_fused_kernels():
    from mnist_cnn.training.recipes import recipe_config

    assert recipe_config("fast99").optimizer_impl == recipe_config("fast995").optimizer_impl == "fused"
    assert recipe_config("best").optimizer_impl == "auto"  # long runs resume exactly


def test_optimizer_impl_is_validated():
    with pytest.raises(ConfigError, match="optimizer_impl='fast' must be auto, fused, foreach or loop"):
        TrainConfig(optimizer_impl="fast").validate()


def test_a_run_records_the_precision_that_ran(tiny_data):
    cfg = TrainConfig(model="fastnet", model_kwargs={"width": 4}, epochs=1, val_size=100, precision="fp32")
    res = train(cfg.merged({"data_dir": str(tiny_data)}), None, quiet=True)
    assert res.metrics["precision_used"] == "fp32"
    from mnist_cnn.training.device import keep_freed_memory

    assert res.metrics["allocator"] == keep_freed_memory()  # what the CPU engine set, recorded


def _idx(path: Path, arr: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def test_keras_reference_reads_idx_files_and_names_missing_ones(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    _idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    assert np.array_equal(keras_reference.read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    with pytest.raises(SystemExit, match="missing train-labels-idx1-ubyte.gz"):
        keras_reference.load(tmp_path)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + b"\x00" * 8))
    with pytest.raises(SystemExit, match="not an unsigned-byte IDX file"):
        keras_reference.read_idx(tmp_path / "bad.gz")


def test_reference_net_is_the_published_one():
    net = speed.reference_net()
    assert sum(p.numel() for p in net.parameters()) == 24 * 25 + 24 + 32 * 24 * 9 + 32 + 800 * 256 + 256 + 2570
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("tuned", [False, True])
def test_reference_recipe_trains_and_reports(tiny_data, tuned, monkeypatch):
    monkeypatch.setattr(speed, "VAL_SIZE", 100)
    ds = load_dataset("mnist", tiny_data)
    r = speed.reference_recipe(ds, 0, tuned=tuned, bf16=False)
    assert set(r) == {"seed", "train_seconds", "test_accuracy"}
    assert r["train_seconds"] > 0 and 0.0 <= r["test_accuracy"] <= 1.0


def test_ratio_formatting():
    assert speed.ratio(2.0, 4.0) == "0.50x"
    assert speed.ratio(None, 4.0) == "-"


def test_plain_loop_epoch_runs_the_seed_model(tiny_data):
    ds = load_dataset("mnist", tiny_data)
    assert speed.plain_loop_epoch(ds, False, torch.device("cpu")) > 0
