"""The run-folder contract: one home for what a run folder holds and how it is read.

A run folder (``mnist-cnn train --out runs/NAME``) holds::

    config.json              {"train": TrainConfig fields, "environment": ..., "normalisation": ...}
    history.csv              one row per epoch (HISTORY_FIELDS)
    checkpoint.safetensors   everything --resume needs (written after every epoch)
    model.safetensors        the final weights + metadata (architecture, normalisation, classes)
    model.json               the calibration `mnist-cnn calibrate` fitted later (absent until then)
    metrics.json             written last: a run with model + metrics is finished
    classification_report.txt  confusion_matrix.{csv,png}  history.png  report.html

An ensemble folder holds ``ensemble.json`` (its manifest) and the same evaluation files. Everything
that reads or writes these files takes the names and helpers from here; old run folders (which may
lack ``config.json`` or a validation split in their config) keep loading through the defaults below.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_cnn.artifacts.files import atomic_write_text, read_json, sha256_file
from mnist_cnn.errors import CheckpointError, OutputError, RunExistsError, RunInUseError

CONFIG = "config.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.safetensors"
MODEL = "model.safetensors"
MODEL_SIDECAR = "model.json"  # the calibration `mnist-cnn calibrate` fits later (models.files.sidecar_path)
METRICS = "metrics.json"
REPORT = "report.html"
MANIFEST = "ensemble.json"
HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
DEFAULT_MODEL = PRETRAINED_DIR / "default.safetensors"
MODEL_CARD = PRETRAINED_DIR / "README.md"  # the default model's card (written by tools/model_card.py)
# images `mnist-cnn predict --example` reads: MNIST test digits and page photos (tools/make_samples.py)
SAMPLES_DIR = PRETRAINED_DIR.parent / "samples"
SAMPLES_MANIFEST = SAMPLES_DIR / "samples.json"

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


def sample_images() -> list[dict[str, Any]]:
    """The bundled sample images: ``{"path", "label", "source"}`` each, in samples.json's order."""
    if not SAMPLES_MANIFEST.is_file():
        raise CheckpointError(
            f"{SAMPLES_MANIFEST}: no sample images are bundled with this install; reinstall mnist-cnn"
        )
    entries = read_json(SAMPLES_MANIFEST, "sample list")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e for e in entries):
        raise CheckpointError(f"{SAMPLES_MANIFEST}: must be a list of {{file, label, source}}; reinstall mnist-cnn")
    return [{"path": SAMPLES_DIR / str(e["file"]), "label": e.get("label"), "source": e.get("source")} for e in entries]


