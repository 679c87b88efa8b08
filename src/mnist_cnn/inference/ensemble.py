"""Ensembles: average the class probabilities of several trained models.

An ensemble folder is saved like a run folder (``metrics.json``, ``classification_report.txt``,
``confusion_matrix.{csv,png}``) plus ``ensemble.json``, the manifest: each member's weights file
(a path relative to the ensemble folder) and its sha256, so a member that is later retrained or
damaged is detected instead of silently changing the ensemble. Members are referenced, not copied.

Every member gets the same weight: nothing is selected, so no test (or validation) result feeds
back into the ensemble. Training the members of a new ensemble is :mod:`mnist_cnn.training.ensemble`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mnist_cnn.artifacts.files import atomic_write_json, read_json, sha256_file
from mnist_cnn.artifacts.runs import MANIFEST, is_ensemble, resolve_model_path, split_of
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import CheckpointError, ConfigError, RunExistsError
from mnist_cnn.evaluation.metrics import predict_logits, result_from_probs
from mnist_cnn.models.files import load_model
from mnist_cnn.reports.run import write_eval_artifacts

FORMAT = "mnist-cnn-ensemble/1"


@dataclass
class Member:
    path: Path  # the weights file
    sha256: str
    model: nn.Module
    meta: dict[str, Any]


def load_member(spec: str | os.PathLike[str]) -> Member:
    """A run folder or .safetensors file (or ``default``) as an ensemble member."""

    path = resolve_model_path(spec)
    model, meta = load_model(path)
    return Member(path.resolve(), sha256_file(path), model, meta)


def _check_compatible(members: Sequence[Member]) -> None:
    if not members:
        raise ConfigError("an ensemble needs at least one member (run folder or model file)")
    first = members[0]
    for m in members[1:]:
        for key in ("dataset", "classes"):
            if m.meta.get(key) != first.meta.get(key):
                raise ConfigError(
                    f"{m.path}: its {key} {m.meta.get(key)!r} differs from {first.path}'s "
                    f"{first.meta.get(key)!r}; ensemble only models of the same data set"
                )
    seen: dict[str, Path] = {}
    for m in members:
        if m.sha256 in seen:
            raise ConfigError(f"{m.path}: same weights as {seen[m.sha256]}; list each member once")
        seen[m.sha256] = m.path


def ensemble_probs(
    members: Sequence[Member], images: np.ndarray, tta: bool = False, batch_size: int = 2000
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean of the members' softmax probabilities ``[N, C]`` for uint8 images ``[N, 28, 28]``,
    and each member's own probabilities (each member uses its own normalisation)."""

    each = []
    for m in members:
        norm = m.meta["normalisation"]
        logits = predict_logits(m.model, images, norm["mean"], norm["std"], batch_size, tta=tta)
        each.append(logits.softmax(1).numpy())
    return np.mean(each, axis=0), each


def _split(members: Sequence[Member], split: str, data_dir: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """Images and labels of ``split`` for these members. The validation split is only defined when
    every member held out the same images (same seed and val_size): otherwise a member would be
    scored on images another member trained on."""

    ds = load_dataset(members[0].meta.get("dataset", "mnist"), data_dir)
    if split == "test":
        return ds.test_images, ds.test_labels, ds
    splits = {split_of(m.meta.get("config")) for m in members}
    if len(splits) > 1:
        raise ConfigError(
            "the members were trained with different validation splits (seeds "
            f"{sorted(s.seed for s in splits)}); evaluate this ensemble with --split test"
        )
    spec = splits.pop()
    x, y = ds.validation(spec.val_size, spec.seed)
    if len(y) == 0:
        raise ConfigError("the members were trained without a validation split (val_size 0); use --split test")
    return x, y, ds


def evaluate_members(
    members: Sequence[Member], split: str = "test", tta: bool = False, data_dir: Any = None
) -> tuple[dict[str, Any], Any, Any]:
    """Ensemble metrics on ``split`` -> ``(metrics, EvalResult, dataset)``; metrics has the same keys
    as ``inference.evaluate_run`` plus each member's own accuracy."""

    x, y, ds = _split(members, split, data_dir)
    probs, each = ensemble_probs(members, x, tta)
    result = result_from_probs(probs, y)
    member_acc = [float((p.argmax(1) == y).mean()) for p in each]
    metrics = {
        "split": split,
        "accuracy": result.accuracy,
        "loss": result.loss,
        "n": len(y),
        "tta": tta,
        "members": len(members),
        "member_accuracy": member_acc,
        "member_accuracy_mean": float(np.mean(member_acc)),
        "per_class": result.per_class(ds.classes),
    }
    return metrics, result, ds


def build_ensemble(
    specs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    tta: bool = False,
    data_dir: Any = None,
    force: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate the ensemble of ``specs`` on the test split and save it as folder ``out``
    (``extra`` is added to its metrics.json)."""

    out = Path(out)
    if is_ensemble(out) and not force:
        raise RunExistsError(f"{out}: an ensemble is already saved there; pass --force to replace it")
    members = [load_member(s) for s in specs]
    _check_compatible(members)
    metrics, result, ds = evaluate_members(members, "test", tta, data_dir)
    metrics = {
        "kind": "ensemble",
        "test_accuracy": metrics["accuracy"],
        "test_loss": metrics["loss"],
        **metrics,
        **(extra or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MANIFEST, _manifest(members, out, tta))
    write_eval_artifacts(out, result, ds.classes, metrics, split="test")
    return metrics


def _manifest(members: Sequence[Member], out: Path, tta: bool) -> dict[str, Any]:
    first = members[0].meta
    return {
        "format": FORMAT,
        "combine": "mean of member softmax probabilities",
        "tta": tta,
        "dataset": first.get("dataset"),
        "classes": first.get("classes"),
        "members": [
            {
                "path": os.path.relpath(m.path, out.resolve()),
                "sha256": m.sha256,
                "arch": m.meta.get("arch"),
                "seed": (m.meta.get("config") or {}).get("seed"),
                "recipe": (m.meta.get("config") or {}).get("recipe"),
            }
            for m in members
        ],
    }


def load_ensemble(folder: str | os.PathLike[str]) -> tuple[list[Member], dict[str, Any]]:
    """Members of a saved ensemble, each checked against its recorded sha256 -> (members, manifest)."""

    folder = Path(folder)
    manifest = read_json(folder / MANIFEST, "ensemble manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not manifest.get("members"):
        raise CheckpointError(f"{folder / MANIFEST}: not an mnist-cnn ensemble manifest (format {FORMAT})")
    members = []
    for entry in manifest["members"]:
        path = (folder / entry["path"]).resolve()
        if not path.is_file():
            raise CheckpointError(
                f"{folder / MANIFEST}: member {entry['path']} is missing; restore it or rebuild "
                "the ensemble (mnist-cnn ensemble ... --force)"
            )
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(
                f"{path}: weights changed since the ensemble was built (sha256 mismatch); "
                "rebuild it (mnist-cnn ensemble ... --force)"
            )
        members.append(load_member(path))
    return members, manifest


def evaluate_ensemble(
    folder: str | os.PathLike[str], split: str = "test", tta: bool = False, data_dir: Any = None
) -> dict[str, Any]:
    """``evaluate`` for an ensemble folder (same result keys as ``inference.evaluate_run``); an
    ensemble built with TTA is always evaluated with TTA, so it reproduces its metrics.json."""
    members, manifest = load_ensemble(folder)
    return evaluate_members(members, split, tta or bool(manifest.get("tta")), data_dir)[0]
