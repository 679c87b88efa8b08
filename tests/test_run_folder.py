"""The run-folder contract: starting, resuming and refusing runs, and what a killed run leaves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_cnn.artifacts.files import load_tensors
from mnist_cnn.artifacts.runs import (
    CHECKPOINT,
    CONFIG,
    MODEL,
    foreign_files,
    is_unstarted,
    read_history,
    split_of,
    stale_temp_files,
)
from mnist_cnn.errors import CheckpointError, RunExistsError
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.engine import train
from mnist_cnn.training.state import PROGRESS_KEYS, Progress
from tests.helpers import run_cli, tiny_train_argv


def _cfg(data: Path, **kw: object) -> TrainConfig:
    return TrainConfig(**{"data_dir": str(data), "epochs": 2, "batch_size": 64, "val_size": 100, **kw})


def _killed_before_first_checkpoint(out: Path, data: Path) -> None:
    """What a run killed during its first epoch leaves: config.json and a half-written temporary file."""
    out.mkdir(parents=True)
    (out / CONFIG).write_text('{"train": {}}')
    (out / f".{CHECKPOINT}.abc123.tmp").write_bytes(b"half")


@pytest.mark.parametrize("resume", [True, False])
def test_a_run_killed_before_its_first_checkpoint_starts_afresh(tiny_data: Path, tmp_path: Path, resume: bool):
    out = tmp_path / "run"
    _killed_before_first_checkpoint(out, tiny_data)
    assert is_unstarted(out)
    reference = train(_cfg(tiny_data), tmp_path / "ref", quiet=True)
    result = train(_cfg(tiny_data), out, resume=resume, quiet=True)
    assert result.metrics["epochs_run"] == 2 and stale_temp_files(out) == []
    assert result.metrics["test_loss"] == reference.metrics["test_loss"]  # the same run, from the start


def test_cli_resume_of_an_unstarted_run_says_it_starts_afresh(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    _killed_before_first_checkpoint(out, tiny_data)
    r = run_cli(
        "train", "--data-dir", str(tiny_data), "--epochs", "1", "--val-size", "100", "--out", str(out), "--resume"
    )
    assert r.exit_code == 0, r.stderr
    assert "no checkpoint yet" in r.stderr and "starting it afresh" in r.stderr


def test_resume_cleans_stray_temporary_files_and_continues(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(_cfg(tiny_data, epochs=1), out, quiet=True)
    stray = [out / ".model.safetensors.x1.tmp", out / ".history.csv.x2.tmp"]
    for p in stray:
        p.write_bytes(b"partial")
    result = train(_cfg(tiny_data, epochs=2), out, resume=True, resume_epochs=2, quiet=True)
    assert result.metrics["epochs_run"] == 2 and not any(p.exists() for p in stray)
    assert [row["epoch"] for row in read_history(out)] == [1.0, 2.0]


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--val-size", "600"], "val_size=600 must be smaller"),
        (["--model", "nope"], "unknown model 'nope'"),
        (["--data-dir", "/nonexistent/data"], "data folder does not exist"),
    ],
)
def test_a_bad_flag_or_data_error_leaves_no_run_folder(
    tiny_data: Path, tmp_path: Path, flags: list[str], fragment: str
):
    out = tmp_path / "run"
    r = run_cli("train", "--data-dir", str(tiny_data), "--epochs", "1", "--out", str(out), *flags)
    assert r.exit_code != 0 and fragment in r.stderr
    assert not out.exists()


def test_a_finished_run_is_refused_without_resume_or_force(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(_cfg(tiny_data, epochs=1), out, quiet=True)
    with pytest.raises(RunExistsError, match="already exists"):
        train(_cfg(tiny_data, epochs=1), out, quiet=True)
    with pytest.raises(CheckpointError, match="no checkpoint.safetensors to resume from"):
        train(_cfg(tiny_data, epochs=1), tmp_path / "typo", resume=True, quiet=True)
    assert not (tmp_path / "typo").exists()


def test_force_replaces_a_calibrated_run_and_its_sidecar(tiny_data: Path, tmp_path: Path):
    """`mnist-cnn calibrate RUN` writes model.json into the run folder: a run file, not a user's,
    so `train --force` replaces it (the old temperature was fitted for the old weights)."""
    from mnist_cnn.models.files import model_calibration, sidecar_path

    out = tmp_path / "run"
    train(_cfg(tiny_data, epochs=1), out, quiet=True)
    r = run_cli("calibrate", str(out), "--data-dir", str(tiny_data))
    assert r.exit_code == 0, r.stderr
    assert sidecar_path(out / MODEL).is_file() and foreign_files(out) == []
    r = run_cli(*tiny_train_argv(tiny_data, out, "--force", "--quiet"))
    assert r.exit_code == 0, r.stderr
    assert not sidecar_path(out / MODEL).exists()  # the new run's calibration is in its own metadata
    assert model_calibration(out) is not None


def test_checkpoint_holds_the_typed_progress(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(_cfg(tiny_data, epochs=2, early_stopping_patience=5), out, quiet=True)
    tensors, meta = load_tensors(out / CHECKPOINT)
    progress = Progress(**{k: meta[k] for k in PROGRESS_KEYS})
    assert progress.epoch == 2 and len(progress.history) == 2 and progress.best_epoch in (1, 2)
    assert progress.step == 2 * -(-500 // 64)  # ceil(500 / 64) steps per epoch
    assert any(k.startswith("best.") for k in tensors) and "rng.gen" in tensors
    assert meta["config"]["epochs"] == 2 and isinstance(tensors["rng.torch"], torch.Tensor)


def test_split_of_old_runs_uses_the_old_defaults():
    assert split_of(None) == split_of({}) == split_of({"val_size": 5000, "seed": 0})
    assert split_of({"val_size": 100, "seed": 3}).seed == 3
