"""Ensembles: average the class probabilities of several trained models.

An ensemble folder is saved like a run folder (``metrics.json``, ``classification_report.txt``,
``confusion_matrix.{csv,png}``) plus ``ensemble.json``, the manifest: each member's weights file
(a path relative to the ensemble folder) and its sha256, so a member that is later retrained or
damaged is detected instead of silently changing the ensemble. Every member lives inside the
ensemble folder: members already there (``train --ensemble``'s ``member-k/``) are referenced, members
from elsewhere (``mnist-cnn ensemble RUN...``) are copied into its ``members/`` folder. A manifest
that points outside the folder (an absolute path, ``..``, or a symlink leading out) is refused, so a
manifest cannot be used to probe or load files elsewhere.

Every member gets the same weight: nothing is selected, so no test (or validation) result feeds
back into the ensemble. The mean probabilities are calibrated by one temperature fitted on the
members' common validation split (the manifest's ``calibration``; T = 1 when they have none).
Training the members of a new ensemble is :mod:`mnist_cnn.training.ensemble`.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from torch import nn

from mnist_cnn.artifacts.files import atomic_save, atomic_write_json, read_json, sha256_file
from mnist_cnn.artifacts.runs import MANIFEST, SplitSpec, is_ensemble, resolve_model_path, split_of
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import CheckpointError, ConfigError, RunExistsError
from mnist_cnn.evaluation.calibration import calibration_record, log_probs, not_fitted
from mnist_cnn.evaluation.metrics import predict_probs, result_from_probs
from mnist_cnn.models.files import check_calibration, load_model
from mnist_cnn.reports.run import write_eval_artifacts

FORMAT = "mnist-cnn-ensemble/1"
MEMBERS_DIR = "members"  # where members from outside the ensemble folder are copied
REBUILD = "rebuild it (mnist-cnn ensemble RUN... --out FOLDER --force)"
SHA256 = re.compile(r"[0-9a-f]{64}")


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
    members: Sequence[Member],
    images: np.ndarray,
    tta: bool = False,
    batch_size: int = 2000,
    temperature: float = 1.0,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean of the members' softmax(logits / temperature) ``[N, C]`` for uint8 images ``[N, 28, 28]``,
    and each member's own probabilities (each member uses its own normalisation)."""

    each = [predict_probs(m.model, images, m.meta["normalisation"], temperature, batch_size, tta) for m in members]
    return np.mean(each, axis=0), each


def shared_split(members: Sequence[Member]) -> SplitSpec:
    """The validation split every member held out; ConfigError when they differ."""
    splits = {split_of(m.meta.get("config")) for m in members}
    if len(splits) > 1:
        raise ConfigError(
            "the members were trained with different validation splits (seeds "
            f"{sorted(s.seed for s in splits)}); evaluate this ensemble with --split test"
        )
    return splits.pop()


