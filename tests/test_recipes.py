"""Recipe presets: valid, overridable by flags, and trainable."""

from __future__ import annotations

import json

import pytest

from mnist_cnn.errors import ConfigError
from mnist_cnn.training.recipes import RECIPE_DESCRIPTIONS, RECIPES, list_recipes, recipe_config
from tests.helpers import run_cli


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_is_valid_and_described(name):
    cfg = recipe_config(name).validate()
    assert cfg.recipe == name
    assert name in RECIPE_DESCRIPTIONS
    for key, value in RECIPES[name].items():
        got = getattr(cfg, key)
        assert (list(got) if isinstance(got, tuple) else got) == value


def test_seed_recipe_is_the_tutorials():
    cfg = recipe_config("seed")
    assert (cfg.model, cfg.lr, cfg.batch_size, cfg.epochs, cfg.optimizer) == ("model1", 1e-3, 32, 20, "adam")


def test_unknown_recipe_lists_valid_names():
    with pytest.raises(ConfigError, match="valid recipes: .*fast99"):
        recipe_config("fastest")


@pytest.mark.parametrize("name", list_recipes())
def test_recipe_trains_on_tiny_data_with_flag_overrides(name, tiny_data, tmp_path):
    out = tmp_path / name
    r = run_cli(
        "train",
        "--recipe",
        name,
        "--data-dir",
        str(tiny_data),
        "--epochs",
        "1",
        "--val-size",
        "100",
        "--batch-size",
        "64",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["recipe"] == name and cfg["epochs"] == 1 and cfg["batch_size"] == 64  # flags win
    assert cfg["model"] == RECIPES[name]["model"]  # the rest comes from the recipe
