"""Named training recipes: model + optimiser + schedule + epochs + augmentation presets.

``train --recipe NAME`` starts from a recipe; explicit flags still override it. Recipes are data
(dicts of :class:`~mnist_cnn.config.TrainConfig` fields), so they are listed, tested and stored
in every run's config.json as the values they expanded to.
"""

from __future__ import annotations

from typing import Any

from .config import TrainConfig
from .errors import ConfigError

RECIPES: dict[str, dict[str, Any]] = {
    # The seed tutorial: model1, Adam 1e-3, batch 32, 20 epochs, no augmentation.
    "seed": {"model": "model1", "epochs": 20, "batch_size": 32, "lr": 1e-3, "optimizer": "adam",
             "schedule": "constant", "augment": "none"},
}

RECIPE_DESCRIPTIONS: dict[str, str] = {
    "seed": "the seed tutorial's recipe: model1, Adam 1e-3, batch 32, 20 epochs",
}


def list_recipes() -> list[str]:
    return list(RECIPES)


def recipe_config(name: str) -> TrainConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; valid recipes: {', '.join(RECIPES)}")
    return TrainConfig.from_dict({**RECIPES[name], "recipe": name}, source=f"recipe {name}")
