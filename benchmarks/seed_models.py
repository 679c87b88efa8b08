"""Train the seed's Model 1 and Model 2 with the seed's recipe (Adam 1e-3, batch 32, 20 epochs) on
the full training data, CPU, and print test accuracy, test loss and wall time.

    python benchmarks/seed_models.py --data-dir ../shared/data/mnist [--out benchmarks/results/seed-models-cpu.json]

Like the seed's Keras code it trains on all 60,000 images (``--val-size 0``: nothing is selected,
so no validation split is needed) so the step count matches (1,875 steps/epoch). Reference on this
2-core machine: Keras 571.6 s / 98.76% (Model 1), 500.4 s / 98.80% (Model 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, timed, write_json  # noqa: E402

KERAS = {"model1": (571.6, 0.9876), "model2": (500.4, 0.9880)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", nargs="+", default=["model1", "model2"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--val-size", type=int, default=0)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--init",
        default="keras",
        choices=["torch", "keras"],
        help="weight initialisation: Keras's (glorot-uniform, zero bias) as the seed had (default), or torch's",
    )
    ap.add_argument("--out", default=None, help="write results as JSON here")
    args = ap.parse_args()

    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import recipe_config

    rows = []
    for name in args.models:
        cfg = recipe_config("seed").merged(
            {
                "model": name,
                "epochs": args.epochs,
                "val_size": args.val_size,
                "data_dir": args.data_dir,
                "seed": args.seed,
                "precision": args.precision,
                "model_kwargs": {"init": args.init},
            }
        )
        res, wall = timed(train, cfg, None, quiet=True)
        m = res.metrics
        rows.append(
            {
                "model": name,
                "test_accuracy": m["test_accuracy"],
                "test_loss": m["test_loss"],
                "wall_seconds": wall,
                "train_seconds": m["train_seconds"],
                "seconds_per_epoch": m["train_seconds"] / m["epochs_run"],
                "epochs": m["epochs_run"],
                "keras_seconds": KERAS.get(name, (None,))[0],
                "keras_accuracy": KERAS.get(name, (0, None))[1],
            }
        )
        r = rows[-1]
        print(
            f"{name}: test accuracy {100 * r['test_accuracy']:.2f}%  test loss {r['test_loss']:.4f}  "
            f"wall {wall:.1f}s (train {r['train_seconds']:.1f}s, {r['seconds_per_epoch']:.1f}s/epoch)"
            + (f"  vs Keras {r['keras_seconds']}s / {100 * r['keras_accuracy']:.2f}%" if r["keras_seconds"] else ""),
            flush=True,
        )
    write_json(
        args.out,
        {"machine": machine(), "precision": args.precision, "init": args.init, "seed": args.seed, "results": rows},
    )


if __name__ == "__main__":
    main()
