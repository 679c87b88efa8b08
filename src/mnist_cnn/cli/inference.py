"""``mnist-cnn predict`` and ``calibrate``: the inference stage (heavy modules are imported inside the commands)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from mnist_cnn.cli.options import data_dir_option, echo_json, json_option, say
from mnist_cnn.errors import ConfigError

DEFAULT_MIN_CONFIDENCE = 0.5  # = inference.predictors.DEFAULT_MIN_CONFIDENCE (not imported: --help stays fast)


@click.command("predict")
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--example",
    is_flag=True,
    help="Read the sample images bundled with the package (MNIST test digits, two page photos) "
    "instead of IMAGES: a first try that needs no data set.",
)
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
@click.option(
    "--multi",
    is_flag=True,
    help="Read whole numbers (a year, a meter reading, a code in a row of boxes) with the number reader: "
    "the string, each digit's box and probability, and the probability of the whole number.",
)
@click.option(
    "--reader",
    "reader_spec",
    default="default",
    show_default=True,
    help="With --multi: the number reader (.safetensors) or `default` (the bundled one).",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=DEFAULT_MIN_CONFIDENCE,
    show_default=True,
    help="Mark answers whose (calibrated) probability is below this as unsure (0: never).",
)
def predict_cmd(
    images: tuple[Path, ...],
    example: bool,
    model_spec: str,
    as_json: bool,
    top_k: int,
    save_dir: Path | None,
    multi: bool,
    reader_spec: str,
    min_confidence: float,
) -> None:
    """Predict the digit in each IMAGE (photo, scan, drawing; PNG, JPEG, ...). Folders are walked.

    Each image is preprocessed like MNIST (polarity, background removal, crop, 20 px, centre of
    mass) first. Probabilities are calibrated (see `mnist-cnn calibrate`); an answer below
    --min-confidence is printed as "unsure" with its top two classes ("unsure": true in JSON).
    With --multi the rows of handwriting are found and each is read whole (touching digits too);
    --min-confidence then applies to the whole number.
    Files that cannot be read are reported and skipped; the exit code is then 1."""
    from mnist_cnn.cpu import start_cpu_work, usable_cpus, use_free_cores

    start_cpu_work()  # the load reading starts now: the choice below needs no pause
    from mnist_cnn.inference.batch import image_files, predict_files, prepare_files, read_files
    from mnist_cnn.inference.predictors import load_predictor

    images = _chosen_images(images, example)
    # a bad --model or --reader fails before any image is read
    predictor = None if multi else load_predictor(model_spec)
    reader = _load_reader(reader_spec) if multi else None
    files = image_files(list(images))
    if not files:
        raise ConfigError(
            f"no image files found in {', '.join(map(str, images))} "
            "(looked for .png .jpg .jpeg .gif .bmp .tif .webp ...)"
        )
    choice = use_free_cores()  # the model's OpenMP threads: the free cores (a busy one makes them spin)
    # the preprocessing pool: every core we may use; processes beside a busy one are only time-shared
    # (2,000 PNGs beside a busy process: 8.3 s with 2 workers, 11.7 s with 1)
    workers = len(usable_cpus())
    if len(files) >= PROGRESS_MIN_FILES:
        say(f"{len(files):,} images; {workers} preprocessing processes; model {choice.line}")
    with _progress(len(files)) as advance:
        prepared = prepare_files(files, multi, workers=workers, progress=advance)
    if reader is not None:
        records = read_files(prepared, reader, save_dir, min_confidence)
    else:
        assert predictor is not None
        top_k = min(top_k, len(predictor.classes))
        records = predict_files(
            predictor, files, top_k=top_k, save_dir=save_dir, min_confidence=min_confidence, prepared=prepared
        )
    for rec in records:
        if as_json:
            click.echo(json.dumps(rec))
        elif "error" in rec:
            click.echo(f"{rec['file']}: error: {rec['error']}", err=True)
        else:  # the samples' folder is deep in site-packages: their names say enough
            click.echo(_line({**rec, "file": Path(rec["file"]).name} if example else rec))
    failed = sum("error" in r for r in records)
    if failed:
        click.echo(f"{failed} of {len(records)} image(s) failed", err=True)
        sys.exit(1)


PROGRESS_MIN_FILES = 200  # a folder this long shows a progress bar (on a terminal) and the thread choice


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on stderr for a long folder, when stderr is a terminal (not in logs or pipes)."""
    if total < PROGRESS_MIN_FILES or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("preprocessing", total=total)
        yield lambda n: bar.advance(task, n)


