"""The training data resident on the device: the whole training split as one uint8 tensor.

``[N, 1, 28, 28]`` uint8 is 47 MB for MNIST; each step indexes its batch from it and converts,
normalises and augments the batch as one tensor op (training/loop.py). No DataLoader, no worker
processes. A distilled run also keeps its teacher's softened probabilities here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mnist_cnn.artifacts.runs import SplitSpec
from mnist_cnn.data.datasets import Dataset, load_dataset, normalisation, train_val_split
from mnist_cnn.errors import ConfigError
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.distill import teacher_targets


@dataclass
class DeviceData:
    """Splits as uint8 tensors on the training device plus the normalisation to apply."""

    train_x: torch.Tensor  # [N, 1, 28, 28] uint8
    train_y: torch.Tensor  # [N] int64
    val_x: np.ndarray  # [V, 28, 28] uint8 (evaluated in batches, on the device, by evaluate_model)
    val_y: np.ndarray
    mean: float
    std: float
    dataset: Dataset
    soft_y: torch.Tensor | None = None  # [N, C] a teacher's softened probabilities (train --teacher)
    teachers: list[dict[str, str]] = field(default_factory=list)  # their files and sha256 (provenance)

    @property
    def normalisation(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def prepare_data(cfg: TrainConfig, device: torch.device, data: Dataset | None = None) -> DeviceData:
    ds = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.val_size >= len(ds.train_labels):
        raise ConfigError(
            f"val_size={cfg.val_size} must be smaller than the training set ({len(ds.train_labels):,} images)"
        )
    tr, va = train_val_split(ds.train_labels, cfg.val_size, cfg.val_seed)
    if cfg.train_subset:
        tr = tr[: cfg.train_subset]
    x, y = ds.train_images[tr], ds.train_labels[tr]
    mean, std = normalisation(x)
    soft: torch.Tensor | None = None
    teachers: list[dict[str, str]] = []
    if cfg.teacher:
        split = SplitSpec(cfg.val_size, cfg.val_seed)
        soft, teachers = teacher_targets(
            cfg.teacher,
            x,
            dataset=cfg.dataset,
            split=split,
            temperature=cfg.distill_temperature,
            batch_size=cfg.eval_batch_size,
        )
        soft = soft.to(device)
    return DeviceData(
        train_x=torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(device),
        train_y=torch.from_numpy(y).to(device),
        val_x=ds.train_images[va],
        val_y=ds.train_labels[va],
        mean=mean,
        std=std,
        dataset=ds,
        soft_y=soft,
        teachers=teachers,
    )
