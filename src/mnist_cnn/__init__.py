"""mnist-cnn: train, evaluate, compare, explain, export and serve CNNs for MNIST-like digits.

The public API (everything else is reachable through the stage subpackages, see docs/architecture.md)::

    import mnist_cnn
    model = mnist_cnn.create_model("model1")                  # any name from mnist_cnn.list_models()
    result = mnist_cnn.train(mnist_cnn.TrainConfig(model="model2", epochs=5), "runs/m2")
    metrics = mnist_cnn.evaluate("runs/m2")                   # test accuracy, loss, per class
    model, meta = mnist_cnn.load_model("default")             # a torch module, from safetensors
    predictor = mnist_cnn.load_predictor("default")           # run folder, "default" or model.onnx
    predictor.predict(x_test[:5])                             # (N, 28, 28) arrays, PIL images, paths
    reading = mnist_cnn.read_number("meter.jpg")              # a whole number: .number, .probability, .rows

Heavy modules (torch) are imported lazily, on first use of a name, so ``mnist-cnn --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mnist_cnn.version import __version__

if TYPE_CHECKING:
    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.errors import MnistCnnError
    from mnist_cnn.inference.evaluate import evaluate_run as evaluate
    from mnist_cnn.inference.predictors import Prediction, Predictor, load_predictor
    from mnist_cnn.inference.reader import read_number
    from mnist_cnn.models.files import load_model
    from mnist_cnn.models.registry import create_model, list_models, register_model
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import list_recipes, recipe_config

# public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "create_model": ("mnist_cnn.models.registry", "create_model"),
    "list_models": ("mnist_cnn.models.registry", "list_models"),
    "register_model": ("mnist_cnn.models.registry", "register_model"),
    "load_model": ("mnist_cnn.models.files", "load_model"),
    "load_predictor": ("mnist_cnn.inference.predictors", "load_predictor"),
    "Predictor": ("mnist_cnn.inference.predictors", "Predictor"),
    "Prediction": ("mnist_cnn.inference.predictors", "Prediction"),
    "read_number": ("mnist_cnn.inference.reader", "read_number"),
    "train": ("mnist_cnn.training.engine", "train"),
    "evaluate": ("mnist_cnn.inference.evaluate", "evaluate_run"),
    "TrainConfig": ("mnist_cnn.training.config", "TrainConfig"),
    "recipe_config": ("mnist_cnn.training.recipes", "recipe_config"),
    "list_recipes": ("mnist_cnn.training.recipes", "list_recipes"),
    "load_dataset": ("mnist_cnn.data.datasets", "load_dataset"),
    "MnistCnnError": ("mnist_cnn.errors", "MnistCnnError"),
}

__all__ = [
    "MnistCnnError",
    "Prediction",
    "Predictor",
    "TrainConfig",
    "__version__",
    "create_model",
    "evaluate",
    "list_models",
    "list_recipes",
    "load_dataset",
    "load_model",
    "load_predictor",
    "read_number",
    "recipe_config",
    "register_model",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'mnist_cnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
