"""Command-line interface: a thin layer over the library (click).

torch and the other heavy modules are imported inside commands, so ``--help`` stays fast.
Every :class:`~mnist_cnn.errors.MnistCnnError` becomes ``error: <one line>`` and a non-zero exit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from .errors import MnistCnnError

DATASETS = ["mnist", "fashion-mnist"]


def _dataset_option(f):
    return click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True,
                        help="Which data set.")(f)


def _data_dir_option(f):
    return click.option("--data-dir", type=click.Path(path_type=Path), envvar="MNIST_CNN_DATA_DIR",
                        help="Folder with the four IDX files (env: MNIST_CNN_DATA_DIR).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="mnist-cnn")
def cli() -> None:
    """Train, evaluate, compare, explain, export and serve CNNs for MNIST-like digits."""


# --------------------------------------------------------------------------- data


@cli.group()
def data() -> None:
    """Inspect, verify or download a data set."""


@data.command("info")
@_dataset_option
@_data_dir_option
def data_info(dataset: str, data_dir: Path | None) -> None:
    """Where the data set is and what it holds."""
    from . import data as d

    folder = d.resolve_data_dir(dataset, data_dir)
    ds = d.load_dataset(dataset, folder)
    click.echo(f"dataset   {dataset}\nfolder    {folder}\nclasses   {', '.join(ds.classes)}")
    for split in ("train", "test"):
        x, y = ds.split(split)
        counts = " ".join(str(int(c)) for c in __import__("numpy").bincount(y, minlength=len(ds.classes)))
        click.echo(f"{split:<9} {len(x):,} images {x.shape[1]}x{x.shape[2]} uint8; per class: {counts}")


@data.command("verify")
@_dataset_option
@_data_dir_option
def data_verify(dataset: str, data_dir: Path | None) -> None:
    """Check every file's format and compare its checksum with the official one."""
    from . import data as d

    for row in d.verify(dataset, data_dir):
        mark = "official" if row["official"] else "differs from official (format OK)"
        click.echo(f"ok  {row['file']}  {row['count']:,} {row['kind']}  sha256 {row['sha256'][:16]}…  {mark}")


@data.command("download")
@_dataset_option
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="MNIST_CNN_DATA_DIR",
              help="Where to put the files (default: the user cache).")
