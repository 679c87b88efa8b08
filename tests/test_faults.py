"""Faults: `mnist-cnn train` killed with SIGKILL at random points (real subprocesses, CPU, one
thread), then `--resume`: every artifact on disk is either absent or complete, at most one epoch
of work is lost, and the resumed run ends with exactly the weights and metrics of an uninterrupted
run with the same seed."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mnist_cnn.artifacts.files import load_tensors
from mnist_cnn.artifacts.runs import HISTORY_FIELDS
from mnist_cnn.models.files import load_model
from tests.conftest import write_dataset

EPOCHS = 6
KILL_SEED = int(os.environ.get("MNIST_CNN_KILL_SEED", "0"))  # set it to explore other kill points


def _argv(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mnist_cnn",
        "train",
        "--data-dir",
        str(data),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "32",
        "--val-size",
        "100",
        "--seed",
        "3",
        "--threads",
        "1",
        "--out",
        str(out),
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path, float]:
    """The data set (2,100 synthetic training images: ~63 steps per epoch), an uninterrupted run
    of it, and the seconds from its first checkpoint to its exit (the span kills are drawn from)."""
    root = tmp_path_factory.mktemp("faults")
    data = write_dataset(root / "data", n_train=2100, n_test=200)
    proc = subprocess.Popen(_argv(data, root / "ref"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t_ckpt = _wait_until(lambda: (root / "ref" / "checkpoint.safetensors").exists(), proc)
    stderr = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, stderr
    return data, root / "ref", time.perf_counter() - t_ckpt


def _wait_until(cond: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300) -> float:
    """Poll until ``cond()`` holds (or ``proc`` ends); return the time it did."""
    deadline = time.perf_counter() + timeout
    while not cond() and proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.01)
    return time.perf_counter()


def check_complete(out: Path) -> dict[str, str]:
    """Every artifact under its real name is whole; returns {name: what was checked}. Temporary
    files a SIGKILL can orphan (``.NAME.*.tmp``) are not artifacts and are listed apart."""
    seen = {}
    for path in sorted(out.iterdir()):
        name = path.name
        if name.startswith(".") and name.endswith(".tmp"):
            seen[name] = "orphaned temporary file (ignored by every reader)"
        elif name == "model.safetensors":
            load_model(path)
            seen[name] = "load_model"
        elif name.endswith(".safetensors"):
            tensors, meta = load_tensors(path)
            assert "rng.torch" in tensors and meta["epoch"] == len(meta["history"])
            seen[name] = f"checkpoint after epoch {meta['epoch']}"
        elif name.endswith(".json"):
            json.loads(path.read_text())
            seen[name] = "json"
        elif name.endswith(".csv"):
            rows = list(csv.reader(path.open()))
            assert path.read_text().endswith("\n") and len({len(r) for r in rows}) == 1, name
            if name == "history.csv":
                assert rows[0] == HISTORY_FIELDS and [int(r[0]) for r in rows[1:]] == list(range(1, len(rows)))
            seen[name] = f"csv, {len(rows)} rows"
        elif name.endswith(".png"):
            from PIL import Image

            with Image.open(path) as im:
                im.verify()
            seen[name] = "png"
        elif name.endswith((".txt", ".html", ".md")):
            text = path.read_text()
            assert text.endswith("\n") and (not name.endswith(".html") or "</html>" in text[-200:]), name
            seen[name] = "text"
        elif name in (".lock", ".lock.json"):  # the run folder's lock (a killed run leaves them; no longer held)
            seen[name] = "lock"
        else:
            raise AssertionError(f"unexpected file {name}")
    return seen


def _kill_after(argv: list[str], delay: float, once: Callable[[], bool]) -> str:
    """Start ``argv``, SIGKILL it ``delay`` s after ``once()`` first holds, unless it finishes
    first; return its stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_until(once, proc)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.communicate(timeout=60)[1]


