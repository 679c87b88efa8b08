"""Multi-process training (DistributedDataParallel, gloo on CPU) matches single-process training
with the same global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TINY_FLAGS

# A sitecustomize.py put on PYTHONPATH for the two-process run: an audit hook in every process
# (the torchrun launcher and each rank) logs "RANK NAME" for each file it creates, opens for
# writing or renames into the run folder, so the test sees which ranks wrote which artifacts.
WRITE_LOG_HOOK = """
import os, sys

_run = os.environ["MNIST_CNN_TEST_WATCH"]
_rank = os.environ.get("RANK", "launcher")
_log = os.open(os.path.join(os.environ["MNIST_CNN_TEST_LOG"], f"{os.getpid()}.log"),
               os.O_WRONLY | os.O_CREAT | os.O_APPEND)


def _hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    elif event == "os.rename":
        path, writes = args[1], True
    else:
        return
    path = os.path.abspath(os.fsdecode(path))
    if writes and path.startswith(_run + os.sep):
        os.write(_log, f"{_rank} {os.path.relpath(path, _run)}\\n".encode())


sys.addaudithook(_hook)
"""


def _history(run):
    return [{k: float(v) for k, v in r.items() if v} for r in csv.DictReader((run / "history.csv").open())]


def _write_config(data: Path, path: Path) -> None:
    """The runs these tests compare: model1 for 2 epochs, fp32, one thread per process. Dropout 0:
    otherwise each rank draws its own masks and losses differ by sampling noise."""
    cfg = {
        "model": "model1",
        "model_kwargs": {"dropout": 0.0},
        "epochs": 2,
        "batch_size": 64,
        "val_size": 100,
        "data_dir": str(data),
        "precision": "fp32",
        "threads": 1,
    }
    path.write_text(json.dumps({"train": cfg}))


def _writes(log_dir: Path) -> list[tuple[str, str]]:
    """(rank, file name) for each write into the run folder logged by WRITE_LOG_HOOK."""
    lines = [line for log in sorted(log_dir.glob("*.log")) for line in log.read_text().splitlines()]
    return [tuple(line.split(" ", 1)) for line in lines]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tiny_data, tmp_path):
    _write_config(tiny_data, tmp_path / "cfg.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "mnist_cnn", "train", "--config", str(tmp_path / "cfg.json"), "--quiet"]
    one = subprocess.run([*base, "--out", str(tmp_path / "one")], env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    hook, log_dir = tmp_path / "hook", tmp_path / "writes"
    hook.mkdir()
    log_dir.mkdir()
    (hook / "sitecustomize.py").write_text(WRITE_LOG_HOOK)
    watched = {
        "PYTHONPATH": os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p),
        "MNIST_CNN_TEST_WATCH": str(tmp_path / "two"),
        "MNIST_CNN_TEST_LOG": str(log_dir),
    }
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "mnist_cnn",
            *base[3:],
            "--out",
            str(tmp_path / "two"),
        ],
        env={**env, **watched},
        capture_output=True,
        text=True,
        timeout=300,
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
    # only rank 0 wrote the run folder (rank 1 wrote nothing there, and no process besides the two
    # ranks did), and it holds the same artifacts as the one-process run: no per-rank copies, no leftovers
    writes = _writes(log_dir)
    assert {rank for rank, _ in writes} == {"0"}, sorted({w for w in writes if w[0] != "0"})
    written = {name for _, name in writes if not name.startswith(".")}  # not the temporaries renamed into place
    assert {"config.json", "checkpoint.safetensors", "history.csv", "model.safetensors", "metrics.json"} <= written, (
        sorted(written)
    )  # the hook did see rank 0 write them
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))
    assert "test_accuracy" in m2  # rank 0's metrics: rank 1 does not evaluate the test set


@pytest.mark.slow
def test_nproc_flag_relaunches_under_torchrun(tiny_data, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_cnn",
            "train",
            "--data-dir",
            str(tiny_data),
            *TINY_FLAGS,
            "--threads",
            "1",
            "--nproc",
            "2",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("test accuracy") == 1
    assert (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_a_two_process_run_resumes_on_every_rank(tiny_data, tmp_path):
    """Every rank restores the checkpoint (weights, optimiser, RNGs, epoch counter), so a resumed
    two-process run ends as the uninterrupted one; before, only rank 0 restored and rank 1 started over."""
    _write_config(tiny_data, tmp_path / "cfg.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def torchrun(out: str, *extra: str) -> subprocess.CompletedProcess:
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "mnist_cnn",
            "train",
            "--config",
            str(tmp_path / "cfg.json"),
            "--quiet",
            "--out",
            str(tmp_path / out),
            *extra,
        ]
        # the ranks out of step (one resumed, one not) would wait on each other for ever: a timeout fails it
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, r.stderr[-2000:]
        return r

    torchrun("whole")
    torchrun("parts", "--epochs", "1")
    torchrun("parts", "--resume", "--epochs", "2")
    whole, parts = _history(tmp_path / "whole"), _history(tmp_path / "parts")
    assert [r["epoch"] for r in parts] == [1.0, 2.0]
    for a, b in zip(whole, parts, strict=True):
        for k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert b[k] == pytest.approx(a[k], rel=1e-6), (k, a, b)
