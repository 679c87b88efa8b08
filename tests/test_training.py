"""Training engine: reproducibility, run artifacts, resume, early stopping, validation hygiene."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from mnist_cnn.artifacts.files import load_tensors
from mnist_cnn.errors import CheckpointError, ConfigError, RunExistsError
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.engine import train
from mnist_cnn.training.steps import lr_factor
from tests.helpers import tiny_run


def _weights(path):
    return load_tensors(path)[0]


def test_same_seed_gives_identical_weights_and_metrics(tiny_data, tmp_path):
    # with the thread count fixed: the default follows the machine's load, and the count changes
    # the order of the floating-point sums
    a = tiny_run(tmp_path, tiny_data, "a", threads=1)
    b = tiny_run(tmp_path, tiny_data, "b", threads=1)
    wa, wb = _weights(tmp_path / "a" / "model.safetensors"), _weights(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for k in ("test_accuracy", "test_loss", "val_accuracy"):
        assert a.metrics[k] == b.metrics[k]
    tiny_run(tmp_path, tiny_data, "c", seed=1, threads=1)
    wc = _weights(tmp_path / "c" / "model.safetensors")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_run_artifacts_are_complete(tiny_data, tmp_path):
    res = tiny_run(tmp_path, tiny_data)
    out = tmp_path / "run"
    m = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "val_accuracy", "epochs_run", "train_seconds", "params", "per_class"):
        assert key in m, key
    assert m["epochs_run"] == 2 and m["params"] == 110_474
    assert set(m["per_class"]["3"]) == {"precision", "recall", "f1", "support"}
    assert m["test_accuracy"] > 0.5  # the synthetic digits are easy: well above chance (0.1)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["model"] == "model1" and "torch" in cfg["environment"]
    rows = list(csv.DictReader((out / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert "precision" in (out / "classification_report.txt").read_text()
    assert (out / "confusion_matrix.csv").read_text().count("\n") == 11
    assert res.meta["normalisation"]["std"] > 0


@pytest.mark.parametrize("impl", ["auto", "fused", "foreach", "loop"])
def test_resume_continues_exactly(tiny_data, tmp_path, impl):
    """Bit for bit with every optimiser implementation (fused kernels drifted until the restored
    moments of channels_last weights got the weights' layout back)."""
    full = tiny_run(tmp_path, tiny_data, "full", epochs=3, optimizer_impl=impl, threads=1)
    # same run stopped after 2 epochs, then resumed to 3 (with its saved thread count)
    cfg = TrainConfig(data_dir=str(tiny_data), epochs=2, batch_size=64, val_size=100, optimizer_impl=impl, threads=1)
    train(cfg, tmp_path / "part", quiet=True)
    resumed = train(TrainConfig(), tmp_path / "part", resume=True, resume_epochs=3, quiet=True)
    assert resumed.metrics["epochs_run"] == 3
    wa, wb = _weights(tmp_path / "full" / "model.safetensors"), _weights(tmp_path / "part" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed.metrics["test_loss"] == full.metrics["test_loss"]
    assert len(resumed.history) == 3


def test_resume_takes_the_callers_thread_count_and_nothing_else(tiny_data, tmp_path):
    cfg = TrainConfig(data_dir=str(tiny_data), epochs=1, batch_size=64, val_size=100, lr=2e-3)
    train(cfg, tmp_path / "part", quiet=True)
    # threads=1 is this machine's setting; lr=0.5 and seed=9 are not the saved plan's and are ignored
    resumed = train(TrainConfig(threads=1, lr=0.5, seed=9), tmp_path / "part", resume=True, resume_epochs=2, quiet=True)
    assert resumed.meta["config"]["threads"] == 1
    assert resumed.meta["config"]["lr"] == 2e-3 and resumed.meta["config"]["seed"] == 0
    assert resumed.metrics["epochs_run"] == 2


def test_resume_without_checkpoint_and_existing_dir(tiny_data, tmp_path):
    with pytest.raises(CheckpointError, match="resume"):
        train(TrainConfig(data_dir=str(tiny_data)), tmp_path / "none", resume=True, quiet=True)
    tiny_run(tmp_path, tiny_data, "x", epochs=1)
    with pytest.raises(RunExistsError, match="--force"):
        tiny_run(tmp_path, tiny_data, "x", epochs=1)
    cfg = TrainConfig(data_dir=str(tiny_data), epochs=1, batch_size=64, val_size=100)
    assert train(cfg, tmp_path / "x", force=True, quiet=True).metrics["epochs_run"] == 1


def test_early_stopping_restores_best_epoch(tiny_data, tmp_path, monkeypatch):
    # a learning rate this high makes validation loss rise after the first epochs
    res = tiny_run(tmp_path, tiny_data, epochs=8, lr=0.05, early_stopping_patience=1)
    hist = res.history
    best = min(hist, key=lambda r: r["val_loss"])
    assert res.metrics["best_epoch"] == best["epoch"]
    assert res.metrics["epochs_run"] < 8 or hist[-1]["val_loss"] >= best["val_loss"]
    assert res.metrics["val_loss"] == pytest.approx(best["val_loss"], rel=1e-5)


def test_validation_split_is_disjoint_and_test_unused_for_selection(tiny_data, tmp_path, monkeypatch):
    import mnist_cnn.training.loop as loop
    import mnist_cnn.training.outputs as outputs

    seen = []
    real = loop.evaluate_model

    def spy(model, images, labels, norm, *a, **k):
        seen.append(len(labels))
        return real(model, images, labels, norm, *a, **k)

    monkeypatch.setattr(loop, "evaluate_model", spy)  # per-epoch validation
    monkeypatch.setattr(outputs, "evaluate_model", spy)  # the final evaluation
    res = tiny_run(tmp_path, tiny_data, epochs=3, early_stopping_patience=2)
    # every per-epoch evaluation (the ones early stopping reads) is on the 100 validation images;
    # the 200 test images are evaluated once, after training
    assert seen[: res.metrics["epochs_run"]] == [100] * res.metrics["epochs_run"]
    assert seen.count(200) == 1 and seen[-1] == 200


def test_bad_config_values_are_rejected(tiny_data):
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"lr": -1.0}, {"optimizer": "rmsprop"}, {"val_size": -5}):
        with pytest.raises(ConfigError):
            TrainConfig(data_dir=str(tiny_data), **bad).validate()
    with pytest.raises(ConfigError, match="val_size"):
        train(TrainConfig(data_dir=str(tiny_data), val_size=600), None, quiet=True)


