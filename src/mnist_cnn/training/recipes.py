"""Named training recipes: model + optimiser + schedule + epochs + augmentation presets.

``train --recipe NAME`` starts from a recipe; explicit flags still override it. Recipes are data
(dicts of :class:`~mnist_cnn.training.config.TrainConfig` fields), so they are listed, tested and stored
in every run's config.json as the values they expanded to.
"""

from __future__ import annotations

from typing import Any

from mnist_cnn.errors import ConfigError
from mnist_cnn.training.config import TrainConfig

RECIPES: dict[str, dict[str, Any]] = {
    # The seed tutorial: model1, Adam 1e-3, batch 32, 20 epochs, no augmentation.
    "seed": {
        "model": "model1",
        "epochs": 20,
        "batch_size": 32,
        "lr": 1e-3,
        "optimizer": "adam",
        "schedule": "constant",
        "augment": "none",
    },
    # Least time to >= 99.0% test accuracy (mean over 10 seeds): one epoch of `smallcnn` (the published
    # 1-epoch small CNN's shape with BatchNorm after each pool and a 16-channel first conv), one-cycle
    # Adam with low beta1, label smoothing. Chosen on the validation split (docs/benchmarks.md): 99.20 +-
    # 0.07% over 10 seeds in 5.7 s on one fp32/AVX2 thread, where the previous fast99 (29k-param
    # fastnet, batch 192) validated at 99.29% in 10.9 s; under bf16 it is 4.2 s against 6.7 s, so one
    # recipe still serves both machine kinds.
    "fast99": {
        "model": "smallcnn",
        "model_kwargs": {"width": 16},
        "optimizer_impl": "fused",  # ~8% faster per CPU step; a 1-epoch run is never resumed
        "epochs": 1,
        "batch_size": 256,
        "lr": 0.03,
        "optimizer": "adam",
        "betas": [0.7, 0.9],
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "augment": "none",
    },
    # Least time to >= 99.5% (mean over 5 seeds): a 4-block fastnet, light affine augmentation, 3
    # epochs, accuracy reported with test-time augmentation (the image and four 1-pixel shifts; its
    # cost is counted in benchmarks/speed.py). On the validation split (benchmarks/fast995_candidates.py,
    # benchmarks/results/fast995-candidates.json): 3 epochs 99.56 +- 0.04% plain, 99.63 +- 0.04% with TTA
    # (8 seeds); 2 epochs 99.52 / 99.58%; 4 epochs 99.53 / 99.65%; the former 5 epochs 99.62%.
    "fast995": {
        "model": "fastnet",
        "model_kwargs": {"width": 16, "blocks": 4, "pool_first": True},
        "optimizer_impl": "fused",
        "epochs": 3,
        "tta": True,
        "batch_size": 128,
        "lr": 0.01,
        "optimizer": "adam",
        "betas": [0.7, 0.9],
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "augment": "light",
    },
    # Best single-model accuracy within ~20 CPU minutes (docs/accuracy.md: ablations on the validation
    # split): the Kaggle-style BatchNorm CNN, affine augmentation, one-cycle Adam, label smoothing
    # (EMA of weights brought nothing measurable on validation, so it is off).
    "best": {
        "model": "bncnn",
        "epochs": 40,
        "batch_size": 128,
        "lr": 0.003,
        "optimizer": "adam",
        "schedule": "onecycle",
        "label_smoothing": 0.1,
        "augment": "medium",
        "ema": 0.0,
    },
}

RECIPE_DESCRIPTIONS: dict[str, str] = {
    "seed": "the seed tutorial's recipe: model1, Adam 1e-3, batch 32, 20 epochs",
    "fast99": "least time to >= 99.0%: smallcnn (213k params), 1 epoch, one-cycle Adam, batch 256",
    "fast995": "least time to >= 99.5%: 4-block fastnet (99k params), 3 epochs, light augmentation, TTA",
    "best": "best accuracy: bncnn (326k params), 40 epochs, one-cycle Adam, medium augmentation; docs/accuracy.md",
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def recipe_config(name: str) -> TrainConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return TrainConfig.from_dict({**RECIPES[name], "recipe": name}, source=f"recipe {name}")
