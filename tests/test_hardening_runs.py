"""Hardening, second round, for run folders and inputs: never delete what isn't ours, one trainer
per folder, resume keeps its plan, config bounds, file modes, big files and saved crops."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_cnn.artifacts.files import atomic_write_text, umask
from mnist_cnn.artifacts.runs import CHECKPOINT, LOCK_OWNER, REPLACED, RunLock, foreign_files
from mnist_cnn.errors import ConfigError, ImageError, RunExistsError, RunInUseError
from mnist_cnn.inference.preprocessing import read_image_file
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.engine import train
from tests.helpers import digit_image, run_cli, tiny_train_argv


def _cfg(data: Path, **kw: object) -> TrainConfig:
    return TrainConfig(**{"data_dir": str(data), "epochs": 1, "batch_size": 64, "val_size": 100, **kw})


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_argv(data, out, *extra)  # not --quiet: these tests read what the run says


# --------------------------------------------------------------------------- 1. --force


def test_force_refuses_a_folder_with_foreign_files_and_deletes_nothing(tiny_data: Path, tmp_path: Path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "thesis.txt").write_text("x")
    r = run_cli(*_args(tiny_data, d, "--force"))
    assert r.exit_code == 2 and "thesis.txt" in r.stderr and "--force replaces only" in r.stderr
    assert (d / "thesis.txt").read_text() == "x"
    # a typo after --force: the old run is untouched
    out = tmp_path / "run"
    train(_cfg(tiny_data), out, quiet=True)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    r = run_cli(*_args(tiny_data, out, "--force", "--val-size", "60000"))
    assert r.exit_code == 2 and "val_size" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    (out / "notes.md").write_text("mine")
    with pytest.raises(RunExistsError, match="notes.md"):
        train(_cfg(tiny_data), out, force=True, quiet=True)
    assert foreign_files(out) == ["notes.md"]


def test_force_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tiny_data: Path, tmp_path: Path, monkeypatch):
    import mnist_cnn.training.loop as loop

    out = tmp_path / "run"
    train(_cfg(tiny_data), out, quiet=True)
    old_model = (out / "model.safetensors").read_bytes()
    seen = []
    real = loop.discard_replaced

    def spy(folder: Path) -> None:  # called right after each checkpoint of the new run
        seen.append((folder / REPLACED / "model.safetensors").exists() and (folder / CHECKPOINT).exists())
        real(folder)

    monkeypatch.setattr(loop, "discard_replaced", spy)
    train(_cfg(tiny_data, seed=1, epochs=2), out, force=True, quiet=True)
    assert seen[0] is True  # until the first checkpoint the old run was set aside, not deleted
    assert not (out / REPLACED).exists() and (out / "model.safetensors").read_bytes() != old_model
    # a replacement that fails before its first checkpoint puts the old run back
    b = tmp_path / "b"
    train(_cfg(tiny_data), b, quiet=True)
    b_model = (b / "model.safetensors").read_bytes()

    def fail_first_epoch(*a: object, **k: object) -> None:
        raise RuntimeError("boom in epoch 1")

    monkeypatch.setattr(loop.EpochLoop, "train_epoch", fail_first_epoch)
    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(tiny_data, seed=2), b, force=True, quiet=True)
    assert (b / "model.safetensors").read_bytes() == b_model and not (b / REPLACED).exists()


def test_a_replacement_killed_before_its_first_checkpoint_leaves_the_old_run(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    train(_cfg(tiny_data), out, quiet=True)
    model = (out / "model.safetensors").read_bytes()
    # what a SIGKILL in the replacement's first epoch leaves: the old run aside, a new config.json
    aside = out / REPLACED
    aside.mkdir()
    for p in list(out.iterdir()):
        if p.is_file() and p.name != ".lock":
            os.replace(p, aside / p.name)
    (out / "config.json").write_text('{"train": {}}')
    r = run_cli(*_args(tiny_data, out))  # no --force: the old run is back, so this is refused
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert (out / "model.safetensors").read_bytes() == model and not aside.exists()


# --------------------------------------------------------------------------- 3. resume keeps its plan


def test_resume_continues_the_saved_plan_and_says_so(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"

    def stop_after_first(epoch: int, row: dict[str, float]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(Exception, match="interrupted"):
        train(_cfg(tiny_data, epochs=3), out, quiet=True, on_epoch=stop_after_first)
    r = run_cli("train", "--data-dir", str(tiny_data), "--out", str(out), "--resume")  # no --epochs (default 20)
    assert r.exit_code == 0, r.stderr
    assert "after epoch 1 of 3 (its saved plan" in r.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3
    r = run_cli("train", "--data-dir", str(tiny_data), "--out", str(out), "--resume", "--epochs", "4")
    assert r.exit_code == 0 and "--epochs 4; its saved plan was 3" in r.stderr
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 4  # config.json says what ran


# --------------------------------------------------------------------------- 4. one trainer per folder


def test_a_second_trainer_on_the_same_folder_is_refused_naming_the_first(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mnist_cnn.artifacts.runs import RunLock;"
            f"lock = RunLock(Path({str(out)!r})).acquire(); print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = run_cli(*_args(tiny_data, out))
        assert r.exit_code == 2 and f"process {holder.pid}" in r.stderr and "is training in this run folder" in r.stderr
        with pytest.raises(RunInUseError):
            RunLock(out).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock is gone with it (no stale lock)
    assert (out / LOCK_OWNER).exists()
    assert run_cli(*_args(tiny_data, out)).exit_code == 0


# --------------------------------------------------------------------------- 9. config bounds


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("threads", 100_000, "threads=100000 must be between 1 and"),
        ("seed", 2**64, "seed="),
        ("lr", 1e308, "lr=1e+308 must be a number in (0, 10]"),
        ("betas", (0.9, 1.5), "betas=(0.9, 1.5) must be two numbers in [0, 1)"),
        ("momentum", -0.5, "momentum=-0.5 must be in [0, 1)"),
        ("epochs", 10**9, "epochs="),
        ("batch_size", 10**9, "batch_size="),
    ],
)
def test_config_bounds_are_one_line_config_errors(tiny_data: Path, field: str, value: object, fragment: str):
    with pytest.raises(ConfigError) as err:
        _cfg(tiny_data, **{field: value}).validate()
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_config_bounds_through_the_cli(tiny_data: Path, tmp_path: Path):
    r = run_cli(*_args(tiny_data, tmp_path / "run", "--threads", "100000"))
    assert r.exit_code == 2 and "threads=100000" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- 10. smaller ones


def test_artifacts_follow_the_umask(tmp_path: Path):
    atomic_write_text(tmp_path / "a.txt", "x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    assert mode == 0o666 & ~umask() and mode & stat.S_IRGRP  # not 0600: the team can read a shared run


def test_huge_image_file_is_refused_unread(tmp_path: Path):
    big = tmp_path / "big.png"
    with open(big, "wb") as fh:
        fh.truncate(2 * 2**30)  # a 2 GB sparse file: refused from its size, never read
    with pytest.raises(ImageError, match=r"big.png: the file is 2,048 MiB"):
        read_image_file(big)
    r = run_cli("predict", str(big))
    assert r.exit_code == 1 and "2,048 MiB" in r.stderr


def test_save_preprocessed_never_overwrites_an_input(tmp_path: Path):
    photo = tmp_path / "a.png"
    digit_image(4, size=400).save(photo)
    original = photo.read_bytes()
    r = run_cli("predict", str(photo), "--save-preprocessed", str(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert photo.read_bytes() == original  # the 400x400 photo is still there
    crop = np.asarray(Image.open(tmp_path / "a-2.png"))
    assert crop.shape == (28, 28)
    r = run_cli("predict", str(photo), "--save-preprocessed", str(tmp_path))  # again: a-3, nothing replaced
    assert (tmp_path / "a-3.png").exists() and photo.read_bytes() == original


def test_read_only_run_folder_with_resume_fails_before_training(tiny_data: Path, tmpfs):
    folder = tmpfs("runs", size="20m")
    out = folder / "run"
    train(_cfg(tiny_data, epochs=1), out, quiet=True)
    r = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
    r = run_cli(*_args(tiny_data, out, "--resume", "--epochs", "50"))
    assert r.exit_code == 2 and "cannot write here" in r.stderr
    assert "epoch   2/50" not in r.stderr  # refused before any epoch ran


def test_ctrl_c_while_writing_the_final_files_says_how_to_finish(tiny_data: Path, tmp_path: Path, monkeypatch):
    import mnist_cnn.training.outputs as outputs

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs, "write_run_report", interrupted)
    out = tmp_path / "run"
    with pytest.raises(Exception) as err:
        train(_cfg(tiny_data), out, quiet=True)
    msg = str(err.value)
    assert "interrupted while writing the final files" in msg and f"--out {out} --resume" in msg
    monkeypatch.undo()
    assert (out / CHECKPOINT).exists()
    assert train(_cfg(tiny_data), out, resume=True, quiet=True).metrics["epochs_run"] == 1
