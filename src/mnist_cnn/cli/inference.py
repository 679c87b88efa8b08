"""``mnist-cnn predict``: the inference stage (heavy modules are imported inside the command)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mnist_cnn.cli.options import json_option
from mnist_cnn.errors import ConfigError


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_spec",
    default="default",
    show_default=True,
    help="Run folder, .safetensors, ensemble folder, .onnx (ONNX Runtime, no torch) or `default`.",
)
@json_option("Print one JSON object per image (JSON Lines).")
@click.option(
    "--top-k", type=click.IntRange(min=1), default=3, show_default=True, help="How many most probable classes to show."
)
@click.option(
    "--save-preprocessed",
    "save_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Also write each image's 28x28 preprocessed version (PNG) into this folder.",
)
@click.option("--multi", is_flag=True, help="Read a row of several digits (e.g. a year), left to right.")
def predict_cmd(
    images: tuple[Path, ...], model_spec: str, as_json: bool, top_k: int, save_dir: Path | None, multi: bool
) -> None:
    """Predict the digit in each IMAGE (photo, scan, drawing; PNG, JPEG, ...). Folders are walked.

    Each image is preprocessed like MNIST (polarity, background removal, crop, 20 px, centre of
    mass) first. Files that cannot be read are reported and skipped; the exit code is then 1."""
    from mnist_cnn.inference.batch import image_files, predict_files
    from mnist_cnn.inference.predictors import load_predictor

    predictor = load_predictor(model_spec)  # a bad --model fails before any image is read
    files = image_files(list(images))
    if not files:
        raise ConfigError(
            f"no image files found in {', '.join(map(str, images))} "
            "(looked for .png .jpg .jpeg .gif .bmp .tif .webp ...)"
        )
    top_k = min(top_k, len(predictor.classes))
    records = predict_files(predictor, files, top_k=top_k, multi=multi, save_dir=save_dir)
    for rec in records:
        if as_json:
            click.echo(json.dumps(rec))
        elif "error" in rec:
            click.echo(f"{rec['file']}: error: {rec['error']}", err=True)
        else:
            click.echo(_line(rec))
    failed = sum("error" in r for r in records)
    if failed:
        click.echo(f"{failed} of {len(records)} image(s) failed", err=True)
        sys.exit(1)


def _line(rec: dict[str, Any]) -> str:
    """``file: 7 (98.3%)  top-3: 7 98.3% | 1 1.1% | 2 0.3%``; for --multi the digits read."""
    if "digits" in rec:
        each = " ".join(f"{a['label']}({100 * a['probability']:.0f}%)" for a in rec["items"])
        return f"{rec['file']}: {rec['digits']}  (all right: {100 * rec['probability']:.1f}%; {each})"
    top = " | ".join(f"{t['label']} {100 * t['probability']:.1f}%" for t in rec["top_k"])
    return f"{rec['file']}: {rec['label']} ({100 * rec['probability']:.1f}%)  top-{len(rec['top_k'])}: {top}"