def model_card(path: Path = MODEL_CARD) -> dict[str, Any]:
    """The bundled default model's card: ``{"card": its Markdown, "card_metadata": its metadata}``.

    The metadata (between the ``---`` lines that open the file; not part of ``card``) is Hugging
    Face's model-card front matter, written as JSON, which is YAML too: it parses without a YAML library."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no model card is bundled with this install; reinstall mnist-cnn")
    text = path.read_text(encoding="utf-8")
    head, sep, rest = text.partition("\n---\n")
    if not (text.startswith("---\n") and sep):
        raise CheckpointError(
            f"{path}: the card does not open with '---' metadata; regenerate it (tools/model_card.py)"
        )
    try:
        meta = json.loads(head[len("---\n") :])
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: the card's metadata is not valid JSON ({exc.msg}, line {exc.lineno + 1}); "
            "regenerate it (tools/model_card.py)"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the card's metadata must be an object; regenerate it (tools/model_card.py)")
    return {"card": rest, "card_metadata": meta}


def card_for(model_file: str | os.PathLike[str] | None) -> dict[str, Any]:
    """:func:`model_card` when ``model_file`` is the bundled default model, else ``card`` and
    ``card_metadata`` None (a run's or another file's model has no card)."""
    is_default = model_file is not None and Path(model_file).resolve() == DEFAULT_MODEL and MODEL_CARD.is_file()
    return model_card() if is_default else {"card": None, "card_metadata": None}


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


def data_dir_for(run: str | os.PathLike[str], data_dir: Any = None, config: Mapping[str, Any] | None = None) -> Any:
    """The data folder to evaluate or explain ``run`` on: ``data_dir`` when given, else the one its
    training recorded (config.json's ``train.data_dir``, or ``config`` from a model file's metadata)
    when that folder still exists and neither ``data_dir`` nor $MNIST_CNN_DATA_DIR says otherwise;
    else None (the usual look-up: the variable, the user cache). Without this a run trained on
    ``--data-dir DIR`` could not be evaluated without repeating the flag."""
    if data_dir is not None or os.environ.get("MNIST_CNN_DATA_DIR"):
        return data_dir
    recorded = (read_run_config(run) if Path(run).is_dir() else {}).get("data_dir")
    if recorded is None and config is not None:
        recorded = config.get("data_dir")
    if isinstance(recorded, str) and recorded and Path(recorded).expanduser().is_dir():
        return recorded
    return None


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
    seed = cfg.get("split_seed")  # a fixed split (train --split-seed); None: the run's own seed
    seed = cfg.get("seed", DEFAULT_SEED) if seed is None else seed
    return SplitSpec(int(cfg.get("val_size", DEFAULT_VAL_SIZE)), int(seed))


# --------------------------------------------------------------------------- starting a run in a folder

LOCK = ".lock"  # an OS file lock, held by the process training in the folder (released when it dies)
LOCK_OWNER = ".lock.json"  # who holds it: pid, host, start time (for the "in use" message)
REPLACED = ".replaced"  # the run `--force` replaces waits here until the new run's first checkpoint
_OWN_FILES = {
    "members",  # an ensemble's copies of members from elsewhere
    CONFIG,
    HISTORY,
    CHECKPOINT,
    MODEL,
    MODEL_SIDECAR,
    METRICS,
    REPORT,
    MANIFEST,
    "history.png",
    "summary.md",
    LOCK,
    LOCK_OWNER,
}
_OWN_PATTERN = re.compile(
    r"(classification_report|confusion_matrix|metrics)(_\w+)?\.(txt|csv|png|json)|\..+\.tmp|member-\d+"
)


def is_run_file(path: Path) -> bool:
    """A file (or, for ensembles, a member-k folder) that mnist-cnn writes into a run folder."""
    return path.name in _OWN_FILES or path.name == REPLACED or bool(_OWN_PATTERN.fullmatch(path.name))


def foreign_files(run: str | os.PathLike[str]) -> list[str]:
    """Names of the entries in ``run`` that no run writes (a user's own files)."""
    folder = Path(run)
    return sorted(p.name for p in folder.iterdir() if not is_run_file(p)) if folder.is_dir() else []


def is_unstarted(run: str | os.PathLike[str]) -> bool:
    """A folder a killed run left before its first checkpoint: nothing in it but the files a run
    writes when it starts (config.json, the lock, interrupted temporary files). Starting it afresh loses nothing."""
    folder = Path(run)
    return folder.is_dir() and all(
        p.name in (CONFIG, LOCK, LOCK_OWNER) or p.name.endswith(".tmp") for p in folder.iterdir()
    )


class RunLock:
    """An exclusive lock on a run folder while a process trains in it (filelock: flock on POSIX,
    LockFileEx on Windows). The OS releases it when the process dies, so a killed run leaves no
    stale lock; a second process gets :class:`RunInUseError` naming the process that holds it."""

    def __init__(self, folder: Path):
        from filelock import FileLock

        self.folder = folder
        self.lock = FileLock(str(folder / LOCK), timeout=0)

    def acquire(self) -> RunLock:
        from filelock import Timeout

        try:
            self.lock.acquire()
        except Timeout:
            raise RunInUseError(
                f"{self.folder}: {_owner(self.folder)} is training in this run folder; "
                "wait for it to finish or choose another --out"
            ) from None
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot write here ({exc.strerror}); choose a writable --out") from None
        atomic_write_text(
            self.folder / LOCK_OWNER,
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            ),
        )
        return self

    def release(self) -> None:
        if self.lock.is_locked:
            (self.folder / LOCK_OWNER).unlink(missing_ok=True)
            self.lock.release()


def _owner(folder: Path) -> str:
    try:
        info = json.loads((folder / LOCK_OWNER).read_text())
        return f"process {int(info['pid'])} on {info['host']} (since {info['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _check_not_in_use(out: Path) -> None:
    if (out / LOCK).exists():
        RunLock(out).acquire().release()


