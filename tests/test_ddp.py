"""Multi-process training (DistributedDataParallel, gloo on CPU) matches single-process training
with the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest


def _history(run):
    return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader((run / "history.csv").open())]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tiny_data, tmp_path):
    # dropout 0: otherwise each rank draws its own masks and losses differ by sampling noise
    cfg = {"model": "model1", "model_kwargs": {"dropout": 0.0}, "epochs": 2, "batch_size": 64,
           "val_size": 100, "data_dir": str(tiny_data), "precision": "fp32", "threads": 1}
    (tmp_path / "cfg.json").write_text(json.dumps({"train": cfg}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "mnist_cnn", "train", "--config", str(tmp_path / "cfg.json"), "--quiet"]
    one = subprocess.run([*base, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "mnist_cnn",
         *base[3:], "--out", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-2000:]
    h1, h2 = _history(tmp_path / "one"), _history(tmp_path / "two")
    assert len(h1) == len(h2) == 2
    for a, b in zip(h1, h2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=5e-3)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert abs(m1["test_accuracy"] - m2["test_accuracy"]) <= 0.02
    # only rank 0 wrote the run folder: one metrics file, one model
    assert (tmp_path / "two" / "model.safetensors").exists()


@pytest.mark.slow
def test_nproc_flag_relaunches_under_torchrun(tiny_data, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mnist_cnn", "train", "--data-dir", str(tiny_data), "--epochs", "1",
         "--batch-size", "64", "--val-size", "100", "--threads", "1", "--nproc", "2", "--quiet",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("test accuracy") == 1
    assert (tmp_path / "run" / "metrics.json").exists()
