"""``evaluate``: accuracy and loss of a saved model or ensemble on the test or validation split."""

from __future__ import annotations

import os
from typing import Any

from mnist_cnn.artifacts.runs import is_ensemble, resolve_model_path, split_of
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import CheckpointError
from mnist_cnn.evaluation.metrics import evaluate_model
from mnist_cnn.inference.ensemble import evaluate_ensemble
from mnist_cnn.models.files import load_model


def evaluate_run(
    run: str | os.PathLike[str], split: str = "test", tta: bool = False, data_dir: Any = None
) -> dict[str, Any]:
    """Accuracy and loss of a saved model (run folder, model file, ``default`` or ensemble folder) on the
    test split, or on the validation split it was trained with (rebuilt from its stored config)."""

    if is_ensemble(run):  # a folder saved by `mnist-cnn ensemble` / `train --ensemble N`
        return evaluate_ensemble(run, split, tta, data_dir)
    model, meta = load_model(resolve_model_path(run))
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir)
    if split == "test":
        x, y = ds.test_images, ds.test_labels
    else:
        spec = split_of(meta.get("config"))
        x, y = ds.validation(spec.val_size, spec.seed)
        if len(y) == 0:
            raise CheckpointError(f"{run}: this model was trained without a validation split (val_size 0)")
    r = evaluate_model(model, x, y, meta["normalisation"], tta=tta)
    return {
        "split": split,
        "accuracy": r.accuracy,
        "loss": r.loss,
        "n": len(y),
        "tta": tta,
        "per_class": r.per_class(ds.classes),
    }