@click.option("--mirror", "mirrors", multiple=True, help="Mirror base URL to try (repeatable; default: official).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
def data_download(dataset: str, data_dir: Path | None, mirrors: tuple[str, ...], timeout: float) -> None:
    """Download the official files (verified by sha256; idempotent)."""
    from . import data as d

    folder = d.download(dataset, data_dir, mirrors or None, timeout=timeout, progress=True)
    click.echo(f"{dataset} ready in {folder}")


# --------------------------------------------------------------------------- models + recipes


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def models_cmd(as_json: bool) -> None:
    """List registered models: name, parameters, description."""
    from .models import count_params, create_model, list_models, model_entry

    rows = [{"name": n, "params": count_params(create_model(n)), "description": model_entry(n).description}
            for n in list_models()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<14} {r['params']:>10,}  {r['description']}")


@cli.command("recipes")
def recipes_cmd() -> None:
    """List training recipes (train --recipe NAME)."""
    from .recipes import RECIPE_DESCRIPTIONS, RECIPES

    for name, r in RECIPES.items():
        click.echo(f"{name:<10} {r.get('model', 'model1'):<12} {RECIPE_DESCRIPTIONS.get(name, '')}")


# --------------------------------------------------------------------------- train


TRAIN_FLAGS = {
    # flag -> TrainConfig field
    "model": "model", "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "seed": "seed",
    "val_size": "val_size", "early_stopping_patience": "early_stopping_patience", "dataset": "dataset",
    "data_dir": "data_dir", "device": "device", "optimizer": "optimizer", "schedule": "schedule",
    "weight_decay": "weight_decay", "label_smoothing": "label_smoothing", "augment": "augment", "ema": "ema",
    "threads": "threads", "train_subset": "train_subset", "early_stopping_monitor": "early_stopping_monitor",
    "tensorboard": "tensorboard", "precision": "precision", "compile": "compile",
}


def train_options(f):
    """The options shared by `train` and `compare` (everything that shapes a TrainConfig)."""
    opts = [
        click.option("--model", help="Registered model name (see `mnist-cnn models`)."),
        click.option("--recipe", help="Start from a named recipe (see `mnist-cnn recipes`); flags override it."),
        click.option("--config", "config_file", type=click.Path(path_type=Path),
                     help="JSON file of training options (e.g. a search's best.json)."),
        click.option("--epochs", type=int), click.option("--batch-size", type=int),
        click.option("--lr", type=float), click.option("--seed", type=int),
        click.option("--val-size", type=int, help="Validation images held out of training (default 5000)."),
        click.option("--early-stopping-patience", type=int, help="Stop after N epochs without improvement."),
        click.option("--early-stopping-monitor", type=click.Choice(["val_loss", "val_accuracy"])),
        click.option("--dataset", type=click.Choice(DATASETS)),
        click.option("--data-dir", envvar="MNIST_CNN_DATA_DIR", help="Data folder (env: MNIST_CNN_DATA_DIR)."),
        click.option("--device", help="auto, cpu or cuda."),
        click.option("--optimizer", type=click.Choice(["adam", "adamw", "sgd", "nesterov"])),
        click.option("--schedule", type=click.Choice(["constant", "onecycle", "cosine", "linear"])),
        click.option("--weight-decay", type=float), click.option("--label-smoothing", type=float),
        click.option("--augment", help="Augmentation preset: none, light, medium, strong."),
        click.option("--ema", type=float, help="EMA decay of weights, e.g. 0.999 (0: off)."),
        click.option("--threads", type=int, help="CPU threads (default: all cores)."),
        click.option("--train-subset", type=int, help="Train on only the first N training images."),
        click.option("--tensorboard", help="Log training curves to this TensorBoard folder (pip install tensorboard)."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]),
                     help="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32."),
        click.option("--compile/--no-compile", "compile", default=None,
                     help="torch.compile the model (warm-up timed apart; often slower for tiny nets)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def build_config(recipe: str | None, config_file: Path | None, flags: dict[str, Any]):
    """Defaults (seed recipe) <- recipe <- config file <- flags."""
    from .config import TrainConfig, load_config_file
    from .recipes import recipe_config

    cfg = recipe_config(recipe) if recipe else recipe_config("seed")
    if config_file is not None:
        cfg = cfg.merged(load_config_file(config_file).to_dict())
    overrides = {TRAIN_FLAGS[k]: v for k, v in flags.items() if k in TRAIN_FLAGS and v is not None}
    if overrides.get("data_dir") is not None:
        overrides["data_dir"] = str(overrides["data_dir"])
    return cfg.merged(overrides).validate()


@cli.command("train")
@train_options
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default: runs/<model>-seed<seed>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--force", is_flag=True, help="Overwrite an existing run folder.")
@click.option("--download", is_flag=True, help="Download the data set first if it is missing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or epoch lines.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train with N processes (DistributedDataParallel via torchrun; gloo on CPU, nccl on GPUs).")
@click.option("--ensemble", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train N seeds (seed, seed+1, ...) into OUT/member-k and average them in OUT.")
def train_cmd(recipe, config_file, out, resume, force, download, quiet, nproc, ensemble, **flags) -> None:
    """Train a model and write a run folder (weights, metrics, report, plots)."""
    cfg = build_config(recipe, config_file, flags)
    if nproc > 1:
        _relaunch_with_torchrun(nproc)
    if download:
        from . import data as d

        try:
            d.resolve_data_dir(cfg.dataset, cfg.data_dir)
        except MnistCnnError:
            d.download(cfg.dataset, cfg.data_dir, progress=True)
    from .training import train

    out = out or Path("runs") / f"{cfg.recipe or cfg.model}-seed{cfg.seed}"
    if ensemble > 1:
        from .cli_accuracy import train_ensemble

        return train_ensemble(cfg, out, ensemble, resume=resume, force=force, quiet=quiet)
    result = train(cfg, out, resume=resume, force=force, quiet=quiet)
    m = result.metrics
    if "test_accuracy" not in m:  # a non-zero rank of a multi-process run: rank 0 reports
        return
    click.echo(f"{out}: test accuracy {100 * m['test_accuracy']:.2f}%  test loss {m['test_loss']:.4f}  "
               f"val accuracy {100 * m.get('val_accuracy', float('nan')):.2f}%  train {m['train_seconds']:.1f}s")


def _relaunch_with_torchrun(nproc: int) -> None:
    """Re-run this very command under torchrun with N local processes (without --nproc)."""
    import os
    import subprocess

    argv = sys.argv[1:]
    drop = {i for i, a in enumerate(argv) if a == "--nproc"} | {i + 1 for i, a in enumerate(argv) if a == "--nproc"}
    args = [a for i, a in enumerate(argv) if i not in drop and not a.startswith("--nproc=")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "mnist_cnn", *args]
    sys.exit(subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}))


# --------------------------------------------------------------------------- evaluate


@cli.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--tta", is_flag=True, help="Test-time augmentation (average over small shifts).")
@_data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def evaluate_cmd(run: Path, split: str, tta: bool, data_dir: Path | None, as_json: bool) -> None:
    """Evaluate a trained run folder or model file on the test (or validation) split."""
    from .inference import evaluate_run

    metrics = evaluate_run(run, split=split, tta=tta, data_dir=data_dir)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        click.echo(f"{run}: {split} accuracy {100 * metrics['accuracy']:.2f}%  loss {metrics['loss']:.4f}  "
                   f"({metrics['n']:,} images{', TTA' if tta else ''})")


# --------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="mnist-cnn", standalone_mode=False)
    except MnistCnnError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:  # bad flag or value: one line, like every other error
        where = exc.ctx.command_path if exc.ctx is not None else "mnist-cnn"
        click.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except (OSError, ValueError, RuntimeError) as exc:  # last line of defence: no traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        click.echo(f"error: {type(exc).__name__}: {first}", err=True)
        sys.exit(1)


# Commands of later stages live in their own modules and register themselves on `cli`.
from . import cli_accuracy, cli_inference, cli_reports, cli_search, cli_serving  # noqa: E402,F401
