"""Ensembles: average the class probabilities of several trained models.

An ensemble folder is saved like a run folder (``metrics.json``, ``classification_report.txt``,
``confusion_matrix.{csv,png}``) plus ``ensemble.json``, the manifest: each member's weights file
(a path relative to the ensemble folder) and its sha256, so a member that is later retrained or
damaged is detected instead of silently changing the ensemble. Members are referenced, not copied.

``train_members`` trains N seeds of one config into ``OUT/member-k`` and builds the ensemble in
``OUT`` (``mnist-cnn train --recipe best --ensemble N``). Every member gets the same weight: nothing
is selected, so no test (or validation) result feeds back into the ensemble.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .errors import CheckpointError, ConfigError, RunExistsError

MANIFEST = "ensemble.json"
FORMAT = "mnist-cnn-ensemble/1"


@dataclass
class Member:
    path: Path  # the weights file
    sha256: str
    model: nn.Module
    meta: dict[str, Any]


def is_ensemble(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding an ``ensemble.json`` manifest."""
    return (Path(path) / MANIFEST).is_file()


def load_member(spec: str | os.PathLike[str]) -> Member:
    """A run folder or .safetensors file (or ``default``) as an ensemble member."""
    from .data import sha256_file
    from .inference import resolve_model_path
    from .models import load_model

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
                raise ConfigError(f"{m.path}: its {key} {m.meta.get(key)!r} differs from {first.path}'s "
                                  f"{first.meta.get(key)!r}; ensemble only models of the same data set")
    seen: dict[str, Path] = {}
    for m in members:
        if m.sha256 in seen:
            raise ConfigError(f"{m.path}: same weights as {seen[m.sha256]}; list each member once")
        seen[m.sha256] = m.path


def ensemble_probs(members: Sequence[Member], images: np.ndarray, tta: bool = False,
                   batch_size: int = 2000) -> tuple[np.ndarray, list[np.ndarray]]:
    """Mean of the members' softmax probabilities ``[N, C]`` for uint8 images ``[N, 28, 28]``,
    and each member's own probabilities (each member uses its own normalisation)."""
    from .evaluation import predict_logits

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
    from .data import load_dataset, train_val_split

    ds = load_dataset(members[0].meta.get("dataset", "mnist"), data_dir)
    if split == "test":
        return ds.test_images, ds.test_labels, ds
    splits = {(int((m.meta.get("config") or {}).get("val_size", 5000)), int((m.meta.get("config") or {}).get("seed", 0)))
              for m in members}
    if len(splits) > 1:
        raise ConfigError("the members were trained with different validation splits (seeds "
                          f"{sorted(s for _, s in splits)}); evaluate this ensemble with --split test")
    val_size, seed = splits.pop()
    _, va = train_val_split(ds.train_labels, val_size, seed)
    if len(va) == 0:
        raise ConfigError("the members were trained without a validation split (val_size 0); use --split test")
    return ds.train_images[va], ds.train_labels[va], ds


def evaluate_members(members: Sequence[Member], split: str = "test", tta: bool = False,
                     data_dir: Any = None) -> tuple[dict[str, Any], Any, Any]:
    """Ensemble metrics on ``split`` -> ``(metrics, EvalResult, dataset)``; metrics has the same keys
    as ``inference.evaluate_run`` plus each member's own accuracy."""
    from .evaluation import result_from_probs

    x, y, ds = _split(members, split, data_dir)
    probs, each = ensemble_probs(members, x, tta)
    result = result_from_probs(probs, y)
    member_acc = [float((p.argmax(1) == y).mean()) for p in each]
    metrics = {"split": split, "accuracy": result.accuracy, "loss": result.loss, "n": len(y), "tta": tta,
               "members": len(members), "member_accuracy": member_acc,
               "member_accuracy_mean": float(np.mean(member_acc)), "per_class": result.per_class(ds.classes)}
    return metrics, result, ds