def test_lr_schedules():
    assert lr_factor(0, 100, "constant", 0) == 1.0
    assert lr_factor(99, 100, "linear", 0) == pytest.approx(0.01)
    assert lr_factor(0, 100, "cosine", 0) == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine", 0) == pytest.approx(0.5)
    oc = [lr_factor(s, 100, "onecycle", 0) for s in range(100)]
    assert max(oc) == pytest.approx(1.0) and oc.index(max(oc)) == 24 and oc[-1] < 0.05


def test_a_run_trained_with_tta_reports_and_reproduces_tta_figures(tmp_path, tiny_data) -> None:
    """`tta` makes the final val/test figures test-time-augmented, times that evaluation, and
    `evaluate` of the run reproduces them without being told."""
    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.evaluation.metrics import evaluate_model
    from mnist_cnn.inference.evaluate import evaluate_run

    res = tiny_run(tmp_path, tiny_data, epochs=1, threads=1, tta=True)
    m = res.metrics
    assert m["tta"] is True and m["test_eval_seconds"] > 0
    ds = load_dataset("mnist", tiny_data)
    norm = res.meta["normalisation"]
    with_tta = evaluate_model(res.model, ds.test_images, ds.test_labels, norm, tta=True)
    plain = evaluate_model(res.model, ds.test_images, ds.test_labels, norm)
    assert m["test_loss"] == pytest.approx(with_tta.loss, rel=1e-5)
    assert with_tta.loss != pytest.approx(plain.loss, rel=1e-5)  # the shifts change the figure
    again = evaluate_run(res.run_dir, data_dir=tiny_data)
    assert again["tta"] is True and again["loss"] == pytest.approx(m["test_loss"], rel=1e-5)
    assert json.loads((res.run_dir / "metrics.json").read_text())["tta"] is True
