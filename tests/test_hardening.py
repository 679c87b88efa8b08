"""Bad checkpoints, nonsense CLI flags, bad config files, read-only output and a full disk:
each a one-line error naming the thing and the fix, exit != 0, no traceback, no partial file.

``python -m tests.test_hardening`` prints the tables of cases and messages for docs/reliability.md.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mnist_cnn.artifacts.files import atomic_write_json, load_tensors, save_tensors
from mnist_cnn.errors import CheckpointError, OutputError
from mnist_cnn.models.files import load_model, save_model
from mnist_cnn.models.registry import create_model
from tests.conftest import write_dataset
from tests.helpers import run_cli, serve_files, tiny_train_argv

META = {"normalisation": {"mean": 0.13, "std": 0.31}, "classes": [str(i) for i in range(10)], "dataset": "mnist"}


def _one_error_line(stderr: str) -> str:
    """The CLI's single `error:` line (after any checksum warnings about the synthetic data)."""
    lines = [ln for ln in stderr.strip().splitlines() if not ln.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- checkpoints


def _good(path: Path) -> Path:
    save_model(path, create_model("model1"), META)
    return path


def _truncated(path: Path) -> Path:
    blob = _good(path).read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def _header_only(path: Path) -> Path:
    path.write_bytes(_good(path).read_bytes()[:6])
    return path


def _huge_header_length(path: Path) -> Path:
    blob = _good(path).read_bytes()
    path.write_bytes((2**62).to_bytes(8, "little") + blob[8:])
    return path


def _weights(path: Path, change: Callable[[dict[str, torch.Tensor]], None], meta: dict | None = None) -> Path:
    model = create_model("model1")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    change(sd)
    save_tensors(path, sd, {"format": "mnist-cnn/1", "arch": {"name": "model1", "kwargs": {}}, **(meta or META)})
    return path


def _wrong_shape(sd: dict[str, torch.Tensor]) -> None:
    sd["classifier.0.weight"] = torch.zeros(64, 128)


def _wrong_dtype(sd: dict[str, torch.Tensor]) -> None:
    sd["features.0.weight"] = sd["features.0.weight"].double()


def _arch(path: Path, arch: object) -> Path:
    save_tensors(path, dict(create_model("model1").state_dict()), {"arch": arch, **META})
    return path


def _nan_weight(sd: dict[str, torch.Tensor]) -> None:
    sd["classifier.3.weight"][0, 0] = float("nan")


def _meta(path: Path, **changes: object) -> Path:
    """model1's weights with some metadata fields replaced."""
    return _weights(path, lambda sd: None, {**META, **changes})


def _no_metadata(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(dict(create_model("model1").state_dict()), str(path))
    return path


def _metadata_lacks_normalisation(path: Path) -> Path:
    save_tensors(
        path,
        dict(create_model("model1").state_dict()),
        {"arch": {"name": "model1", "kwargs": {}}, "classes": META["classes"]},
    )
    return path


def _metadata_not_json(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(path), metadata={"mnist_cnn": "{not json"})
    return path


class Payload:
    """Unpickling this creates ``marker``: proof of code execution."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle(path: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": Payload(path.parent / "PWNED")}))
    return path


def _torch_save(path: Path) -> Path:
    torch.save({"model": Payload(path.parent / "PWNED")}, path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


# case -> (make a bad model file at the given path, fragment of the message)
BAD_CHECKPOINTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated safetensors (half the file)": (_truncated, "not a valid safetensors file"),
    "truncated to 6 bytes": (_header_only, "not a valid safetensors file"),
    "header length 2^62": (_huge_header_length, "not a valid safetensors file"),
    "empty file": (lambda p: (p.write_bytes(b""), p)[1], "not a valid safetensors file"),
    "tensor of the wrong shape": (
        lambda p: _weights(p, _wrong_shape),
        "classifier.0.weight: (64, 128) torch.float32 in file, model needs (128, 128)",
    ),
    "tensor of the wrong dtype (float64)": (lambda p: _weights(p, _wrong_dtype), "torch.float64 in file"),
    "tensor missing": (lambda p: _weights(p, lambda sd: sd.pop("classifier.3.bias")), "missing classifier.3.bias"),
    "unknown architecture": (
        lambda p: _arch(p, {"name": "resnet999", "kwargs": {}}),
        "unknown architecture 'resnet999'; this mnist-cnn knows: bncnn",
    ),
    "architecture with an unknown option": (
        lambda p: _arch(p, {"name": "model1", "kwargs": {"depth": 9}}),
        "has no option(s) depth",
    ),
    "architecture missing from metadata": (lambda p: _arch(p, None), "has no architecture"),
    "architecture option of the wrong sign": (
        lambda p: _arch(p, {"name": "model1", "kwargs": {"num_classes": -3}}),
        "num_classes must be a positive integer",
    ),
    "architecture options not an object": (
        lambda p: _arch(p, {"name": "model1", "kwargs": [1, 2]}),
        "metadata field 'arch.kwargs' must be an object",
    ),
    "NaN in a weight tensor": (lambda p: _weights(p, _nan_weight), "tensor classifier.3.weight holds non-finite"),
    "normalisation std 0": (
        lambda p: _meta(p, normalisation={"mean": 0.13, "std": 0}),
        "metadata field 'normalisation.std' must be > 0",
    ),
    "normalisation mean NaN": (
        lambda p: _meta(p, normalisation={"mean": float("nan"), "std": 0.31}),
        "metadata field 'normalisation.mean' must be a finite number",
    ),
    "classes empty": (lambda p: _meta(p, classes=[]), "metadata field 'classes' must be a non-empty list"),
    "classes not a list": (lambda p: _meta(p, classes="0123456789"), "'classes' must be a non-empty list"),
    "classes fewer than the outputs": (
        lambda p: _meta(p, classes=list("012345678")),
        "'classes' names 9 classes but the model outputs 10",
    ),
    "no metadata at all (plain safetensors)": (_no_metadata, "has no mnist_cnn metadata"),
    "metadata lacks normalisation": (_metadata_lacks_normalisation, "metadata lacks 'normalisation'"),
    "metadata is not JSON": (_metadata_not_json, "metadata is not valid JSON"),
    "pickle renamed to .safetensors": (_pickle, "not a valid safetensors file"),
    "torch.save zip renamed to .safetensors": (_torch_save, "not a valid safetensors file"),
    "a folder named model.safetensors": (_folder, "no such run folder or model file"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_a_one_line_checkpoint_error(tmp_path, case):
    make, fragment = BAD_CHECKPOINTS[case]
    path = make(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg and fragment in msg, msg
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_through_evaluate(tmp_path, tiny_data, case):
    path = BAD_CHECKPOINTS[case][0](tmp_path / "model.safetensors")
    r = run_cli("evaluate", str(path), "--data-dir", str(tiny_data))
    assert r.exit_code == 2 and r.stdout == ""
    assert str(tmp_path) in _one_error_line(r.stderr)


@pytest.mark.parametrize("make", [_pickle, _torch_save])
def test_pickle_payload_is_live_but_never_executed(tmp_path, make):
    path = make(tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError):
        load_model(path)
    with pytest.raises(CheckpointError):
        load_tensors(path)
    r = subprocess.run(
        [sys.executable, "-m", "mnist_cnn", "evaluate", str(path)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "not a valid safetensors file" in _one_error_line(r.stderr)
    assert not (tmp_path / "PWNED").exists()
    # the control: unpickling the very same file does run the payload, so the check above can fail
    if make is _pickle:
        pickle.loads(path.read_bytes())
    else:
        pt = shutil.copy(path, tmp_path / "model.pt")  # torch.load reads *.safetensors names as safetensors
        torch.load(pt, weights_only=False)
    assert (tmp_path / "PWNED").exists()


def test_resume_from_a_file_that_is_not_a_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    args = _train_argv(tiny_data, out)
    assert run_cli(*args).exit_code == 0
    shutil.copy(out / "model.safetensors", out / "checkpoint.safetensors")
    r = run_cli(*args, "--resume")
    assert r.exit_code == 2 and "not a training checkpoint" in _one_error_line(r.stderr)
    _truncated(out / "checkpoint.safetensors")
    r = run_cli(*args, "--resume")
    assert r.exit_code == 2 and "not a valid safetensors file" in _one_error_line(r.stderr)


def test_resume_with_a_checkpoint_of_another_architecture(tiny_data, tmp_path):
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.engine import train

    cfg = TrainConfig(data_dir=str(tiny_data), epochs=1, batch_size=64, val_size=100)
    train(cfg, tmp_path / "a", quiet=True)
    tensors, meta = load_tensors(tmp_path / "a" / "checkpoint.safetensors")
    tensors["model.classifier.0.weight"] = torch.zeros(3, 3)
    save_tensors(tmp_path / "a" / "checkpoint.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="does not fit this run .* start the run again with --force"):
        train(TrainConfig(epochs=2), tmp_path / "a", resume=True, quiet=True)


# --------------------------------------------------------------------------- CLI flags


# case -> (train arguments, fragment of the message)
BAD_FLAGS: dict[str, tuple[list[str], str]] = {
    "unknown model": (
        ["--model", "resnet"],
        "unknown model 'resnet'; valid models: bncnn, convnet, fastnet, hvcnet, model1",
    ),
    "unknown recipe": (["--recipe", "turbo"], "unknown recipe 'turbo'; valid recipes: seed, fast99"),
    "negative epochs": (["--epochs", "-3"], "epochs=-3 must be between 1 and 100,000"),
    "zero epochs": (["--epochs", "0"], "epochs=0 must be between 1 and 100,000"),
    "batch size 0": (["--batch-size", "0"], "batch_size=0 must be between 1 and 1,000,000"),
    "negative learning rate": (["--lr", "-0.1"], "lr=-0.1 must be a number in (0, 10]"),
    "learning rate inf": (["--lr", "inf"], "lr=inf must be a number in (0, 10]"),
    "learning rate nan": (["--lr", "nan"], "lr=nan must be a number in (0, 10]"),
    "weight decay inf": (["--weight-decay", "inf"], "weight_decay=inf must be a number <= 1"),
    "val-size = train size": (["--val-size", "600"], "val_size=600 must be smaller than the training set (600 images)"),
    "val-size > train size": (["--val-size", "10000"], "val_size=10000 must be smaller than the training set"),
    "negative val-size": (["--val-size", "-1"], "val_size=-1 must be >= 0"),
    "patience 0": (["--early-stopping-patience", "0"], "early_stopping_patience=0 must be >= 1"),
    "patience without validation": (["--val-size", "0", "--early-stopping-patience", "2"], "needs a validation split"),
    "label smoothing 1": (["--label-smoothing", "1"], "label_smoothing=1.0 must be in [0, 1)"),
    "threads 0": (["--threads", "0"], "threads=0 must be between 1 and"),
    "train subset 0": (["--train-subset", "0"], "train_subset=0 must be >= 1"),
    "unknown augmentation": (["--augment", "sideways"], "unknown augmentation 'sideways'; valid presets"),
    "device cuda without a GPU": (["--device", "cuda"], "no CUDA GPU is available here"),
    "device nonsense": (["--device", "tpu"], "device='tpu' must be auto, cpu, cuda[:N], mps or xpu[:N]"),
    "epochs not a number": (["--epochs", "ten"], "Invalid value for '--epochs': 'ten' is not a valid integer"),
    "unknown flag": (["--epoch", "3"], "No such option '--epoch'. (Did you mean one of: '--epochs'"),
    "unknown optimizer": (["--optimizer", "rmsprop"], "Invalid value for '--optimizer'"),
}


def _train_argv(tiny_data: Path, out: Path, *extra: str) -> list[str]:
    return tiny_train_argv(tiny_data, out, "--quiet", *extra)


def _train(tiny_data: Path, out: Path, *extra: str):
    return run_cli(*_train_argv(tiny_data, out, *extra))


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_nonsense_flag_is_one_line_and_writes_nothing(tiny_data, tmp_path, case):
    if case == "device cuda without a GPU" and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    args, fragment = BAD_FLAGS[case]
    r = _train(tiny_data, tmp_path / "run", *args)
    assert r.exit_code == 2 and r.stdout == ""
    assert fragment in _one_error_line(r.stderr)
    leftover = list((tmp_path / "run").iterdir()) if (tmp_path / "run").exists() else []
    assert leftover == []  # at most an empty run folder


def test_existing_run_dir_without_resume_or_force(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert _train(tiny_data, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = _train(tiny_data, out)
    assert r.exit_code == 2
    assert _one_error_line(r.stderr) == (
        f"error: {out}: run folder already exists; pass --resume to continue it, "
        "--force to overwrite it, or choose another --out"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "file").write_text("x")
    r = _train(tiny_data, tmp_path / "file")
    assert r.exit_code == 2 and "exists and is not a folder" in _one_error_line(r.stderr)
    r = _train(tiny_data, tmp_path / "fresh", "--resume")
    assert r.exit_code == 2 and "no checkpoint.safetensors to resume from" in _one_error_line(r.stderr)


@pytest.mark.parametrize("args", [["--model", "nope"], ["--epochs", "-1"], ["--batch-size", "0"]])
def test_bad_flags_in_a_real_process(tiny_data, tmp_path, args):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_cnn",
            "train",
            "--data-dir",
            str(tiny_data),
            "--out",
            str(tmp_path / "run"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    _one_error_line(r.stderr)


# --------------------------------------------------------------------------- config files


VALID_KEYS_START = "valid keys: augment, batch_size, betas"

# case -> (file content, fragment of the message)
BAD_CONFIGS: dict[str, tuple[str | bytes, str]] = {
    "invalid JSON (trailing comma)": ('{"epochs": 3,}', "invalid JSON at line 1 column 14"),
    "empty file": ("", "invalid JSON at line 1 column 1"),
    "not UTF-8": (b"\xff\xfe{\x00", "cannot read config file"),
    "a list, not an object": ("[1, 2]", "expected a JSON object of training options"),
    "unknown keys": (
        '{"epochs": 1, "lerning_rate": 0.1, "bach": 3}',
        f"unknown key(s) bach, lerning_rate; {VALID_KEYS_START}",
    ),
    "epochs is a string": ('{"epochs": "ten"}', 'epochs must be an integer, got "ten"'),
    "epochs is a float": ('{"epochs": 2.5}', "epochs must be an integer, got 2.5"),
    "epochs is a bool": ('{"epochs": true}', "epochs must be an integer, got true"),
    "lr is a string": ('{"lr": "fast"}', 'lr must be a number, got "fast"'),
    "model is a number": ('{"model": 3}', "model must be a string, got 3"),
    "betas has one value": ('{"betas": [0.9]}', "betas must be a list of two numbers"),
    "seed is null": ('{"seed": null}', "seed must not be null"),
    "model_kwargs is a list": ('{"model_kwargs": [1]}', "model_kwargs must be an object"),
    "a value out of range": ('{"lr": -1}', "lr=-1.0 must be a number in (0, 10]"),
    "unknown model option": ('{"model_kwargs": {"depth": 9}}', "model 'model1' has no option(s) depth"),
    "a run's config.json with a bad train section": ('{"train": {"epochs": "x"}}', "epochs must be an integer"),
}


def _config_file(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "cfg.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_file_is_one_line(tiny_data, tmp_path, case):
    content, fragment = BAD_CONFIGS[case]
    r = _train(tiny_data, tmp_path / "run", "--config", str(_config_file(tmp_path, content)))
    assert r.exit_code == 2 and r.stdout == ""
    line = _one_error_line(r.stderr)
    assert fragment in line, line
    if case not in ("a value out of range", "unknown model option"):  # those name the field, not the file
        assert str(tmp_path / "cfg.json") in line
    assert not (tmp_path / "run" / "config.json").exists()


def test_config_file_missing_or_a_folder(tiny_data, tmp_path):
    r = _train(tiny_data, tmp_path / "run", "--config", str(tmp_path / "nope.json"))
    assert r.exit_code == 2 and "nope.json: config file not found" in _one_error_line(r.stderr)
    r = _train(tiny_data, tmp_path / "run", "--config", str(tmp_path))
    assert r.exit_code == 2 and "cannot read config file" in _one_error_line(r.stderr)


def test_a_good_config_file_is_used_and_flags_override_it(tiny_data, tmp_path):
    path = _config_file(tmp_path, json.dumps({"epochs": 3, "batch_size": 100, "lr": 0.002}))
    r = _train(tiny_data, tmp_path / "run", "--config", str(path))  # _train passes --epochs 1 after it
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert (saved["epochs"], saved["batch_size"], saved["lr"]) == (1, 64, 0.002)


# --------------------------------------------------------------------------- read-only folder, full disk


def test_read_only_output_folder(tiny_data, tmp_path, tmpfs):
    ro = tmpfs("ro", ro=True)
    r = _train(tiny_data, ro / "run")
    assert r.exit_code == 2
    assert _one_error_line(r.stderr) == (
        f"error: {ro / 'run'}: cannot create run folder (Read-only file system); choose a writable --out"
    )
    r = run_cli("data", "download", "--data-dir", str(ro / "data"), "--mirror", "http://127.0.0.1:9/")
    assert r.exit_code == 2 and "Read-only file system" in _one_error_line(r.stderr)
    assert os.listdir(ro) == []


def test_read_only_folder_in_a_real_process(tiny_data, tmp_path, tmpfs):
    ro = tmpfs("ro", ro=True)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_cnn",
            "train",
            "--data-dir",
            str(tiny_data),
            "--epochs",
            "1",
            "--val-size",
            "100",
            "--out",
            str(ro / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "cannot create run folder (Read-only file system)" in _one_error_line(r.stderr)


def test_disk_full_during_training(tiny_data, tmp_path, tmpfs):
    """512 KB hold config.json but not the first epoch's checkpoint (model + Adam state, 1.3 MB)."""
    full = tmpfs("full", size="512k")
    out = full / "run"
    r = _train(tiny_data, out, "--epochs", "2")
    assert r.exit_code == 2
    assert _one_error_line(r.stderr) == (
        f"error: {out / 'checkpoint.safetensors'}: no space left on device; free some space or write to another folder"
    )
    assert sorted(os.listdir(out)) == [".lock", "config.json"]  # no partial checkpoint, no temporary file
    json.loads((out / "config.json").read_text())  # complete


def test_disk_full_during_download(tmp_path, tmpfs, server, files):
    """``server`` and ``files``: the local download mirror of conftest.py."""
    url, mirror = server("a")
    serve_files(mirror, files)
    full = tmpfs("full", size="64k")  # the 600-image training file alone is ~470 KB gzipped
    r = run_cli("data", "download", "--data-dir", str(full), "--mirror", url, "--timeout", "5")
    assert r.exit_code == 2
    line = _one_error_line(r.stderr.replace("downloaded ", "warning: downloaded "))
    assert "no space left on device; free some space" in line and len(mirror.requests) <= 4
    assert all(not n.startswith(".") for n in os.listdir(full))  # complete files only, no temporaries
    for name in os.listdir(full):
        assert (full / name).read_bytes() == files[name]


def _enospc_on(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make renaming a temporary file onto ``name`` fail as on a full disk."""
    import mnist_cnn.artifacts.files as files_mod

    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(files_mod.os, "replace", replace)


def test_disk_full_when_writing_metrics_then_resume_finishes(tiny_data, tmp_path, monkeypatch):
    """(monkeypatched os.replace: runs without root) The run fails at metrics.json with a clear
    error and no metrics file; with space back, --resume writes the missing artifacts."""
    out = tmp_path / "run"
    _enospc_on(monkeypatch, "metrics.json")
    r = _train(tiny_data, out)
    assert r.exit_code == 2
    assert _one_error_line(r.stderr) == (
        f"error: {out / 'metrics.json'}: no space left on device; free some space or write to another folder"
    )
    assert not (out / "metrics.json").exists() and not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    r = _train(tiny_data, out, "--resume")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 1


def test_write_error_mid_file_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": True})

    def half_then_enospc(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_enospc)
    with pytest.raises(OutputError, match="no space left on device"):
        atomic_write_json(target, {"new": list(range(1000))})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": True}  # the old file, intact
    assert os.listdir(tmp_path) == ["metrics.json"]


# --------------------------------------------------------------------------- tables for the docs


def _first_error(argv: list[str]) -> str:
    r = run_cli(*argv)
    return _one_error_line(r.stderr)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_dataset(root / "data")
        print("| bad model file | message (`mnist-cnn evaluate FILE`, exit 2) |\n| --- | --- |")
        for i, (name, (make, _)) in enumerate(BAD_CHECKPOINTS.items()):
            (root / f"c{i}").mkdir()
            path = make(root / f"c{i}" / "model.safetensors")
            message = _first_error(["evaluate", str(path), "--data-dir", str(data)])
            print(f"| {name} | `` {message.replace(tmp, '$TMP')} `` |")
        print("\n| bad flag | message (`mnist-cnn train ...`, exit 2) |\n| --- | --- |")
        for name, (args, _) in BAD_FLAGS.items():
            argv = _train_argv(data, root / "flags", *args)
            print(f"| {name}: `{' '.join(args)}` | `` {_first_error(argv).replace(tmp, '$TMP')} `` |")
        print("\n| bad config file | message (`mnist-cnn train --config FILE`, exit 2) |\n| --- | --- |")
        for name, (content, _) in BAD_CONFIGS.items():
            cfg = _config_file(root, content)
            argv = _train_argv(data, root / "cfg", "--config", str(cfg))
            print(f"| {name} | `` {_first_error(argv).replace(tmp, '$TMP')} `` |")
