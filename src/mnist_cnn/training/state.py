"""The training state, typed, and its checkpoint: everything ``--resume`` needs, in one file.

A checkpoint is one safetensors file (atomic, never pickle) holding

* tensors: ``model.*`` weights, ``ema.*`` (EMA of the weights), ``best.*`` (best weights so far, for
  early stopping), ``optim.<param>.<key>`` (optimiser state), ``rng.torch|gen|aug`` (RNG states);
* JSON metadata: the :class:`Progress` counters (top-level keys ``epoch``, ``step``, ``history``, ...),
  the run's ``config`` and the optimiser's param groups.

The learning rate is a pure function of ``step``, so no scheduler state is needed; restoring all of
the above makes a resumed run bit-identical to an uninterrupted one (on CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn.artifacts.files import load_tensors, save_tensors
from mnist_cnn.errors import CheckpointError, first_line


@dataclass
class Progress:
    """How far a run is: JSON-serialisable counters, saved in the checkpoint's metadata."""

    epoch: int = 0  # last completed epoch
    step: int = 0  # optimiser steps taken
    history: list[dict[str, float]] = field(default_factory=list)  # one row per completed epoch
    best_epoch: int | None = None  # early stopping: epoch of the best monitored score
    best_score: float | None = None
    bad_epochs: int = 0  # epochs since the best score
    train_seconds: float = 0.0
    eval_seconds: float = 0.0


PROGRESS_KEYS = [f.name for f in fields(Progress)]


@dataclass
class TrainState:
    """Everything that changes while training; saved after every epoch, restored by ``--resume``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    gen: torch.Generator  # data order (identical on every rank)
    aug_gen: torch.Generator  # augmentation draws (per rank)
    ema: nn.Module | None = None  # exponential moving average of the weights, when cfg.ema > 0
    best: dict[str, torch.Tensor] | None = None  # weights of the best epoch, when early stopping
    progress: Progress = field(default_factory=Progress)

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved: the EMA when there is one."""
        return self.ema if self.ema is not None else self.model

    def save(self, path: Path, config: dict[str, Any]) -> None:
        """One atomic checkpoint file with the tensors and metadata described in the module doc."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        if self.best is not None:
            tensors.update({f"best.{k}": v for k, v in self.best.items()})
        optim_tensors, optim_meta = _optim_to_tensors(self.optimizer)
        tensors.update(optim_tensors)
        tensors.update(
            {"rng.torch": torch.get_rng_state(), "rng.gen": self.gen.get_state(), "rng.aug": self.aug_gen.get_state()}
        )
        save_tensors(path, tensors, {**asdict(self.progress), "config": config, "optimizer": optim_meta})

    def restore(self, path: Path, device: torch.device) -> None:
        """Load a checkpoint written by :meth:`save` into this state (same architecture and optimiser)."""
        tensors, meta = load_checkpoint(path)
        try:
            self.model.load_state_dict(_prefixed(tensors, "model."))
            if self.ema is not None:
                self.ema.load_state_dict(_prefixed(tensors, "ema."))
            best = _prefixed(tensors, "best.")
            self.best = {k: v.to(device) for k, v in best.items()} or None
            _optim_from_tensors(self.optimizer, {k: v.to(device) for k, v in tensors.items()}, meta["optimizer"])
            torch.set_rng_state(tensors["rng.torch"])
            self.gen.set_state(tensors["rng.gen"])
            self.aug_gen.set_state(tensors["rng.aug"])
            self.progress = Progress(**{k: meta[k] for k in PROGRESS_KEYS})
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # weights/optimiser of another model
            raise CheckpointError(
                f"{path}: does not fit this run ({first_line(exc)}); start the run again with --force"
            ) from None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, metadata)`` of a training checkpoint, or a one-line :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from; start the run without --resume")
    tensors, meta = load_tensors(path)
    missing = [k for k in ("epoch", "step", "history", "config", "optimizer") if k not in meta]
    if missing or "rng.torch" not in tensors:
        raise CheckpointError(
            f"{path}: not a training checkpoint (no {', '.join(missing) or 'RNG state'}); "
            "start the run again with --force"
        )
    return tensors, meta


def checkpoint_config(path: Path) -> dict[str, Any]:
    """The TrainConfig fields a checkpoint was written with (the run's saved plan)."""
    config = load_checkpoint(path)[1]["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: its config is not an object; start the run again with --force")
    return config


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optim_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimiser state as flat tensors ``optim.<param id>.<key>`` plus JSON (param groups, scalars)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # the file holds contiguous tensors; a channels_last weight's moments must be laid out like the
    # weight again: fused kernels walk parameter, gradient and state by the same flat index (a
    # resumed fused-Adam run drifted off the uninterrupted one, by 0.01 in a weight after one epoch)
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p, {})
            for k, v in st.items():
                if torch.is_tensor(v) and v.shape == p.shape and v.stride() != p.stride():
                    st[k] = torch.empty_like(p).copy_(v)
