"""The run-folder contract: one home for what a run folder holds and how it is read.

A run folder (``mnist-cnn train --out runs/NAME``) holds::

    config.json              {"train": TrainConfig fields, "environment": ..., "normalisation": ...}
    history.csv              one row per epoch (HISTORY_FIELDS)
    checkpoint.safetensors   everything --resume needs (written after every epoch)
    model.safetensors        the final weights + metadata (architecture, normalisation, classes)
    metrics.json             written last: a run with model + metrics is finished
    classification_report.txt  confusion_matrix.{csv,png}  history.png  report.html

An ensemble folder holds ``ensemble.json`` (its manifest) and the same evaluation files. Everything
that reads or writes these files takes the names and helpers from here; old run folders (which may
lack ``config.json`` or a validation split in their config) keep loading through the defaults below.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_cnn.artifacts.files import atomic_write_text, read_json, sha256_file
from mnist_cnn.errors import CheckpointError, OutputError, RunExistsError

CONFIG = "config.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
METRICS = "metrics.json"
REPORT = "report.html"
MANIFEST = "ensemble.json"
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = PRETRAINED_DIR / "default.safetensors"

# what a run trained before val_size/seed were recorded used (the defaults of those days)
DEFAULT_VAL_SIZE = 5000
DEFAULT_SEED = 0


def resolve_model_path(spec: str | os.PathLike[str]) -> Path:
    """A run folder, a ``.safetensors`` file, or ``default`` (the model bundled with the package) -> the file."""
    if str(spec) == "default":
        if not DEFAULT_MODEL.exists():
            raise CheckpointError("no default model is bundled with this install; pass --model RUN_DIR")
        return DEFAULT_MODEL
    p = Path(spec)
    if p.is_dir():
        p = p / MODEL
    if not p.is_file():
        raise CheckpointError(
            f"{p}: no such run folder or model file; train one first (mnist-cnn train) or check the path"
        )
    return p


def model_id(path: str | os.PathLike[str]) -> str:
    """``<file stem>-<first 12 hex of the file's sha256>``: names exactly these weights."""
    return f"{Path(path).stem}-{sha256_file(path)[:12]}"


def is_ensemble(path: str | os.PathLike[str]) -> bool:
    """True for a folder holding an ensemble manifest."""
    return (Path(path) / MANIFEST).is_file()


def is_finished(run: str | os.PathLike[str]) -> bool:
    """A finished run has its model and its metrics (metrics.json is the last file training writes)."""
    return (Path(run) / MODEL).is_file() and (Path(run) / METRICS).is_file()


def has_checkpoint(run: str | os.PathLike[str]) -> bool:
    return (Path(run) / CHECKPOINT).is_file()


def stale_temp_files(run: str | os.PathLike[str]) -> list[Path]:
    """Temporary files an interrupted atomic write left behind (``.<name>.<random>.tmp``)."""
    folder = Path(run)
    return sorted(folder.glob(".*.tmp")) if folder.is_dir() else []


def read_run_config(run: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``train`` section of a run's config.json ({} for a folder without one)."""
    path = Path(run) / CONFIG
    if not path.exists():
        return {}
    data = read_json(path, "run config")
    train = data.get("train") if isinstance(data, dict) else None
    return train if isinstance(train, dict) else {}


def read_metrics(run: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's metrics.json ({} when the run has not finished)."""
    path = Path(run) / METRICS
    data = read_json(path, "metrics file") if path.exists() else {}
    return data if isinstance(data, dict) else {}


def write_history(run: str | os.PathLike[str], history: list[dict[str, float]]) -> None:
    """history.csv: one row per epoch, the columns of HISTORY_FIELDS (empty where a value is missing)."""
    lines = [",".join(HISTORY_FIELDS)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else f"{row[k]:.6g}" for k in HISTORY_FIELDS))
    atomic_write_text(Path(run) / HISTORY, "\n".join(lines) + "\n")


def read_history(run_or_file: str | os.PathLike[str]) -> list[dict[str, float]]:
    """history.csv (of a run folder, or the file itself) back into rows of floats; [] when absent."""
    path = Path(run_or_file)
    if path.is_dir():
        path = path / HISTORY
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]


@dataclass(frozen=True)
class SplitSpec:
    """How a run's validation split is rebuilt: ``data.train_val_split(labels, val_size, seed)``."""

    val_size: int
    seed: int


def split_of(config: Mapping[str, Any] | None) -> SplitSpec:
    """The validation split a run was trained with, from its config (a model file's ``config``
    metadata or config.json's ``train``); runs that did not record it used the old defaults."""
    cfg = config or {}
    return SplitSpec(int(cfg.get("val_size", DEFAULT_VAL_SIZE)), int(cfg.get("seed", DEFAULT_SEED)))


def is_unstarted(run: str | os.PathLike[str]) -> bool:
    """A folder a killed run left before its first checkpoint: nothing in it but the files a run
    writes when it starts (config.json, interrupted temporary files). Starting it afresh loses nothing."""
    folder = Path(run)
    return folder.is_dir() and all(p.name == CONFIG or p.name.endswith(".tmp") for p in folder.iterdir())


def check_run_dir(out: Path, *, resume: bool, force: bool) -> bool:
    """Whether a run in ``out`` can start, without touching anything; True when it will resume.

    * ``resume`` with a checkpoint: it resumes;
    * ``resume`` on a run killed before its first checkpoint, or a plain start in such a folder: it starts afresh;
    * an existing run without ``resume``/``force``: :class:`RunExistsError` (``force`` replaces it).
    """
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out}: exists and is not a folder; choose another --out")
    if resume and not out.exists():
        raise CheckpointError(f"{out}: no {CHECKPOINT} to resume from; start it without --resume")
    if resume and has_checkpoint(out):
        return True
    if out.exists() and any(out.iterdir()) and not is_unstarted(out) and not force:
        raise RunExistsError(
            f"{out}: run folder already exists; pass --resume to continue it, "
            "--force to overwrite it, or choose another --out"
        )
    return False


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> bool:
    """Make ``out`` ready for a run (see :func:`check_run_dir`); True when the run resumes from its
    checkpoint. Stray temporary files from a kill are removed; ``force`` empties an existing run."""
    if check_run_dir(out, resume=resume, force=force):
        for tmp in stale_temp_files(out):
            tmp.unlink(missing_ok=True)
        return True
    if out.exists() and not is_unstarted(out):
        shutil.rmtree(out)
    for leftover in out.iterdir() if out.exists() else ():
        leftover.unlink()  # an unstarted run's config.json and temporary files
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create run folder ({exc.strerror}); choose a writable --out") from None
    return False
