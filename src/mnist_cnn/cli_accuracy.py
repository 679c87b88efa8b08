"""CLI commands for the accuracy stage (registered on the main group; keep imports of heavy modules inside commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .cli import cli


@cli.command("ensemble")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Ensemble folder to write (runs/NAME).")
@click.option("--tta", is_flag=True, help="Each member averages over small shifts too (test-time augmentation).")
@click.option("--force", is_flag=True, help="Replace an ensemble already saved in --out.")
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="MNIST_CNN_DATA_DIR",
              help="Folder with the four IDX files (env: MNIST_CNN_DATA_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def ensemble_cmd(runs: tuple[Path, ...], out: Path, tta: bool, force: bool, data_dir: Path | None,
                 as_json: bool) -> None:
    """Average the probabilities of RUN folders (or model files); evaluate and save it like a run."""
    from .ensemble import build_ensemble

    metrics = build_ensemble(runs, out, tta=tta, data_dir=data_dir, force=force)
    if as_json:
        click.echo(json.dumps(metrics, indent=2))
    else:
        echo_ensemble(out, metrics)


def echo_ensemble(out: Path, m: dict[str, Any]) -> None:
    each = " ".join(f"{100 * a:.2f}" for a in m["member_accuracy"])
    click.echo(f"{out}: ensemble of {m['members']} test accuracy {100 * m['accuracy']:.2f}%  loss {m['loss']:.4f}"
               f"{'  (TTA)' if m['tta'] else ''}; members {each} (mean {100 * m['member_accuracy_mean']:.2f}%)")


def train_ensemble(cfg: Any, out: Path, n: int, *, resume: bool, force: bool, quiet: bool) -> None:
    """``train --ensemble N``: N seeds into OUT/member-k, then the ensemble in OUT."""
    from .ensemble import train_members

    metrics = train_members(cfg, out, n, resume=resume, force=force, quiet=quiet)
    if metrics is not None:
        echo_ensemble(out, metrics)
