"""``evaluate``: accuracy, loss and calibration of a saved model or ensemble on the test or validation
split; ``calibrate``: re-fit a saved model's temperature on the validation split it was trained with."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mnist_cnn.artifacts.runs import MANIFEST, data_dir_for, is_ensemble, resolve_model_path, split_of
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.evaluation.metrics import evaluate_model, fit_calibration
from mnist_cnn.inference.ensemble import calibrate_ensemble, evaluate_ensemble
from mnist_cnn.models.files import load_model, temperature_of, write_calibration


def evaluate_run(
    run: str | os.PathLike[str], split: str = "test", tta: bool = False, data_dir: Any = None
) -> dict[str, Any]:
    """Accuracy and loss of a saved model (run folder, model file, ``default`` or ensemble folder) on the
    test split, or on the validation split it was trained with (rebuilt from its stored config).
    ``calibration``: the model's temperature and the NLL and ECE before and after it (accuracy and
    ``loss``, the raw softmax's NLL, do not depend on it)."""

    if is_ensemble(run):  # a folder saved by `mnist-cnn ensemble` / `train --ensemble N`
        return evaluate_ensemble(run, split, tta, data_dir)
    path = resolve_model_path(run)
    model, meta = load_model(path)
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir_for(run, data_dir, meta.get("config")))
    x, y = (ds.test_images, ds.test_labels) if split == "test" else _validation(ds, meta, run)
    # a model trained with `tta` reported test-time-augmented figures: evaluate reproduces them
    tta = tta or bool((meta.get("config") or {}).get("tta"))
    r = evaluate_model(model, x, y, meta["normalisation"], tta=tta)
    return {
        "split": split,
        "accuracy": r.accuracy,
        "loss": r.loss,
        "calibration": r.calibration(temperature_of(meta, path)),
        "n": len(y),
        "tta": tta,
        "per_class": r.per_class(ds.classes),
    }


def _validation(ds: Any, meta: dict[str, Any], run: Any) -> tuple[Any, Any]:
    """The validation split the model was trained with, rebuilt from its stored config."""
    spec = split_of(meta.get("config"))
    x, y = ds.validation(spec.val_size, spec.seed)
    if len(y) == 0:
        raise CheckpointError(f"{run}: this model was trained without a validation split (val_size 0)")
    return x, y


def calibrate_run(run: str | os.PathLike[str], data_dir: Any = None) -> dict[str, Any]:
    """Fit the temperature of a saved model (run folder, model file, ``default``) on the validation
    split it was trained with and store it in the sidecar JSON next to the weights (the weights file
    is not touched); for an ensemble folder, in its manifest. Returns where it went and the fit."""
    if Path(run).suffix.lower() == ".onnx":
        raise ConfigError(f"{run}: calibrate the model it was exported from, then export it again")
    if is_ensemble(run):
        return {
            "model": str(run),
            "written_to": str(Path(run) / MANIFEST),
            "calibration": calibrate_ensemble(run, data_dir),
        }
    path = resolve_model_path(run)
    model, meta = load_model(path)
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir_for(run, data_dir, meta.get("config")))
    x, y = _validation(ds, meta, run)
    calibration = fit_calibration(model, x, y, meta["normalisation"])
    previous = meta.get("calibration") or {}  # e.g. the bundled default's fit that saw page photos too
    return {
        "model": str(path),
        "written_to": str(write_calibration(path, calibration)),
        "calibration": calibration,
        "replaced": {k: previous[k] for k in ("temperature", "contrast_power", "fitted_on") if k in previous} or None,
    }
