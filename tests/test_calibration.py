"""Temperature scaling and calibration error: fitted temperatures recover known ones, ECE measures
what it should, and a model's calibration is stored, validated and used (model file sidecar, CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_cnn.errors import CheckpointError
from mnist_cnn.evaluation.calibration import (
    T_MAX,
    T_MIN,
    calibration_record,
    contrast_factors,
    contrast_power,
    expected_calibration_error,
    fit_contrast_temperature,
    fit_temperature,
    nll,
    not_fitted,
    reliability_bins,
    rescale_probs,
    soften,
    softmax,
)
from tests.helpers import run_cli


def calibrated_set(n: int = 20000, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn *from* softmax(logits): perfectly calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, classes))
    p = softmax(logits)
    labels = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1)
    return logits, np.minimum(labels, classes - 1)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_fitted_temperature_undoes_a_known_scaling(scale: float) -> None:
    logits, labels = calibrated_set()
    t = fit_temperature(logits * scale, labels)
    assert t == pytest.approx(scale, rel=0.05)
    assert nll(logits * scale, labels, t) <= nll(logits * scale, labels) + 1e-12


def test_fit_stays_in_bounds_and_needs_data() -> None:
    logits = np.array([[10.0, 0.0], [10.0, 0.0]])
    assert T_MIN <= fit_temperature(logits, np.array([1, 1])) <= T_MAX  # always wrong: as flat as allowed
    assert fit_temperature(logits, np.array([0, 0])) == pytest.approx(T_MIN, rel=1e-3)  # always right: sharpest
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((0, 10)), np.zeros(0, dtype=int))


def test_ece_of_calibrated_and_overconfident_sets() -> None:
    logits, labels = calibrated_set()
    assert expected_calibration_error(softmax(logits), labels) < 0.015
    assert expected_calibration_error(softmax(logits * 3), labels) > 0.15  # over-confident
    assert expected_calibration_error(softmax(logits / 3), labels) > 0.1  # under-confident
    # every answer right at confidence 1: no gap; always wrong at confidence 1: the whole gap
    one_hot = np.eye(10)[[1, 2, 3]]
    assert expected_calibration_error(one_hot, np.array([1, 2, 3])) == 0
    assert expected_calibration_error(one_hot, np.array([0, 0, 0])) == 1


def test_reliability_bins_count_every_answer() -> None:
    logits, labels = calibrated_set(n=5000)
    bins = reliability_bins(softmax(logits), labels, n_bins=10)
    assert len(bins.edges) == 11 and bins.counts.sum() == 5000
    used = bins.counts > 0
    assert np.all((bins.confidence[used] >= bins.edges[:-1][used]) & (bins.confidence[used] <= bins.edges[1:][used]))
    assert np.isnan(bins.confidence[~used]).all()


def test_rescaled_probabilities_equal_scaled_logits() -> None:
    logits, _ = calibrated_set(n=100)
    np.testing.assert_allclose(rescale_probs(softmax(logits), 2.5), softmax(logits, 2.5), atol=1e-6)
    assert rescale_probs(softmax(logits), 1.0).dtype == np.float32


def test_record_says_what_it_was_fitted_on() -> None:
    logits, labels = calibrated_set(n=3000)
    rec = calibration_record(logits * 3, labels)
    assert rec["method"] == "temperature" and rec["fitted_on"] == "validation split (n=3000)"
    assert rec["nll_after"] < rec["nll_before"] and rec["ece_after"] < rec["ece_before"]
    assert json.loads(json.dumps(rec)) == rec  # plain JSON for the model's metadata
    assert not_fitted("why")["temperature"] == 1.0


# --------------------------------------------------------------------------- stored with the model


def test_trained_model_carries_its_calibration_and_old_files_load_as_t1(run_dir, tmp_path) -> None:
    from mnist_cnn.artifacts.files import load_tensors, save_tensors
    from mnist_cnn.inference.predictors import load_predictor

    _, meta = load_tensors(run_dir / "model.safetensors")
    cal = meta["calibration"]
    assert cal["method"] == "temperature" and T_MIN <= cal["temperature"] <= T_MAX
    assert cal["fitted_on"].startswith("validation split (n=")
    tensors, meta = load_tensors(run_dir / "model.safetensors")
    del meta["calibration"]
    save_tensors(tmp_path / "old.safetensors", tensors, meta)  # a file from before calibration
    assert load_predictor(tmp_path / "old.safetensors").temperature == 1.0


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "2", True, None])
def test_a_bad_temperature_is_refused_naming_file_and_field(run_dir, tmp_path, bad) -> None:
    from mnist_cnn.artifacts.files import load_tensors, save_tensors
    from mnist_cnn.models.files import load_model

    tensors, meta = load_tensors(run_dir / "model.safetensors")
    meta["calibration"] = {"method": "temperature", "temperature": bad}
    save_tensors(tmp_path / "bad.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: metadata field 'calibration\.temperature'"):
        load_model(tmp_path / "bad.safetensors")


def test_calibrate_writes_a_sidecar_and_keeps_the_weights(tmp_path, tiny_data) -> None:
    from mnist_cnn.artifacts.files import sha256_file
    from mnist_cnn.inference.predictors import load_predictor
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path, tiny_data, epochs=1, threads=1).run_dir
    weights = run / "model.safetensors"
    before = sha256_file(weights)
    r = run_cli("calibrate", str(run), "--data-dir", str(tiny_data), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["written_to"] == str(run / "model.json") and sha256_file(weights) == before
    side = json.loads((run / "model.json").read_text())["calibration"]
    assert side["weights_sha256"] == before and side["temperature"] == out["calibration"]["temperature"]
    assert load_predictor(run).temperature == pytest.approx(side["temperature"])
    assert out["replaced"]["fitted_on"] == "validation split (n=100)"  # the fit training stored
    # a different kind of fit (as the bundled default's, which saw page photos) is named when replaced
    from mnist_cnn.models.files import write_calibration

    write_calibration(weights, {**side, "temperature": 0.6, "fitted_on": "validation split and page photos"})
    r = run_cli("calibrate", str(run), "--data-dir", str(tiny_data))
    assert r.exit_code == 0 and "replaces temperature 0.6000, fitted on validation split and page photos" in r.output
    photos = {**side, "temperature": 0.5, "contrast_power": 0.7, "fitted_on": "validation split and page photos"}
    write_calibration(weights, photos)
    assert load_predictor(run).contrast_power == 0.7
    r = run_cli("calibrate", str(run), "--data-dir", str(tiny_data))
    assert "replaces temperature 0.5000 and contrast power 0.7000, fitted on validation split and page" in r.output
    assert load_predictor(run).contrast_power == 0.0  # a fit on clean digits only has none
    # the sidecar is for these weights only: other weights under the same name are refused
    (run / "model.json").write_text(json.dumps({"calibration": {**side, "weights_sha256": "0" * 64}}))
    r = run_cli("predict", str(tmp_path), "--model", str(run))
    assert r.exit_code == 2 and "fitted for other weights" in r.output and "Traceback" not in r.output


def test_calibrate_refuses_a_model_without_validation_split(tmp_path, tiny_data) -> None:
    from tests.helpers import tiny_run

    run = tiny_run(tmp_path, tiny_data, epochs=1, threads=1, val_size=0).run_dir
    from mnist_cnn.artifacts.files import load_tensors

    assert load_tensors(run / "model.safetensors")[1]["calibration"]["method"] == "none"
    r = run_cli("calibrate", str(run), "--data-dir", str(tiny_data))
    assert r.exit_code == 2 and "without a validation split" in r.output


def test_cli_and_library_default_thresholds_agree() -> None:
    from mnist_cnn.cli.inference import DEFAULT_MIN_CONFIDENCE as CLI_DEFAULT
    from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE

    assert CLI_DEFAULT == DEFAULT_MIN_CONFIDENCE


def test_run_report_shows_calibration_and_a_reliability_diagram(run_dir) -> None:
    html = (run_dir / "report.html").read_text()
    assert "Calibration" in html and "ECE before" in html and "reliability diagram" in html
    assert (run_dir / "metrics_reliability.png").stat().st_size > 1000


def test_evaluate_reports_ece_before_and_after(run_dir) -> None:
    from mnist_cnn.inference.evaluate import evaluate_run
    from mnist_cnn.models.files import model_calibration

    data = run_dir.parent / "data"
    r = evaluate_run(run_dir, "val", data_dir=data)
    cal = model_calibration(run_dir)
    assert r["calibration"]["temperature"] == cal["temperature"]
    # on the split it was fitted on, the fit reproduces (the stored figures are those of the fit)
    assert r["calibration"]["nll_after"] == pytest.approx(cal["nll_after"], rel=1e-4)
    assert r["calibration"]["nll_after"] <= r["calibration"]["nll_before"] + 1e-9
    assert r["calibration"]["ece_before"] == pytest.approx(cal["ece_before"], abs=1e-6)


def test_weights_count_a_row_that_many_times() -> None:
    logits, labels = calibrated_set(n=2000)
    logits = logits * 2.0  # over-confident, so the fit moves T away from 1
    w = np.where(np.arange(2000) < 500, 3, 1)
    tiled = (np.concatenate([logits, logits[:500], logits[:500]]), np.concatenate([labels, labels[:500], labels[:500]]))
    assert nll(logits, labels, 1.3, weights=w) == pytest.approx(nll(*tiled, 1.3))
    assert fit_temperature(logits, labels, weights=w) == pytest.approx(fit_temperature(*tiled), rel=1e-5)
    assert fit_temperature(logits, labels, weights=np.ones(2000)) == pytest.approx(fit_temperature(logits, labels))


# --------------------------------------------------------------------------- faint ink: the contrast power


def contrast_set(power: float, t: float = 0.6, n: int = 30000, seed: int = 1) -> tuple[np.ndarray, ...]:
    """Scores, labels and contrasts whose labels are drawn from softmax(scores / (t * (255 / c) ** power)):
    calibrated by construction at that temperature and power (a quarter of the rows have no contrast)."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 4.0, (n, 10))
    c = rng.uniform(20, 255, n)
    c[: n // 4] = np.nan  # MNIST-format tensors: not preprocessed
    p = softmax(scores / (t * contrast_factors(c, power))[:, None])
    labels = np.minimum((rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1), 9)
    return scores, labels, c


def test_contrast_factors_are_one_at_full_contrast_and_without_one() -> None:
    f = contrast_factors([255.0, np.nan, 127.5, 1000.0, 0.0], 0.7)
    assert f[:2] == pytest.approx([1.0, 1.0]) and f[2] == pytest.approx(2**0.7) and f[3] == 1.0
    assert f[4] == pytest.approx(255**0.7)  # clipped to 1 grey level, not a division by zero
    assert np.all(contrast_factors([30.0, 90.0], 0.0) == 1.0)


def test_soften_raises_each_rows_temperature_and_keeps_the_answer() -> None:
    logits, _ = calibrated_set(n=50)
    p = softmax(logits, 0.5).astype(np.float32)
    f = np.linspace(1.0, 3.0, 50)
    out = soften(p, f)
    assert np.allclose(out, softmax(logits / f[:, None], 0.5), atol=1e-5)  # the same as dividing the logits
    assert (out.argmax(1) == p.argmax(1)).all() and np.all(out.max(1) <= p.max(1) + 1e-6)
    assert np.array_equal(soften(p, np.ones(50)), p)


@pytest.mark.parametrize("power", [0.0, 0.7, 1.5])
def test_fitted_contrast_power_recovers_a_known_one(power: float) -> None:
    scores, labels, c = contrast_set(power)
    t, q = fit_contrast_temperature(scores, labels, c)
    assert t == pytest.approx(0.6, rel=0.06) and q == pytest.approx(power, abs=0.12)
    plain = fit_temperature(scores, labels)
    f = contrast_factors(c, q)[:, None]
    assert nll(scores / f, labels, t) <= nll(scores, labels, plain) + 1e-9  # never worse than one temperature


@pytest.mark.parametrize("bad", [-0.1, 3.5, float("nan"), "1", True, None])
def test_a_bad_contrast_power_is_refused_naming_file_and_field(bad) -> None:
    with pytest.raises(CheckpointError, match=r"m\.json: metadata field 'calibration\.contrast_power'"):
        contrast_power({"temperature": 0.5, "contrast_power": bad}, "m.json")
    assert contrast_power({"temperature": 0.5}, "m.json") == 0.0 and contrast_power(None, "m.json") == 0.0
