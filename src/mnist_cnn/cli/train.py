"""``mnist-cnn models | recipes | train | evaluate | ensemble``: the training and accuracy stage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from mnist_cnn.cli.options import build_config, data_dir_option, echo_json, json_option, train_options
from mnist_cnn.cpu import start_cpu_work
from mnist_cnn.errors import MnistCnnError


@click.command("models")
@click.option(
    "--default",
    "card",
    is_flag=True,
    help="Show the bundled default model's card (intended use, metrics, limitations, data, licence) instead.",
)
@json_option()
def models_cmd(card: bool, as_json: bool) -> None:
    """List registered models: name, parameters, description (--default: the default model's card)."""
    if card:
        from mnist_cnn.artifacts.runs import model_card

        found = model_card()
        if as_json:
            echo_json(found)
        else:
            click.echo(found["card"].strip())
        return
    from mnist_cnn.models.registry import count_params, create_model, list_models, model_entry

    rows = [
        {"name": n, "params": count_params(create_model(n)), "description": model_entry(n).description}
        for n in list_models()
    ]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']:<14} {r['params']:>10,}  {r['description']}")


@click.command("recipes")
@json_option()
def recipes_cmd(as_json: bool) -> None:
    """List training recipes (train --recipe NAME)."""
    from mnist_cnn.training.recipes import RECIPE_DESCRIPTIONS, RECIPES

    rows = [
        {"name": name, "model": r.get("model", "model1"), "description": RECIPE_DESCRIPTIONS.get(name, ""), "config": r}
        for name, r in RECIPES.items()
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<10} {row['model']:<12} {row['description']}")


@click.command("train")
@train_options
@click.option("--out", type=click.Path(path_type=Path), help="Run folder (default: runs/<model>-seed<seed>).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--force", is_flag=True, help="Overwrite an existing run folder.")
@click.option("--download", is_flag=True, help="Download the data set first if it is missing.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or epoch lines.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train with N processes (DistributedDataParallel via torchrun; gloo on CPU, nccl on GPUs).",
)
@click.option(
    "--ensemble",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Train N seeds (seed, seed+1, ...) into OUT/member-k and average them in OUT.",
)
@json_option("Print the run's metrics as JSON (epoch lines still go to stderr unless --quiet).")
def train_cmd(
    recipe: str | None,
    config_file: Path | None,
    out: Path | None,
    resume: bool,
    force: bool,
    download: bool,
    quiet: bool,
    nproc: int,
    ensemble: int,
    as_json: bool,
    **flags: Any,
) -> None:
    """Train a model and write a run folder (weights, metrics, report, plots)."""
    start_cpu_work()  # the load reading starts now: the first choice needs no pause
    cfg = build_config(recipe, config_file, flags)
    if nproc > 1:
        _relaunch_with_torchrun(nproc)
    if download:
        _download_if_missing(cfg.dataset, cfg.data_dir)
    out = out or Path("runs") / f"{cfg.recipe or cfg.model}-seed{cfg.seed}"
    if ensemble > 1:
        from mnist_cnn.training.ensemble import train_members

        metrics = train_members(cfg, out, ensemble, resume=resume, force=force, quiet=quiet)
        if metrics is not None:
            _echo_ensemble(out, metrics, as_json)
        return
    from mnist_cnn.training.engine import train

    # --resume continues the run's saved plan; --epochs N (given) changes it
    m = train(cfg, out, resume=resume, resume_epochs=flags.get("epochs"), force=force, quiet=quiet).metrics
    if "test_accuracy" not in m:  # a non-zero rank of a multi-process run: rank 0 reports
        return
    if as_json:
        echo_json({"run": str(out), **m})
        return
    click.echo(
        f"{out}: test accuracy {100 * m['test_accuracy']:.2f}%  test loss {m['test_loss']:.4f}  "
        f"val accuracy {100 * m.get('val_accuracy', float('nan')):.2f}%  train {m['train_seconds']:.1f}s"
    )


def _download_if_missing(dataset: str, data_dir: str | None) -> None:
    from mnist_cnn.data.datasets import resolve_data_dir
    from mnist_cnn.data.download import download

    try:
        resolve_data_dir(dataset, data_dir)
    except MnistCnnError:
        download(dataset, data_dir, progress=True)


def _relaunch_with_torchrun(nproc: int) -> None:
    """Re-run this very command under torchrun with N local processes (without --nproc)."""
    argv = sys.argv[1:]
    drop = {i for i, a in enumerate(argv) if a == "--nproc"} | {i + 1 for i, a in enumerate(argv) if a == "--nproc"}
    args = [a for i, a in enumerate(argv) if i not in drop and not a.startswith("--nproc=")]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "mnist_cnn",
        *args,
    ]
    sys.exit(subprocess.call(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}))


@click.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option(
    "--tta", is_flag=True, help="Test-time augmentation (average over small shifts); on for a model trained with --tta."
)
@data_dir_option()
@json_option("Print the metrics as JSON.")
def evaluate_cmd(run: Path, split: str, tta: bool, data_dir: Path | None, as_json: bool) -> None:
    """Evaluate a run folder, model file, ensemble folder or `default` on the test (or validation) split."""
    from mnist_cnn.cli.inference import calibration_change
    from mnist_cnn.inference.evaluate import evaluate_run

    metrics = evaluate_run(run, split=split, tta=tta, data_dir=data_dir)
    if as_json:
        echo_json(metrics)
        return
    click.echo(
        f"{run}: {split} accuracy {100 * metrics['accuracy']:.2f}%  loss {metrics['loss']:.4f}  "
        f"({metrics['n']:,} images{', TTA' if metrics['tta'] else ''})"
    )
    cal = metrics["calibration"]
    t = "not calibrated (T = 1)" if cal["temperature"] == 1.0 else f"temperature {cal['temperature']:.4f}"
    click.echo(f"  calibration: {t}; {calibration_change(cal)}")


@click.command("ensemble")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Ensemble folder to write (runs/NAME).")
@click.option("--tta", is_flag=True, help="Each member averages over small shifts too (test-time augmentation).")
@click.option("--force", is_flag=True, help="Replace an ensemble already saved in --out.")
@data_dir_option()
@json_option("Print the metrics as JSON.")
def ensemble_cmd(
    runs: tuple[Path, ...], out: Path, tta: bool, force: bool, data_dir: Path | None, as_json: bool
) -> None:
    """Average the probabilities of RUN folders (or model files); evaluate and save it like a run."""
    from mnist_cnn.inference.ensemble import build_ensemble

    _echo_ensemble(out, build_ensemble(runs, out, tta=tta, data_dir=data_dir, force=force), as_json)


def _echo_ensemble(out: Path, m: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(m)
        return
    each = " ".join(f"{100 * a:.2f}" for a in m["member_accuracy"])
    click.echo(
        f"{out}: ensemble of {m['members']} test accuracy {100 * m['accuracy']:.2f}%  loss {m['loss']:.4f}"
        f"{'  (TTA)' if m['tta'] else ''}; members {each} (mean {100 * m['member_accuracy_mean']:.2f}%)"
    )