def check_run_dir(out: Path, *, resume: bool, force: bool) -> bool:
    """Whether a run in ``out`` can start, without changing the run; True when it will resume.

    * ``resume`` with a checkpoint: it resumes;
    * ``resume`` on a run killed before its first checkpoint, or a plain start in such a folder: it starts afresh;
    * an existing run without ``resume``/``force``: :class:`RunExistsError`; with ``force`` it is
      replaced, but only when the folder holds nothing but a run's own files;
    * a folder another process is training in: :class:`RunInUseError`.
    """
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out}: exists and is not a folder; choose another --out")
    if resume and not out.exists():
        raise CheckpointError(f"{out}: no {CHECKPOINT} to resume from; start it without --resume")
    if not out.exists():
        return False
    _check_not_in_use(out)
    if resume and (has_checkpoint(out) or has_checkpoint(out / REPLACED)):
        _check_writable(out)
        return True
    if any(out.iterdir()) and not is_unstarted(out):
        if not force:
            raise RunExistsError(
                f"{out}: run folder already exists; pass --resume to continue it, "
                "--force to overwrite it, or choose another --out"
            )
        foreign = foreign_files(out)
        if foreign:
            more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
            raise RunExistsError(
                f"{out}: --force replaces only a run folder's own files, and this folder also "
                f"holds {', '.join(foreign[:5])}{more}; move them away or choose another --out"
            )
    return False


def _check_writable(out: Path) -> None:
    """A run that resumes must be able to write its checkpoint: find out now, not after an epoch."""
    probe = out / f".write-check.{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"{out}: cannot write here ({exc.strerror}); make the run folder writable "
            "or copy it somewhere writable and resume there"
        ) from None


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> tuple[bool, RunLock]:
    """Make ``out`` ready for a run and lock it; returns (resuming from the checkpoint, the lock).

    A run that ``force`` replaces is moved aside into ``.replaced/`` (not deleted) until the new run
    writes its first checkpoint (:func:`discard_replaced`); if the new run stops before that, the
    old one is put back (:func:`restore_replaced`; after a kill, :func:`recover_run_dir`, which the
    engine calls before it reads the folder). Stray temporary files from a kill are removed.
    """
    resuming = check_run_dir(out, resume=resume, force=force)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create run folder ({exc.strerror}); choose a writable --out") from None
    lock = RunLock(out).acquire()
    for tmp in stale_temp_files(out):
        tmp.unlink(missing_ok=True)
    if not resuming and not is_unstarted(out):
        _set_aside(out)
    if not resuming:
        (out / CONFIG).unlink(missing_ok=True)  # an unstarted run's config.json
    return resuming, lock


def recover_run_dir(out: Path) -> None:
    """Unless another process is training in it: put back a run that a ``--force`` replacement,
    killed before its first checkpoint, had set aside."""
    if out.is_dir() and _lock_free(out):
        restore_replaced(out)


def _lock_free(out: Path) -> bool:
    try:
        _check_not_in_use(out)
    except RunInUseError:
        return False
    return True


def _set_aside(out: Path) -> None:
    """Move the run's own files into ``.replaced/`` (the new run starts in an empty folder)."""
    aside = out / REPLACED
    if aside.exists():
        shutil.rmtree(aside)
    aside.mkdir()
    for p in out.iterdir():
        if p.name not in (REPLACED, LOCK, LOCK_OWNER) and is_run_file(p):
            os.replace(p, aside / p.name)


def discard_replaced(out: Path) -> None:
    """The new run has a checkpoint: the run it replaced can go."""
    if (out / REPLACED).exists():
        shutil.rmtree(out / REPLACED)


def restore_replaced(out: Path) -> bool:
    """Put back a run that ``--force`` set aside when its replacement stopped before its first
    checkpoint (the replacement's own files are removed). True when something was restored."""
    aside = out / REPLACED
    if not aside.is_dir() or has_checkpoint(out):
        return False
    for p in out.iterdir():
        if p.name not in (REPLACED, LOCK, LOCK_OWNER) and is_run_file(p):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    for p in aside.iterdir():
        os.replace(p, out / p.name)
    aside.rmdir()
    return True
