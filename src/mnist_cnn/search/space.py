"""The search space: what Optuna suggests for a trial, and the :class:`TrainConfig` it becomes.

:func:`trial_config` applies a trial's suggestions to the search's base config: a ConvNet
architecture (:func:`suggest_arch`, the seed's "arrangement" question) and/or a training recipe
(:func:`suggest_recipe`). :func:`count_macs` is a candidate's compute per image, which the
``--max-mmacs`` budget bounds.
"""

from __future__ import annotations

from typing import Any

from mnist_cnn.search.spec import SearchSpec
from mnist_cnn.training.config import TrainConfig


def trial_config(trial, spec: SearchSpec) -> TrainConfig:
    """The base config with this trial's suggestions applied."""
    over: dict[str, Any] = {"epochs": spec.budget_epochs, "recipe": None}
    if spec.space in ("arch", "default"):
        over.update(model="convnet", model_kwargs=suggest_arch(trial))
    if spec.space in ("recipe", "default"):
        over.update(suggest_recipe(trial, spec.budget_epochs))
    cfg = TrainConfig.from_dict(spec.base, source="search base config").to_dict()
    return TrainConfig.from_dict({**cfg, **over}, source=f"trial {trial.number}")


def suggest_arch(trial) -> dict[str, Any]:
    """ConvNet keyword arguments: conv blocks (filters, kernel, pool or not: the seed's
    "arrangement" question), padding, BatchNorm, dense head depth/width, dropout."""
    n = trial.suggest_int("blocks", 1, 4)
    padding = trial.suggest_categorical("padding", ["valid", "same"])
    channels = [trial.suggest_categorical(f"channels_{i}", [8, 16, 32, 64, 128]) for i in range(n)]
    kernels = [trial.suggest_categorical(f"kernel_{i}", [3, 5]) for i in range(n)]
    pools = [trial.suggest_categorical(f"pool_{i}", [True, False]) for i in range(n)]
    depth = trial.suggest_int("head_layers", 0, 2)
    head = [trial.suggest_categorical("head_width", [32, 64, 128, 256])] * depth
    return {
        "channels": channels,
        "kernel_size": kernels,
        "pool": pools,
        "padding": padding,
        "batchnorm": trial.suggest_categorical("batchnorm", [True, False]),
        "head": head,
        "dropout": trial.suggest_float("dropout", 0.0, 0.5) if depth else 0.0,
        "conv_dropout": trial.suggest_float("conv_dropout", 0.0, 0.3),
        "global_pool": trial.suggest_categorical("global_pool", [False, True]),
    }


def suggest_recipe(trial, budget_epochs: int) -> dict[str, Any]:
    """TrainConfig recipe fields: optimiser, lr, batch, weight decay, smoothing, augmentation, epochs."""
    return {
        "optimizer": trial.suggest_categorical("optimizer", ["adam", "adamw", "nesterov"]),
        "lr": trial.suggest_float("lr", 1e-4, 0.1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
        "augment": trial.suggest_categorical("augment", ["none", "light", "medium", "strong"]),
        "schedule": trial.suggest_categorical("schedule", ["constant", "onecycle", "cosine"]),
        "epochs": trial.suggest_int("epochs", 1, budget_epochs),
    }


def count_macs(model: Any) -> int:
    """Multiply-accumulates of one forward pass on a [1, 1, 28, 28] image (conv + linear layers)."""
    import torch
    from torch import nn

    total: int = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):  # each output value: in/groups * kh * kw MACs
            total += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += out.numel() * int(mod.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 1, 28, 28))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