def _split(members: Sequence[Member], split: str, data_dir: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """Images and labels of ``split`` for these members. The validation split is only defined when
    every member held out the same images (same seed and val_size): otherwise a member would be
    scored on images another member trained on."""

    ds = load_dataset(members[0].meta.get("dataset", "mnist"), data_dir)
    if split == "test":
        return ds.test_images, ds.test_labels, ds
    spec = shared_split(members)
    x, y = ds.validation(spec.val_size, spec.seed)
    if len(y) == 0:
        raise ConfigError("the members were trained without a validation split (val_size 0); use --split test")
    return x, y, ds


def evaluate_members(
    members: Sequence[Member], split: str = "test", tta: bool = False, data_dir: Any = None, temperature: float = 1.0
) -> tuple[dict[str, Any], Any, Any]:
    """Ensemble metrics on ``split`` -> ``(metrics, EvalResult, dataset)``; metrics has the same keys
    as ``inference.evaluate_run`` (``calibration``: NLL and ECE before and after ``temperature``)
    plus each member's own accuracy."""

    x, y, ds = _split(members, split, data_dir)
    probs, each = ensemble_probs(members, x, tta)
    result = result_from_probs(probs, y)
    result.scores = log_probs(probs)
    member_acc = [float((p.argmax(1) == y).mean()) for p in each]
    metrics = {
        "split": split,
        "accuracy": result.accuracy,
        "loss": result.loss,
        "calibration": result.calibration(temperature),
        "n": len(y),
        "tta": tta,
        "members": len(members),
        "member_accuracy": member_acc,
        "member_accuracy_mean": float(np.mean(member_acc)),
        "per_class": result.per_class(ds.classes),
    }
    return metrics, result, ds


def fit_ensemble_calibration(members: Sequence[Member], tta: bool = False, data_dir: Any = None) -> dict[str, Any]:
    """One temperature for the log of the members' mean probabilities, fitted on their common
    validation split. Members that held out different images (``train --ensemble``: one seed, so
    one split, per member) have no common split: the mean of their own temperatures, each fitted on
    its own split, stands in; T = 1 and the reason when a member has none."""
    try:
        x, y, _ = _split(members, "val", data_dir)
    except ConfigError:
        own = [m.meta.get("calibration") or {} for m in members]
        if all(c.get("method") == "temperature" for c in own):
            return {
                "method": "temperature",
                "temperature": float(np.mean([c["temperature"] for c in own])),
                "fitted_on": "mean of the members' temperatures (each fitted on its own validation split; "
                "the members hold out different images)",
            }
        return not_fitted("the members hold out different validation splits and not all of them are calibrated")
    return calibration_record(log_probs(ensemble_probs(members, x, tta)[0]), y)


def manifest_temperature(manifest: dict[str, Any], where: Any) -> float:
    """The temperature of an ensemble manifest's ``calibration`` (1 for manifests without one)."""
    cal = manifest.get("calibration")
    return 1.0 if cal is None else check_calibration(cal, where)


def calibrate_ensemble(folder: str | os.PathLike[str], data_dir: Any = None) -> dict[str, Any]:
    """Re-fit a saved ensemble's temperature on its validation split and rewrite its manifest
    (atomically; the members are not touched). Returns the new ``calibration``."""
    members, manifest = load_ensemble(folder)
    calibration = fit_ensemble_calibration(members, bool(manifest.get("tta")), data_dir)
    atomic_write_json(Path(folder) / MANIFEST, {**manifest, "calibration": calibration})
    return calibration


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
    calibration = fit_ensemble_calibration(members, tta, data_dir)
    metrics, result, ds = evaluate_members(members, "test", tta, data_dir, calibration["temperature"])
    metrics = {
        "kind": "ensemble",
        "test_accuracy": metrics["accuracy"],
        "test_loss": metrics["loss"],
        **metrics,
        **(extra or {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = _place_members(members, out)
    atomic_write_json(out / MANIFEST, {**_manifest(members, paths, tta), "calibration": calibration})
    _remove_stale_copies(out, paths)
    write_eval_artifacts(out, result, ds.classes, metrics, split="test")
    return metrics


def _place_members(members: Sequence[Member], out: Path) -> list[str]:
    """Each member's path relative to ``out`` (POSIX form): a member inside ``out`` as it is, one
    from elsewhere copied (atomically, checked against its sha256) to ``members/<sha256[:16]>.safetensors``."""
    base = out.resolve()
    paths = []
    for m in members:
        if m.path.is_relative_to(base):  # m.path is resolved: a symlink leading out counts as outside
            paths.append(m.path.relative_to(base).as_posix())
            continue
        rel = f"{MEMBERS_DIR}/{m.sha256[:16]}.safetensors"
        dst = out / rel
        if not (dst.is_file() and not dst.is_symlink() and sha256_file(dst) == m.sha256):
            atomic_save(dst, partial(shutil.copyfile, m.path))
            if sha256_file(dst) != m.sha256:
                dst.unlink(missing_ok=True)
                raise CheckpointError(f"{m.path}: changed while the ensemble was built; build it again")
        paths.append(rel)
    return paths


def _remove_stale_copies(out: Path, paths: Sequence[str]) -> None:
    """Copies of members an earlier build of this ensemble (--force) made and this one no longer uses."""
    keep = {p for p in paths if p.startswith(f"{MEMBERS_DIR}/")}
    folder = out / MEMBERS_DIR
    if folder.is_dir() and not folder.is_symlink():
        for f in folder.glob("*.safetensors"):
            if f"{MEMBERS_DIR}/{f.name}" not in keep:
                f.unlink(missing_ok=True)


def _manifest(members: Sequence[Member], paths: Sequence[str], tta: bool) -> dict[str, Any]:
    first = members[0].meta
    return {
        "format": FORMAT,
        "combine": "mean of member softmax probabilities",
        "tta": tta,
        "dataset": first.get("dataset"),
        "classes": first.get("classes"),
        "members": [
            {
                "path": path,
                "sha256": m.sha256,
                "arch": m.meta.get("arch"),
                "seed": (m.meta.get("config") or {}).get("seed"),
                "recipe": (m.meta.get("config") or {}).get("recipe"),
            }
            for m, path in zip(members, paths)
        ],
    }


def load_ensemble(folder: str | os.PathLike[str]) -> tuple[list[Member], dict[str, Any]]:
    """Members of a saved ensemble, each checked against its recorded sha256 -> (members, manifest).

    Every member must be a file inside ``folder`` (no absolute path, no ``..``, no symlink leading
    out), and all must have the manifest's classes and data set; anything else is a one-line
    :class:`CheckpointError`."""

    folder = Path(folder)
    where = folder / MANIFEST
    manifest = read_json(where, "ensemble manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not an mnist-cnn ensemble manifest (format {FORMAT})")
    entries = manifest.get("members")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{where}: its 'members' must be a non-empty list; {REBUILD}")
    if not isinstance(manifest.get("tta", False), bool):
        raise CheckpointError(f"{where}: its 'tta' must be true or false; {REBUILD}")
    manifest_temperature(manifest, where)
    members = []
    for i, entry in enumerate(entries):
        path = _member_path(folder, where, i, entry)
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{path}: weights changed since the ensemble was built (sha256 mismatch); {REBUILD}")
        members.append(load_member(path))
    _check_members_agree(members, manifest, where)
    return members, manifest


def _member_path(folder: Path, where: Path, i: int, entry: Any) -> Path:
    """Member ``i``'s weights file: checked to be a file inside ``folder`` before anything is read."""
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("path"), str)
        and entry["path"]
        and isinstance(entry.get("sha256"), str)
        and SHA256.fullmatch(entry["sha256"])
    ):
        raise CheckpointError(
            f"{where}: member {i} must be an object with 'path' (a file in the ensemble folder) and "
            f"'sha256' (64 hex digits); {REBUILD}"
        )
    rel = entry["path"]
    shown = rel if len(rel) <= 80 else rel[:77] + "..."
    outside = CheckpointError(
        f"{where}: member {i} ({shown}) is not inside the ensemble folder; members must be files in it. "
        f"An ensemble built by an older mnist-cnn referenced run folders elsewhere: {REBUILD}, which copies them in"
    )
    pure = PurePath(rel)
    if pure.is_absolute() or pure.drive or ".." in pure.parts:
        raise outside
    try:  # resolve follows symlinks: one leading out of the folder ends outside it
        base = folder.resolve()
        path = (folder / pure).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable folder, a NUL in the name
        raise outside from None
    if not path.is_relative_to(base) or path == base:
        raise outside
    if not path.is_file():
        raise CheckpointError(f"{where}: member {i} ({shown}) is missing; restore it or {REBUILD}")
    return path


def _check_members_agree(members: Sequence[Member], manifest: dict[str, Any], where: Path) -> None:
    """Every member has the classes and data set the manifest records (those of its first member)."""
    for key in ("classes", "dataset"):
        want = manifest.get(key, members[0].meta.get(key))
        for m in members:
            if m.meta.get(key) != want:
                raise CheckpointError(
                    f"{m.path}: has {key} {str(m.meta.get(key))[:60]}, the ensemble ({where}) has "
                    f"{str(want)[:60]}; an ensemble holds only models of the same data set; {REBUILD}"
                )


def evaluate_ensemble(
    folder: str | os.PathLike[str], split: str = "test", tta: bool = False, data_dir: Any = None
) -> dict[str, Any]:
    """``evaluate`` for an ensemble folder (same result keys as ``inference.evaluate_run``); an
    ensemble built with TTA is always evaluated with TTA, so it reproduces its metrics.json."""
    members, manifest = load_ensemble(folder)
    temperature = manifest_temperature(manifest, Path(folder) / MANIFEST)
    return evaluate_members(members, split, tta or bool(manifest.get("tta")), data_dir, temperature)[0]
