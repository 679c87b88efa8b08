"""Ensembles: probability averaging, saved like a run, manifest with sha256, evaluate, train --ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_cnn.artifacts.files import sha256_file
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import CheckpointError, ConfigError, RunExistsError
from mnist_cnn.evaluation.metrics import predict_logits
from mnist_cnn.inference.ensemble import build_ensemble, evaluate_ensemble, load_ensemble
from mnist_cnn.models.files import load_model, save_model
from tests.conftest import write_dataset
from tests.helpers import run_cli, tiny_run

RUN_FILES = ("metrics.json", "classification_report.txt", "confusion_matrix.csv", "confusion_matrix.png")


@pytest.fixture(scope="module")
def _shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """One tiny data set and two tiny model1 runs (seeds 0 and 1), shared by this module's tests
    (training is the slow part); tests that modify a run work on a copy."""
    root = tmp_path_factory.mktemp("ens")
    data = write_dataset(root / "data")
    return data, [tiny_run(root, data, name=f"r{s}", seed=s, epochs=1, threads=1).run_dir for s in (0, 1)]


@pytest.fixture
def tiny_data(_shared) -> Path:
    return _shared[0]


@pytest.fixture
def two_runs(_shared) -> list[Path]:
    return _shared[1]


def _probs(run: Path, images: np.ndarray) -> np.ndarray:
    model, meta = load_model(run)
    norm = meta["normalisation"]
    return predict_logits(model, images, norm["mean"], norm["std"]).softmax(1).numpy()


def test_ensemble_averages_member_probabilities_and_is_saved_like_a_run(two_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    m = build_ensemble(two_runs, out, data_dir=tiny_data)
    ds = load_dataset("mnist", tiny_data)
    by_hand = (_probs(two_runs[0], ds.test_images) + _probs(two_runs[1], ds.test_images)) / 2
    assert m["test_accuracy"] == pytest.approx(float((by_hand.argmax(1) == ds.test_labels).mean()))
    for run, acc in zip(two_runs, m["member_accuracy"]):
        assert acc == pytest.approx(json.loads((run / "metrics.json").read_text())["test_accuracy"])
    for name in RUN_FILES + ("ensemble.json",):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_accuracy"] == m["test_accuracy"] and saved["members"] == 2


def test_manifest_lists_relative_paths_and_sha256(two_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    build_ensemble(two_runs, out, data_dir=tiny_data)
    manifest = json.loads((out / "ensemble.json").read_text())
    assert [e["seed"] for e in manifest["members"]] == [0, 1]
    for entry, run in zip(manifest["members"], two_runs):
        assert not Path(entry["path"]).is_absolute()
        # runs outside the ensemble folder are copied into it (members/), so the folder is self-contained
        assert (out / entry["path"]).resolve().is_relative_to(out.resolve()) and entry["path"].startswith("members/")
        assert entry["sha256"] == sha256_file(run / "model.safetensors") == sha256_file(out / entry["path"])
    members, _ = load_ensemble(out)
    assert len(members) == 2


def test_evaluate_cli_reproduces_the_saved_accuracy(two_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    r = run_cli("ensemble", *map(str, two_runs), "--out", str(out), "--data-dir", str(tiny_data))
    assert r.exit_code == 0, r.output
    assert "ensemble of 2" in r.stdout
    saved = json.loads((out / "metrics.json").read_text())
    r = run_cli("evaluate", str(out), "--data-dir", str(tiny_data), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"] == pytest.approx(saved["test_accuracy"])


def test_tta_ensemble_is_evaluated_with_tta(two_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    m = build_ensemble(two_runs, out, tta=True, data_dir=tiny_data)
    assert json.loads((out / "ensemble.json").read_text())["tta"] is True
    again = evaluate_ensemble(out, data_dir=tiny_data)
    assert again["tta"] is True and again["accuracy"] == pytest.approx(m["accuracy"])


def test_changed_or_missing_member_is_a_clear_error(two_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    build_ensemble(two_runs, out, data_dir=tiny_data)
    paths = [e["path"] for e in json.loads((out / "ensemble.json").read_text())["members"]]
    weights = out / paths[1]  # the ensemble's own copy of the member
    original = weights.read_bytes()
    weights.write_bytes((out / paths[0]).read_bytes())
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        evaluate_ensemble(out, data_dir=tiny_data)
    weights.unlink()
    r = run_cli("evaluate", str(out), "--data-dir", str(tiny_data))
    assert r.exit_code != 0 and "is missing" in r.stderr and "Traceback" not in r.output
    weights.write_bytes(original)
    assert evaluate_ensemble(out, data_dir=tiny_data)["members"] == 2  # restored: fine again


def test_incompatible_or_duplicate_members_are_refused(two_runs, tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="list each member once"):
        build_ensemble([two_runs[0], two_runs[0]], tmp_path / "dup", data_dir=tiny_data)
    model, meta = load_model(two_runs[1])
    other = tmp_path / "other.safetensors"
    save_model(other, model, {**meta, "classes": list("abcdefghij")})
    with pytest.raises(ConfigError, match="classes"):
        build_ensemble([two_runs[0], other], tmp_path / "mixed", data_dir=tiny_data)
    r = run_cli("ensemble", "--out", str(tmp_path / "none"))
    assert r.exit_code != 0


def test_existing_ensemble_needs_force(two_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    build_ensemble(two_runs, out, data_dir=tiny_data)
    with pytest.raises(RunExistsError, match="--force"):
        build_ensemble(two_runs, out, data_dir=tiny_data)
    assert build_ensemble(two_runs, out, data_dir=tiny_data, force=True)["members"] == 2


def test_validation_split_only_when_every_member_held_out_the_same_images(tmp_path, tiny_data, two_runs):
    build_ensemble(two_runs, tmp_path / "e1", data_dir=tiny_data)
    with pytest.raises(ConfigError, match="different validation splits"):
        evaluate_ensemble(tmp_path / "e1", "val", data_dir=tiny_data)
    # same seed (same held-out images), two architectures: the validation split is well defined
    runs = [two_runs[0], tiny_run(tmp_path, tiny_data, name="m2", model="model2", seed=0, epochs=1, threads=1).run_dir]
    build_ensemble(runs, tmp_path / "e2", data_dir=tiny_data)
    m = evaluate_ensemble(tmp_path / "e2", "val", data_dir=tiny_data)
    assert m["split"] == "val" and m["n"] == 100


def test_train_ensemble_trains_seeds_into_members_and_resumes(tiny_data, tmp_path):
    out = tmp_path / "ens"
    args = [
        "train",
        "--model",
        "model1",
        "--data-dir",
        str(tiny_data),
        "--epochs",
        "1",
        "--val-size",
        "100",
        "--batch-size",
        "64",
        "--seed",
        "3",
        "--ensemble",
        "2",
        "--out",
        str(out),
        "--quiet",
        "--threads",
        "1",
    ]
    r = run_cli(*args)
    assert r.exit_code == 0, r.output
    seeds = [json.loads((out / f"member-{k}" / "config.json").read_text())["train"]["seed"] for k in (0, 1)]
    assert seeds == [3, 4]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["members"] == 2 and len(metrics["member_wall_seconds"]) == 2
    r = run_cli("evaluate", str(out), "--data-dir", str(tiny_data))
    assert r.exit_code == 0 and f"{100 * metrics['test_accuracy']:.2f}%" in r.stdout

    stamp = (out / "member-0" / "model.safetensors").stat().st_mtime_ns
    r = run_cli(*args)  # neither --resume nor --force
    assert r.exit_code != 0 and "--resume" in r.stderr
    r = run_cli(*args, "--resume")
    assert r.exit_code == 0, r.output
    assert (out / "member-0" / "model.safetensors").stat().st_mtime_ns == stamp  # finished: reused


# --------------------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def same_split_runs(_shared, tmp_path_factory) -> list[Path]:
    """Two members that held out the same validation split (same seed, different learning rates)."""
    root = tmp_path_factory.mktemp("same-split")
    other = tiny_run(root, _shared[0], name="r0-lr", seed=0, epochs=1, threads=1, lr=0.002).run_dir
    return [_shared[1][0], other]


def test_ensemble_of_different_splits_uses_the_members_temperatures(two_runs, tiny_data, tmp_path):
    build_ensemble(two_runs, tmp_path / "ens", data_dir=tiny_data)
    cal = json.loads((tmp_path / "ens" / "ensemble.json").read_text())["calibration"]
    own = [load_model(r)[1]["calibration"]["temperature"] for r in two_runs]
    assert cal["method"] == "temperature" and cal["temperature"] == pytest.approx(np.mean(own))
    assert "mean of the members' temperatures" in cal["fitted_on"]


def test_ensemble_temperature_is_fitted_on_validation_and_used(same_split_runs, tiny_data, tmp_path):
    from mnist_cnn.evaluation.calibration import log_probs, nll, softmax
    from mnist_cnn.inference.predictors import load_predictor

    two_runs = same_split_runs
    out = tmp_path / "ens"
    m = build_ensemble(two_runs, out, data_dir=tiny_data)
    cal = json.loads((out / "ensemble.json").read_text())["calibration"]
    assert cal["method"] == "temperature" and cal["fitted_on"] == "validation split (n=100)"
    assert cal["nll_after"] <= cal["nll_before"] and m["calibration"]["temperature"] == cal["temperature"]
    ds = load_dataset("mnist", tiny_data)
    x, y = ds.validation(100, 0)
    mean = (_probs(two_runs[0], x) + _probs(two_runs[1], x)) / 2
    assert cal["nll_after"] == pytest.approx(nll(log_probs(mean), y, cal["temperature"]), rel=1e-5)
    p = load_predictor(out)
    assert p.temperature == cal["temperature"]
    np.testing.assert_allclose(p.predict_proba(x[:8]), softmax(log_probs(mean[:8]), cal["temperature"]), atol=1e-5)
    assert evaluate_ensemble(out, "test", data_dir=tiny_data)["calibration"]["temperature"] == cal["temperature"]


def test_calibrate_refits_an_ensemble_manifest_only(same_split_runs, tiny_data, tmp_path):
    out = tmp_path / "ens"
    build_ensemble(same_split_runs, out, data_dir=tiny_data)
    manifest = json.loads((out / "ensemble.json").read_text())
    manifest["calibration"] = {"method": "temperature", "temperature": 7.0}
    (out / "ensemble.json").write_text(json.dumps(manifest))
    members = {p: sha256_file(p) for p in out.rglob("*.safetensors")}
    r = run_cli("calibrate", str(out), "--data-dir", str(tiny_data), "--json")
    assert r.exit_code == 0, r.output
    refit = json.loads((out / "ensemble.json").read_text())
    assert refit["calibration"]["temperature"] != 7.0 and refit["members"] == manifest["members"]
    assert json.loads(r.stdout)["written_to"] == str(out / "ensemble.json")
    assert {p: sha256_file(p) for p in out.rglob("*.safetensors")} == members
    manifest["calibration"] = {"method": "temperature", "temperature": -1}
    (out / "ensemble.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"ensemble\.json: metadata field 'calibration\.temperature'"):
        load_ensemble(out)
