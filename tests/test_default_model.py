"""The bundled default model: tools/make_default_model.py packages a run with its provenance, and a
bundled default.{safetensors,json} (once the real one ships) is consistent and reproducible."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from mnist_cnn.artifacts.files import load_tensors
from mnist_cnn.inference.evaluate import evaluate_run
from tests.helpers import run_cli, tiny_run

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "src" / "mnist_cnn" / "pretrained"


def _tool():
    spec = importlib.util.spec_from_file_location("make_default_model", REPO / "tools" / "make_default_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packaging_a_run_copies_weights_and_writes_provenance(tmp_path, tiny_data):
    run = tiny_run(tmp_path, tiny_data, epochs=1, threads=1).run_dir
    dest = tmp_path / "pretrained"
    assert _tool().main(["--from-run", str(run), "--dest", str(dest), "--data-dir", str(tiny_data)]) == 0
    weights, prov = dest / "default.safetensors", json.loads((dest / "default.json").read_text())
    assert weights.read_bytes() == (run / "model.safetensors").read_bytes()
    assert prov["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["size_bytes"] == weights.stat().st_size
    assert prov["seed"] == 0 and prov["data_checksums"] and prov["command"].startswith("mnist-cnn train")
    run_metrics = json.loads((run / "metrics.json").read_text())
    assert prov["test_accuracy"] == pytest.approx(run_metrics["test_accuracy"])
    assert prov["val_accuracy"] == pytest.approx(run_metrics["val_accuracy"])
    # what `mnist-cnn evaluate` of the packaged file prints is the recorded figure
    assert evaluate_run(weights, data_dir=tiny_data)["accuracy"] == prov["test_accuracy"]
    # the calibration training fitted travels with it, for these weights
    trained = load_tensors(run / "model.safetensors")[1]["calibration"]
    assert prov["calibration"] == {**trained, "weights_sha256": prov["sha256"]}


def test_packaging_carries_the_runs_calibrate_sidecar_over_an_old_default(tmp_path, tiny_data):
    """`mnist-cnn calibrate RUN` wrote model.json: that temperature (not the metadata's) goes into
    default.json, and packaging over a calibrated default of other weights works (its stale
    default.json is replaced, not read as the new weights' sidecar)."""
    from mnist_cnn.inference.predictors import load_predictor
    from mnist_cnn.models.files import write_calibration

    dest = tmp_path / "pretrained"
    first = tiny_run(tmp_path, tiny_data, "first", epochs=1, threads=1).run_dir
    assert _tool().main(["--from-run", str(first), "--dest", str(dest), "--data-dir", str(tiny_data)]) == 0
    run = tiny_run(tmp_path, tiny_data, "second", epochs=1, seed=1, threads=1).run_dir
    write_calibration(run / "model.safetensors", {"method": "temperature", "temperature": 1.7, "fitted_on": "test"})
    assert _tool().main(["--from-run", str(run), "--dest", str(dest), "--data-dir", str(tiny_data)]) == 0
    prov = json.loads((dest / "default.json").read_text())
    assert prov["source_run"] == str(run) and prov["calibration"]["temperature"] == 1.7
    assert prov["calibration"]["weights_sha256"] == prov["sha256"]
    assert load_predictor(dest / "default.safetensors").temperature == 1.7


def test_reproduce_command_is_the_recipe_when_the_config_is_the_recipe(tmp_path):
    from mnist_cnn.training.recipes import recipe_config

    tool = _tool()
    cfg = recipe_config("best").merged({"seed": 3, "data_dir": "/data", "threads": 2}).to_dict()
    assert tool.reproduce_command(cfg, tmp_path) == "mnist-cnn train --recipe best --seed 3"
    cfg["epochs"] = 1
    assert tool.reproduce_command(cfg, tmp_path) == f"mnist-cnn train --config {tmp_path / 'config.json'}"


def test_an_unfinished_run_is_refused(tmp_path, tiny_data, capsys):
    (tmp_path / "half").mkdir()
    assert _tool().main(["--from-run", str(tmp_path / "half"), "--dest", str(tmp_path / "p")]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert not (tmp_path / "p" / "default.json").exists()


@pytest.mark.skipif(
    not (PRETRAINED / "default.safetensors").exists(),
    reason="no default model bundled yet (the lead runs tools/make_default_model.py)",
)
def test_bundled_default_matches_its_provenance():
    weights = PRETRAINED / "default.safetensors"
    prov = json.loads((PRETRAINED / "default.json").read_text())
    assert prov["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["size_bytes"] == weights.stat().st_size
    assert prov["recipe"] == "best" and prov["seed"] == 0


@pytest.mark.skipif(
    not (PRETRAINED / "default.safetensors").exists(),
    reason="no default model bundled yet (the lead runs tools/make_default_model.py)",
)
def test_bundled_default_is_calibrated_for_its_weights():
    """The calibration in default.json is for these weights (the weights file unchanged): fitted on the
    validation split, and, by benchmarks/photo_calibration.py, on page photos of its digits too (with
    the contrast power the predictor uses for photos)."""
    from mnist_cnn.inference.predictors import load_predictor

    prov = json.loads((PRETRAINED / "default.json").read_text())
    cal = prov["calibration"]
    assert cal["method"] == "temperature" and cal["fitted_on"].startswith("validation split (n=5000)")
    assert cal["weights_sha256"] == prov["sha256"] and 0.05 <= cal["temperature"] <= 20
    assert cal["ece_after"] < cal["ece_before"] and cal["nll_after"] < cal["nll_before"]
    default = load_predictor("default")
    assert default.temperature == cal["temperature"] and default.contrast_power == cal.get("contrast_power", 0.0)


@pytest.mark.integration
@pytest.mark.slow  # evaluates all 10,000 real test images
@pytest.mark.skipif(
    not (PRETRAINED / "default.safetensors").exists(),
    reason="no default model bundled yet (the lead runs tools/make_default_model.py)",
)
def test_evaluate_default_reproduces_the_recorded_test_accuracy(real_data):
    prov = json.loads((PRETRAINED / "default.json").read_text())
    r = run_cli("evaluate", "default", "--data-dir", str(real_data), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(prov["test_accuracy"], abs=1e-9)
