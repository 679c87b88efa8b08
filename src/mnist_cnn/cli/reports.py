"""CLI commands for the reports stage: explore, compare, explain (heavy imports inside commands)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from mnist_cnn.cli.options import (
    build_config,
    data_dir_option,
    dataset_option,
    echo_json,
    json_option,
    say,
    train_options,
)
from mnist_cnn.errors import ConfigError


@click.command("explore")
@dataset_option()
@data_dir_option()
@click.option(
    "--val-size",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Validation images held out of training (as `train --val-size`).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the validation split and the samples.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Report folder.")
@json_option("Print the report's numbers (explore.json) as JSON.")
def explore_cmd(dataset: str, data_dir: Path | None, val_size: int, seed: int, out: Path, as_json: bool) -> None:
    """Explore a data set: class counts, samples, mean images, intensities, train vs test."""
    from mnist_cnn.reports.explore import explore

    raw = explore(dataset, out, data_dir=data_dir, val_size=val_size, seed=seed)
    if as_json:
        echo_json({"report": str(out / "explore.html"), **raw})
        return
    shift = raw["train_vs_test"]
    click.echo(
        f"{out / 'explore.html'}: {dataset}, "
        + ", ".join(f"{k} {sum(v):,}" for k, v in raw["counts"].items())
        + f"; train vs test class proportions p = {shift['class_proportions']['p']:.3g}, "
        f"ink KS D = {shift['ink']['ks_d']:.4f}"
    )


def _model_names(names: tuple[str, ...]) -> list[str]:
    """``--models model1 model2`` or ``--models model1,model2``."""
    return [n for name in names for n in name.split(",") if n]


def _command_line(models: list[str], seeds: int, flags: dict[str, Any], out: Path) -> str:
    """The command that reproduces this comparison (only the flags given)."""
    parts = ["mnist-cnn", "compare", "--models", *models, "--seeds", str(seeds)]
    for k, v in flags.items():
        if v is not None:
            parts += [f"--{k.replace('_', '-')}", str(v)]
    return shlex.join([*parts, "--out", str(out)])


@click.command("compare")
@click.argument("names", nargs=-1)
@click.option(
    "--models",
    "use_models",
    is_flag=True,
    help="NAMES are registered models to train (--seeds each) instead of run folders.",
)
@click.option(
    "--seeds",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="With --models: train seeds SEED..SEED+N-1 of each model (--seed sets the first, default 0).",
)
@train_options
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Report folder; trained runs go to OUT/runs/<model>-seed<k> and are reused on a re-run.",
)
@click.option("--quiet", "-q", is_flag=True, help="No epoch lines while training.")
@json_option("Print the comparison's numbers (compare.json) as JSON.")
def compare_cmd(
    names: tuple[str, ...],
    use_models: bool,
    seeds: int,
    recipe: str | None,
    config_file: Path | None,
    out: Path,
    quiet: bool,
    as_json: bool,
    **flags: Any,
) -> None:
    """Compare RUN_DIRs, or train `--models A B --seeds N`, with statistics and a verdict.

    \b
    mnist-cnn compare runs/a runs/b --out cmp
    mnist-cnn compare --models model1 model2 --seeds 3 --threads 1 --out cmp

    With --tensorboard DIR each new run logs to DIR/<model>-seed<k>.
    """
    from mnist_cnn.reports.compare import build_report, group_runs, load_runs
    from mnist_cnn.training.compare import train_missing

    if not names:
        raise ConfigError("compare: give run folders (RUN_DIR...) or --models A B")
    command = ""
    if use_models:
        models = _model_names(names)
        if flags.get("model"):
            raise ConfigError("compare: use --models A B (not --model) to name the models to compare")
        if len(set(models)) < 2:
            raise ConfigError("compare --models needs at least two different models, e.g. --models model1 model2")
        base = build_config(recipe, config_file, flags)  # validates the flags once, before any training
        first = base.seed

        def make_cfg(model: str, seed: int):
            return build_config(recipe, config_file, {**flags, "model": model, "seed": seed})

        paths = train_missing(models, range(first, first + seeds), make_cfg, out, flags.get("tensorboard"), quiet, say)
        command = _command_line(models, seeds, {**flags, "recipe": recipe, "config": config_file}, out)
    else:
        paths = [Path(n) for n in names]
    data_dir = flags.get("data_dir")
    groups = group_runs(load_runs(paths, data_dir))
    if not command:
        command = shlex.join(["mnist-cnn", "compare", *map(str, paths), "--out", str(out)])
    raw = build_report(groups, out, command)
    if as_json:
        echo_json({"report": str(out / "compare.html"), **raw})
        return
    for p in raw["pairs"]:
        click.echo(p["verdict"].replace("**", ""))
    click.echo(f"report: {out / 'compare.html'}")


@click.command("explain")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--images", help="Test-set indices to explain, e.g. 0,7,42 (default: --random images).")
@click.option(
    "--random",
    "n_random",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="How many random test images get saliency maps when --images is not given.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the random images.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Images in each gallery (confident mistakes, unsure correct).",
)
@click.option(
    "--method",
    type=click.Choice(["both", "gradcam", "ig"]),
    default="both",
    show_default=True,
    help="Saliency: Grad-CAM on the last conv layer, integrated gradients, or both.",
)
@click.option(
    "--ig-steps",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Integration steps of integrated gradients.",
)
@data_dir_option()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Report folder.")
@json_option("Print the report's numbers (explain.json) as JSON.")
def explain_cmd(
    run: Path,
    images: str | None,
    n_random: int,
    seed: int,
    top: int,
    method: str,
    ig_steps: int,
    data_dir: Path | None,
    out: Path,
    as_json: bool,
) -> None:
    """Explain a run: confident mistakes, unsure right answers, saliency maps, confused pairs."""
    from mnist_cnn.reports.explain import explain_run
    from mnist_cnn.reports.words import plural

    raw = explain_run(
        run,
        out,
        images=images,
        n_random=n_random,
        seed=seed,
        top=top,
        method=method,
        data_dir=data_dir,
        ig_steps=ig_steps,
    )
    if as_json:
        echo_json({"report": str(out / "explain.html"), **raw})
        return
    pairs = ", ".join(f"{p['pair']} ({p['total']})" for p in raw["confused_pairs"][:3]) or "none"
    click.echo(
        f"{out / 'explain.html'}: {plural(raw['mistakes'], 'mistake')} in "
        f"{plural(raw['n_test'], 'test image', thousands=True)}; most confused: {pairs}"
    )
