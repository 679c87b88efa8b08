"""mnist-cnn: train, evaluate, compare, explain, export and serve CNNs for MNIST-like digits.

Heavy modules (torch) are imported lazily so ``mnist-cnn --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": "models", "list_models": "models", "register_model": "models",
    "load_model": "models", "save_model": "models",
    "load_dataset": "data", "TrainConfig": "config", "train": "training", "evaluate_model": "evaluation",
    "recipe_config": "recipes", "list_recipes": "recipes", "MnistCnnError": "errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'mnist_cnn' has no attribute {name!r}")