def _same_result(ref: Path, out: Path) -> None:
    wa, wb = load_tensors(ref / "model.safetensors")[0], load_tensors(out / "model.safetensors")[0]
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    ma, mb = json.loads((ref / "metrics.json").read_text()), json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "test_loss", "val_accuracy", "val_loss", "epochs_run", "per_class"):
        assert ma[key] == mb[key], key
    ha, hb = (list(csv.DictReader((d / "history.csv").open())) for d in (ref, out))
    assert [{k: r[k] for k in r if k != "seconds"} for r in ha] == [{k: r[k] for k in r if k != "seconds"} for r in hb]


@pytest.mark.slow
@pytest.mark.parametrize("kill", range(3))
def test_sigkill_then_resume_matches_an_uninterrupted_run(reference, tmp_path, kill):
    data, ref, span = reference
    out = tmp_path / "run"
    if kill == 0:  # during the first epoch, before any checkpoint
        delay = 0.0
        stderr = _kill_after(_argv(data, out), 0.0, once=(out / "config.json").exists)
    else:  # anywhere from the first checkpoint to the end of the final artifacts
        delay = random.Random(KILL_SEED * 100 + kill).uniform(0, span)
        stderr = _kill_after(_argv(data, out), delay, once=(out / "checkpoint.safetensors").exists)
    assert "Traceback" not in stderr
    on_disk = check_complete(out) if out.exists() else {}
    ckpt = out / "checkpoint.safetensors"
    done = load_tensors(ckpt)[1]["epoch"] if ckpt.exists() else 0
    printed = stderr.count(f"/{EPOCHS}  train loss")  # epoch lines are printed after the checkpoint
    assert done >= printed  # at most the epoch in progress is lost
    if ckpt.exists():
        r = subprocess.run(_argv(data, out, "--resume"), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert f"resuming {out} after epoch {done}" in r.stderr
    elif out.exists():  # killed before the first epoch ended: --resume starts the run afresh
        r = subprocess.run(_argv(data, out, "--resume"), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        assert "starting it afresh" in r.stderr
    else:  # killed before the run folder was made: a plain re-run starts it
        r = subprocess.run(_argv(data, out), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    check_complete(out)
    _same_result(ref, out)
    when = "in epoch 1" if kill == 0 else f"{delay:.2f}s after the first checkpoint (of {span:.2f}s)"
    print(f"kill {when}: {done} epochs saved, on disk {sorted(on_disk)}")


@pytest.mark.slow
def test_kills_never_leave_a_half_written_artifact(reference, tmp_path):
    """Several kills of the same run at random moments, each followed by a check of every file
    and by --resume from wherever it stopped; the run ends complete and correct."""
    data, ref, span = reference
    rng = random.Random(KILL_SEED + 7)
    out = tmp_path / "run"
    ckpt = out / "checkpoint.safetensors"
    _kill_after(_argv(data, out), rng.uniform(0, span / 3), once=ckpt.exists)
    after_kills = []  # (the files on disk, the checkpoint's epoch) after each kill
    for _ in range(4):
        on_disk = check_complete(out)
        assert "checkpoint.safetensors" in on_disk, f"a kill after the first checkpoint left none: {sorted(on_disk)}"
        after_kills.append((on_disk, load_tensors(ckpt)[1]["epoch"]))
        if "metrics.json" in on_disk and "report.html" in on_disk:
            break
        # the resumed process, killed again once it has rewritten the checkpoint
        t_ckpt = ckpt.stat().st_mtime_ns
        _kill_after(
            _argv(data, out, "--resume"),
            rng.uniform(0, span / 3),
            once=lambda t=t_ckpt: ckpt.stat().st_mtime_ns > t or (out / "metrics.json").exists(),
        )
    r = subprocess.run(_argv(data, out, "--resume"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    check_complete(out)
    _same_result(ref, out)
    # what the kills left: the first one interrupted the run; each resumed process saved at least one
    # more epoch before its kill (unless training was already over), and no checkpoint went backwards
    epochs = [epoch for _, epoch in after_kills]
    assert "report.html" not in after_kills[0][0], "the first kill landed after the run had finished"
    assert all(1 <= e <= EPOCHS for e in epochs), epochs
    assert all(e1 > e0 or e0 == EPOCHS for e0, e1 in zip(epochs, epochs[1:])), f"checkpointed epochs: {epochs}"