def build_ensemble(specs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], tta: bool = False,
                   data_dir: Any = None, force: bool = False, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the ensemble of ``specs`` on the test split and save it as folder ``out``
    (``extra`` is added to its metrics.json)."""
    from .files import atomic_write_json
    from .reports import write_eval_artifacts

    out = Path(out)
    if is_ensemble(out) and not force:
        raise RunExistsError(f"{out}: an ensemble is already saved there; pass --force to replace it")
    members = [load_member(s) for s in specs]
    _check_compatible(members)
    metrics, result, ds = evaluate_members(members, "test", tta, data_dir)
    metrics = {"kind": "ensemble", "test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"], **metrics,
               **(extra or {})}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MANIFEST, _manifest(members, out, tta))
    write_eval_artifacts(out, result, ds.classes, metrics, split="test")
    return metrics


def _manifest(members: Sequence[Member], out: Path, tta: bool) -> dict[str, Any]:
    first = members[0].meta
    return {
        "format": FORMAT, "combine": "mean of member softmax probabilities", "tta": tta,
        "dataset": first.get("dataset"), "classes": first.get("classes"),
        "members": [{"path": os.path.relpath(m.path, out.resolve()), "sha256": m.sha256,
                     "arch": m.meta.get("arch"), "seed": (m.meta.get("config") or {}).get("seed"),
                     "recipe": (m.meta.get("config") or {}).get("recipe")} for m in members],
    }


def load_ensemble(folder: str | os.PathLike[str]) -> tuple[list[Member], dict[str, Any]]:
    """Members of a saved ensemble, each checked against its recorded sha256 -> (members, manifest)."""
    from .data import sha256_file
    from .files import read_json

    folder = Path(folder)
    manifest = read_json(folder / MANIFEST, "ensemble manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not manifest.get("members"):
        raise CheckpointError(f"{folder / MANIFEST}: not an mnist-cnn ensemble manifest (format {FORMAT})")
    members = []
    for entry in manifest["members"]:
        path = (folder / entry["path"]).resolve()
        if not path.is_file():
            raise CheckpointError(f"{folder / MANIFEST}: member {entry['path']} is missing; restore it or rebuild "
                                  "the ensemble (mnist-cnn ensemble ... --force)")
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{path}: weights changed since the ensemble was built (sha256 mismatch); "
                                  "rebuild it (mnist-cnn ensemble ... --force)")
        members.append(load_member(path))
    return members, manifest


def evaluate_ensemble(folder: str | os.PathLike[str], split: str = "test", tta: bool = False,
                      data_dir: Any = None) -> dict[str, Any]:
    """``evaluate`` for an ensemble folder (same result keys as ``inference.evaluate_run``); an
    ensemble built with TTA is always evaluated with TTA, so it reproduces its metrics.json."""
    members, manifest = load_ensemble(folder)
    return evaluate_members(members, split, tta or bool(manifest.get("tta")), data_dir)[0]


# --------------------------------------------------------------------------- train N members


def member_dir(out: Path, k: int) -> Path:
    return out / f"member-{k}"


def _finished(run: Path) -> bool:
    # metrics.json is the last artifact a finished run writes
    return (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()


def train_members(cfg: Any, out: str | os.PathLike[str], n: int, *, resume: bool = False, force: bool = False,
                  quiet: bool = False, data: Any = None) -> dict[str, Any] | None:
    """Train ``n`` members (seeds ``cfg.seed + k``) into ``out/member-k``, then build the ensemble in
    ``out``. ``resume`` skips finished members and resumes an interrupted one. Returns the ensemble's
    metrics (None on the non-zero ranks of a multi-process run)."""
    from .training import CHECKPOINT, train

    out = Path(out)
    if n < 1:
        raise ConfigError(f"--ensemble {n}: needs at least 1 member")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if out.exists() and any(out.iterdir()) and not resume:
        if not force:
            raise RunExistsError(f"{out}: folder already exists; pass --resume to continue the ensemble, "
                                 "--force to overwrite it, or choose another --out")
        if main_rank:
            shutil.rmtree(out)
    runs, walls = [], []
    for k in range(n):
        run = member_dir(out, k)
        runs.append(run)
        walls.append(None)  # stays None for a member finished before this call (--resume)
        if resume and _finished(run):
            continue
        member_cfg = cfg.merged({"seed": cfg.seed + k})
        t = time.perf_counter()
        train(member_cfg, run, resume=resume and (run / CHECKPOINT).exists(), force=True, quiet=quiet, data=data)
        walls[-1] = time.perf_counter() - t
    if not main_rank:
        return None
    return build_ensemble(runs, out, force=True, data_dir=cfg.data_dir,
                          extra={"member_runs": [str(r) for r in runs], "member_wall_seconds": walls})
