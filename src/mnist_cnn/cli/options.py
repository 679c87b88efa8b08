"""Options shared by several commands, each defined once, and the config they build.

``train_options`` adds one flag per :class:`~mnist_cnn.training.config.TrainConfig` field a user sets
from the command line; the flag's parameter name *is* the field name, so ``build_config`` needs no
mapping table. Nothing heavy is imported at module level (``--help`` stays fast).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from mnist_cnn.training.config import TrainConfig

F = TypeVar("F", bound=Callable[..., Any])

# the data sets' names (mnist_cnn.data.DATASETS holds their specs; a test keeps the two equal)
DATASETS = ["mnist", "fashion-mnist"]


def dataset_option(default: str | None = "mnist") -> Callable[[F], F]:
    return click.option(
        "--dataset",
        type=click.Choice(DATASETS),
        default=default,
        show_default=default is not None,
        help="Which data set.",
    )


def data_dir_option(help: str = "Folder with the four IDX files (env: MNIST_CNN_DATA_DIR).") -> Callable[[F], F]:
    return click.option("--data-dir", type=click.Path(path_type=Path), envvar="MNIST_CNN_DATA_DIR", help=help)


def json_option(help: str = "Print the result as JSON.") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)


def echo_json(obj: Any) -> None:
    """One JSON document on stdout (numpy scalars and paths become plain values)."""
    click.echo(json.dumps(obj, indent=2, default=_plain))


def _plain(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def say(msg: str) -> None:
    """Progress for people, on stderr (stdout stays parseable with --json)."""
    click.echo(msg, err=True)


def train_options(f: F) -> F:
    """The options shared by `train`, `compare` and `search`: everything that shapes a TrainConfig."""
    opts = [
        click.option("--model", help="Registered model name (see `mnist-cnn models`)."),
        click.option("--recipe", help="Start from a named recipe (see `mnist-cnn recipes`); flags override it."),
        click.option(
            "--config",
            "config_file",
            type=click.Path(path_type=Path),
            help="JSON file of training options (e.g. a search's best.json).",
        ),
        click.option("--epochs", type=int),
        click.option("--batch-size", type=int),
        click.option("--lr", type=float),
        click.option("--seed", type=int),
        click.option("--val-size", type=int, help="Validation images held out of training (default 5000)."),
        click.option(
            "--split-seed",
            type=int,
            help="Seed of the validation split (default: --seed); fix it to compare seeds on one split.",
        ),
        click.option("--early-stopping-patience", type=int, help="Stop after N epochs without improvement."),
        click.option("--early-stopping-monitor", type=click.Choice(["val_loss", "val_accuracy"])),
        dataset_option(default=None),
        data_dir_option("Data folder (env: MNIST_CNN_DATA_DIR)."),
        click.option(
            "--device",
            help="auto (any accelerator PyTorch finds: CUDA, Apple MPS, Intel XPU; else cpu), "
            "cpu, cuda[:N], mps, xpu[:N].",
        ),
        click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "nesterov"])),
        click.option(
            "--optimizer-impl",
            type=click.Choice(["auto", "fused", "foreach", "loop"]),
            help="Optimiser kernels: auto (fused on CPU and CUDA, else torch's choice), fused, foreach, loop.",
        ),
        click.option("--schedule", type=click.Choice(["constant", "onecycle", "cosine", "linear"])),
        click.option("--weight-decay", type=float),
        click.option("--label-smoothing", type=float),
        click.option("--augment", help="Augmentation preset: none, light, medium, strong, photo (or key=value,...)."),
        click.option("--ema", type=float, help="EMA decay of weights, e.g. 0.999 (0: off)."),
        click.option(
            "--tta/--no-tta",
            "tta",
            default=None,
            help="Report the final validation and test accuracy with test-time augmentation (the image "
            "and four 1-pixel shifts); `evaluate` then uses it too.",
        ),
        click.option(
            "--teacher",
            help="Distil from this run, model file or ensemble (or several, comma-separated); it must "
            "hold out the same validation split.",
        ),
        click.option("--distill-alpha", type=float, help="Weight of the teacher's targets (default 0.5)."),
        click.option("--distill-temperature", type=float, help="Softmax temperature of distillation (default 4)."),
        click.option(
            "--threads",
            type=int,
            help="CPU threads (default: the cores other processes leave free, chosen again each epoch; "
            "env: MNIST_CNN_THREADS). Fix it for bit-for-bit reproducible runs.",
        ),
        click.option("--train-subset", type=int, help="Train on only the first N training images."),
        click.option("--tensorboard", help="Log training curves to this TensorBoard folder (pip install tensorboard)."),
        click.option(
            "--precision",
            type=click.Choice(["auto", "fp32", "bf16"]),
            help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32.",
        ),
        click.option(
            "--compile/--no-compile",
            "compile",
            default=None,
            help="torch.compile the model (warm-up timed apart; often slower for tiny nets).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def config_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """The given (non-None) flags that are TrainConfig fields, as config values (paths as strings)."""
    from dataclasses import fields

    from mnist_cnn.training.config import TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    return {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if k in names and v is not None}


def build_config(recipe: str | None, config_file: Path | None, flags: dict[str, Any]) -> TrainConfig:
    """Defaults (seed recipe) <- recipe <- config file <- flags, validated."""
    from mnist_cnn.training.config import load_config_file
    from mnist_cnn.training.recipes import recipe_config

    cfg = recipe_config(recipe or "seed")
    if config_file is not None:
        cfg = cfg.merged(load_config_file(config_file).to_dict())
    return cfg.merged(config_flags(flags)).validate()
