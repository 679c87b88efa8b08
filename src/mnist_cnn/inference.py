"""Inference: load a model from a run folder / model file, evaluate it, predict images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import CheckpointError


def resolve_model_path(spec: str | Path) -> Path:
    """A run folder, a .safetensors file, or ``default`` (the model bundled with the package)."""
    if str(spec) == "default":
        path = Path(__file__).parent / "pretrained" / "default.safetensors"
        if not path.exists():
            raise CheckpointError("no default model is bundled with this install; pass --model RUN_DIR")
        return path
    p = Path(spec)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.exists():
        raise CheckpointError(f"{spec}: no such run folder or model file; train one first (mnist-cnn train)")
    return p


def evaluate_run(run: str | Path, split: str = "test", tta: bool = False, data_dir: Any = None) -> dict[str, Any]:
    """Accuracy and loss of a saved model on the test split, or on the validation split it was
    trained with (rebuilt from the seed and size in its stored config)."""
    from .ensemble import evaluate_ensemble, is_ensemble

    if is_ensemble(run):  # a folder saved by `mnist-cnn ensemble` / `train --ensemble N`
        return evaluate_ensemble(run, split, tta, data_dir)
    from .data import load_dataset, train_val_split
    from .evaluation import evaluate_model
    from .models import load_model

    model, meta = load_model(resolve_model_path(run))
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir)
    if split == "test":
        x, y = ds.test_images, ds.test_labels
    else:
        cfg = meta.get("config") or {}
        _, va = train_val_split(ds.train_labels, int(cfg.get("val_size", 5000)), int(cfg.get("seed", 0)))
        if len(va) == 0:
            raise CheckpointError(f"{run}: this model was trained without a validation split (val_size 0)")
        x, y = ds.train_images[va], ds.train_labels[va]
    r = evaluate_model(model, x, y, meta["normalisation"], tta=tta)
    return {"split": split, "accuracy": r.accuracy, "loss": r.loss, "n": len(y), "tta": tta,
            "per_class": r.per_class(ds.classes)}
