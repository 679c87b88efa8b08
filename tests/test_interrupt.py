"""Ctrl-C during training saves the last completed epoch and exits cleanly; --resume finishes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import default_sigint


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_finishes(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "mnist_cnn",
        "train",
        "--data-dir",
        str(tiny_data),
        "--epochs",
        "40",
        "--batch-size",
        "32",
        "--val-size",
        "100",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    deadline = time.time() + 120
    # an epoch's end writes the checkpoint, then history.csv: wait for both (a Ctrl-C between the two
    # writes, on a busy machine, left no history.csv for this test to count epochs from)
    saved = (out / "checkpoint.safetensors", out / "history.csv")
    while not all(f.exists() for f in saved) and time.time() < deadline:
        time.sleep(0.2)
    assert saved[0].exists(), "no checkpoint written"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr and "--resume" in stderr
    assert not (out / "metrics.json").exists()  # the run is not finished
    done = len((out / "history.csv").read_text().strip().splitlines()) - 1  # completed epochs
    assert done >= 1
    r = subprocess.run(
        [*args[:-2], "--epochs", str(done + 1), "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == done + 1