def _chosen_images(images: tuple[Path, ...], example: bool) -> tuple[Path, ...]:
    """IMAGES, or with --example the bundled samples (named after the digit they show)."""
    if example and images:
        raise ConfigError("pass IMAGES or --example, not both")
    if not example:
        if not images:
            raise ConfigError("no IMAGES given; name image files or folders, or try `mnist-cnn predict --example`")
        return images
    from mnist_cnn.artifacts.runs import SAMPLES_DIR, sample_images

    samples = sample_images()
    say(f"the sample images bundled in {SAMPLES_DIR} (the digit is in each name):")
    return tuple(s["path"] for s in samples)


def _line(rec: dict[str, Any]) -> str:
    """``file: 7 (98.3%)  top-3: 7 98.3% | 1 1.1% | 2 0.3%``; unsure: ``file: unsure: 4 or 9? (48.0%)...``;
    for --multi the digits read."""
    if "rows" in rec:
        return "\n".join(_row_line(rec["file"], row) for row in rec["rows"])
    top = " | ".join(f"{t['label']} {100 * t['probability']:.1f}%" for t in rec["top_k"])
    answer = rec["label"]
    if rec["unsure"]:
        answer = "unsure: " + " or ".join(t["label"] for t in rec["top_k"][:2]) + "?"
    return f"{rec['file']}: {answer} ({100 * rec['probability']:.1f}%)  top-{len(rec['top_k'])}: {top}"


def _row_line(file: str, row: dict[str, Any]) -> str:
    """``file: 1928 (97.1%)  digits: 1 99% | 9 98% | ...``; unsure: ``file: unsure: 1928? (3 or 4 digits?; 48.0%)``."""
    each = " | ".join(f"{d['label']} {100 * d['probability']:.0f}%" for d in row["digits"])
    if row["unsure"]:
        alt = "".join(f" or {a['number']}" for a in row["alternatives"][:1])
        doubt = f"{row['reason']}; {100 * row['probability']:.1f}%"
        return f"{file}: unsure: {row['number']}{alt}? ({doubt})  digits: {each}"
    return f"{file}: {row['number']} ({100 * row['probability']:.1f}%)  digits: {each}"


def _load_reader(spec: str) -> Any:
    from mnist_cnn.inference.reader import NumberReader

    return NumberReader(None if spec == "default" else spec)


@click.command("calibrate")
@click.argument("model_spec", metavar="MODEL")
@data_dir_option()
@json_option("Print the fitted calibration as JSON.")
def calibrate_cmd(model_spec: str, data_dir: Path | None, as_json: bool) -> None:
    """Fit the temperature that calibrates MODEL's probabilities (run folder, .safetensors, ensemble
    folder or `default`) on the validation split it was trained with.

    The temperature is stored next to the weights (``<name>.json``: ``model.json`` in a run folder,
    ``default.json`` for the bundled model; an ensemble's manifest), never in the weights file, and
    is used from then on by predict, evaluate, export and serve. Training fits it already; run this
    for models trained before, or to fit it again."""
    from mnist_cnn.inference.evaluate import calibrate_run

    result = calibrate_run(model_spec, data_dir)
    if as_json:
        echo_json(result)
        return
    cal = result["calibration"]
    if cal["method"] == "none":
        click.echo(f"{result['model']}: not calibrated ({cal['reason']}); written to {result['written_to']}")
        return
    fit = f"; {calibration_change(cal)}" if "nll_before" in cal else ""
    click.echo(
        f"{result['model']}: temperature {cal['temperature']:.4f} ({cal['fitted_on']}){fit}; "
        f"written to {result['written_to']}"
    )
    old = result.get("replaced")
    if old and old.get("fitted_on") != cal["fitted_on"]:  # say what a different kind of fit is replaced by
        power = f" and contrast power {old['contrast_power']:.4f}" if old.get("contrast_power") else ""
        click.echo(f"  (replaces temperature {old['temperature']:.4f}{power}, fitted on {old['fitted_on']})")


def calibration_change(cal: dict[str, Any]) -> str:
    """``NLL 0.0712 -> 0.0634, ECE 0.0121 -> 0.0043``: what dividing by the temperature did (calibrate, evaluate)."""
    return (
        f"NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}, ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}"
    )
