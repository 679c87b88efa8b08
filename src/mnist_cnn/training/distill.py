"""Knowledge distillation (Hinton et al., 2015), offline.

``train --teacher T`` adds a second target to every training image: the teacher's probabilities
at temperature ``distill_temperature``, computed once, before the first epoch, on the *clean*
training images (an ensemble teacher averages its members' softened probabilities). The student
sees augmented images, as always; a small affine warp does not change what digit an image is, so
the clean image's soft label stays a fair target, and the teacher costs one forward pass over the
training split instead of one per step. The loss is

    (1 - alpha) * CE(student, label) + alpha * T^2 * KL(teacher_T || student_T)

(T^2 keeps the soft term's gradients on the scale of the hard one's as T changes).

Honesty rule: a teacher must hold out the same validation images as the student. A teacher that
trained on the student's validation images would pass what it learnt from them into the student's
targets, and validation accuracy would stop being a fair basis for choosing (``--split-seed``
fixes the split, so teachers and students of different seeds can share it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mnist_cnn.artifacts.runs import SplitSpec, is_ensemble, split_of
from mnist_cnn.errors import ConfigError
from mnist_cnn.inference.ensemble import Member, ensemble_probs, load_ensemble, load_member


def load_teachers(spec: str) -> list[Member]:
    """The members named by ``spec``: run folders, model files or ensemble folders, comma-separated."""
    members: list[Member] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise ConfigError(f"teacher {spec!r}: an empty name between commas")
        members.extend(load_ensemble(part)[0] if is_ensemble(part) else [load_member(part)])
    return members


def check_teachers(members: list[Member], dataset: str, split: SplitSpec) -> None:
    """Refuse a teacher of another data set, or one that did not hold out the student's validation split."""
    for m in members:
        if m.meta.get("dataset", "mnist") != dataset:
            raise ConfigError(f"teacher {m.path}: trained on {m.meta.get('dataset')!r}, the student on {dataset!r}")
        theirs = split_of(m.meta.get("config"))
        if theirs != split:
            raise ConfigError(
                f"teacher {m.path}: held out a different validation split (val_size {theirs.val_size}, "
                f"split seed {theirs.seed}) than the student (val_size {split.val_size}, split seed "
                f"{split.seed}); it saw the student's validation images. Train both with the same "
                "--val-size and --split-seed"
            )


def soft_targets(members: list[Member], images: np.ndarray, temperature: float, batch_size: int) -> torch.Tensor:
    """``[N, C]`` float32: the members' mean of softmax(logits / T) on uint8 images ``[N, 28, 28]``."""
    mean, _ = ensemble_probs(members, images, batch_size=batch_size, temperature=temperature)
    return torch.from_numpy(mean)


def teacher_targets(
    spec: str, images: np.ndarray, *, dataset: str, split: SplitSpec, temperature: float, batch_size: int
) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Load, check and run the teacher(s) named by ``spec`` -> (soft targets ``[N, C]`` on the CPU,
    each teacher's file and sha256 for the student's provenance)."""
    members = load_teachers(spec)
    check_teachers(members, dataset, split)
    provenance = [{"file": str(m.path), "sha256": m.sha256} for m in members]
    return soft_targets(members, images, temperature, batch_size), provenance


def distill_loss(
    logits: torch.Tensor,
    y: torch.Tensor,
    soft: torch.Tensor,
    *,
    alpha: float,
    temperature: float,
    label_smoothing: float,
) -> torch.Tensor:
    """(1 - alpha) * CE(logits, y) + alpha * T^2 * KL(soft || softmax(logits / T)); logits ``[B, C]`` float32."""
    hard = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
    return (1 - alpha) * hard + alpha * temperature**2 * kl


def describe(spec: str) -> str:
    """A short name of the teacher(s) for the run's log line."""
    parts = [Path(p.strip()).name or p.strip() for p in spec.split(",")]
    return ", ".join(parts[:3]) + (f" (+{len(parts) - 3} more)" if len(parts) > 3 else "")
