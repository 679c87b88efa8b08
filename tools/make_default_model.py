"""Make the default model bundled with the package: src/mnist_cnn/pretrained/default.{safetensors,json}.

Trains seed 0 of the ``best`` recipe (the seed is fixed in advance: no member is picked by its
accuracy), or packages a run folder that was trained that way, then copies its weights into the
package and writes the provenance beside them: the command, seed, config, data checksums,
validation and test accuracy (re-measured on the packaged file, so ``mnist-cnn evaluate default``
reproduces it), size and sha256. ::

    python tools/make_default_model.py --data-dir ../shared/data/mnist            # train, then package
    python tools/make_default_model.py --from-run runs/accuracy/member-0 \\
        --data-dir ../shared/data/mnist                                              # package a finished run

The run's calibration (its model.json from ``mnist-cnn calibrate``, else the one training stored in
its metadata) goes into default.json with the sha256 of the weights it was fitted for; a run without
one is calibrated on its validation split first. Each file is written atomically (weights first,
then default.json, whose sha256 names the weights).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shlex
import sys
from pathlib import Path
from typing import Any

from mnist_cnn.errors import CheckpointError, MnistCnnError

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "mnist_cnn" / "pretrained"


def train_default(args: argparse.Namespace) -> Path:
    from mnist_cnn.cli import main as cli_main

    if (Path(args.run) / "metrics.json").is_file() and not args.force:
        print(f"{args.run}: already trained; packaging it (--force retrains)", flush=True)
        return Path(args.run)
    argv = ["train", "--recipe", args.recipe, "--seed", str(args.seed), "--out", str(args.run)]
    argv += ["--data-dir", str(args.data_dir)] if args.data_dir else []
    argv += ["--threads", str(args.threads)] if args.threads else []
    argv += ["--resume"] if (Path(args.run) / "checkpoint.safetensors").exists() and not args.force else []
    argv += ["--force"] if args.force else []
    print("mnist-cnn " + shlex.join(argv), flush=True)
    try:
        cli_main(argv)
    except SystemExit as exc:  # main() exits only on errors
        if exc.code:
            raise
    return Path(args.run)


def reproduce_command(cfg: dict[str, Any], run: Path) -> str:
    """The shortest command that trains this model again: the recipe and seed when the stored
    config is exactly that recipe (apart from where/how it ran), else the stored config file."""
    from mnist_cnn.training.recipes import RECIPES, recipe_config

    recipe = cfg.get("recipe")
    where = {"data_dir", "threads", "device", "seed"}
    if recipe in RECIPES:
        want = recipe_config(recipe).to_dict()
        if all(cfg.get(k) == v for k, v in want.items() if k not in where):
            return f"mnist-cnn train --recipe {recipe} --seed {cfg['seed']}"
    return f"mnist-cnn train --config {run / 'config.json'}"


def carry_calibration(target: Path, calibration: dict[str, Any] | None, data_dir: str | None) -> dict[str, Any] | None:
    """Start ``target``'s sidecar (default.json) afresh with the run's calibration (the one its
    model.json sidecar or metadata gave it), so the old default's provenance and temperature never
    apply to the new weights; a run without one is fitted like ``mnist-cnn calibrate default``
    (when it has a validation split). Returns the calibration the packaged model now uses."""
    from mnist_cnn.artifacts.files import atomic_write_json, sha256_file
    from mnist_cnn.inference.evaluate import calibrate_run
    from mnist_cnn.models.files import model_calibration, sidecar_path, write_calibration

    atomic_write_json(sidecar_path(target), {"file": target.name, "sha256": sha256_file(target)})
    if calibration is not None:
        write_calibration(target, {k: v for k, v in calibration.items() if k != "weights_sha256"})
    else:
        try:
            calibrate_run(target, data_dir)
        except CheckpointError as exc:  # trained without a validation split: stays uncalibrated (T = 1)
            print(f"warning: {target.name} is not calibrated: {exc}", file=sys.stderr)
    return model_calibration(target)


def package(run: Path, dest: Path, data_dir: str | None) -> dict[str, Any]:
    from mnist_cnn.artifacts.files import atomic_write_bytes, atomic_write_json, read_json, sha256_file
    from mnist_cnn.inference.evaluate import evaluate_run
    from mnist_cnn.models.files import load_model

    weights = run / "model.safetensors"
    if not (weights.is_file() and (run / "metrics.json").is_file()):
        raise CheckpointError(f"{run}: not a finished run (needs model.safetensors and metrics.json)")
    _, meta = load_model(weights)  # validates the file (and its model.json) before it goes into the package
    metrics = read_json(run / "metrics.json", "run metrics")
    config = read_json(run / "config.json", "run config")
    target = dest / "default.safetensors"
    atomic_write_bytes(target, weights.read_bytes())
    calibration = carry_calibration(target, meta.get("calibration"), data_dir)
    test = evaluate_run(target, "test", data_dir=data_dir)  # what `mnist-cnn evaluate default` prints
    val = evaluate_run(target, "val", data_dir=data_dir) if meta["config"].get("val_size") else None
    if abs(test["accuracy"] - metrics["test_accuracy"]) > 1e-9:
        raise CheckpointError(
            f"{target}: test accuracy {test['accuracy']} differs from the run's "
            f"{metrics['test_accuracy']}; is --data-dir the data it was trained on?"
        )
    provenance = {
        "file": target.name,
        "sha256": sha256_file(target),
        "size_bytes": target.stat().st_size,
        "arch": meta["arch"],
        "params": meta.get("params"),
        "recipe": meta["config"].get("recipe"),
        "seed": meta["config"].get("seed"),
        "dataset": meta.get("dataset"),
        "command": reproduce_command(meta["config"], run),
        "trained_with": shlex.join(config.get("environment", {}).get("command") or []),
        "data_checksums": meta.get("data_checksums"),
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "val_accuracy": val["accuracy"] if val else None,
        "val_size": meta["config"].get("val_size"),
        "train_seconds": metrics.get("train_seconds"),
        "epochs_run": metrics.get("epochs_run"),
        "environment": {
            k: config.get("environment", {}).get(k) for k in ("mnist_cnn", "torch", "git_commit", "platform")
        },
        "config": meta["config"],
        "source_run": str(run),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(),
        "evaluate": "mnist-cnn evaluate default  # reproduces test_accuracy",
        **({"calibration": calibration} if calibration is not None else {}),
    }
    atomic_write_json(dest / "default.json", provenance)
    return provenance


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--from-run", type=Path, help="Package this finished run instead of training one.")
    ap.add_argument("--data-dir", default=None, help="Folder with the four MNIST IDX files.")
    ap.add_argument("--recipe", default="best")
    ap.add_argument("--seed", type=int, default=0, help="Fixed in advance; do not shop for a lucky seed.")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--run", type=Path, default=Path("runs/default-best"), help="Run folder when training.")
    ap.add_argument("--force", action="store_true", help="Retrain even if --run already holds a run.")
    ap.add_argument("--dest", type=Path, default=PACKAGE_DIR, help="Where to put default.{safetensors,json}.")
    args = ap.parse_args(argv)

    try:
        run = args.from_run or train_default(args)
        p = package(run, args.dest, args.data_dir)
    except MnistCnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.dest / p['file']}: {p['size_bytes'] / 1e6:.2f} MB, {p['params']:,} params, "
        f"test {100 * p['test_accuracy']:.2f}%, val {100 * (p['val_accuracy'] or float('nan')):.2f}%, "
        f"temperature {p.get('calibration', {}).get('temperature', 1.0):.4f}  "
        f"(reproduce: {p['command']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
