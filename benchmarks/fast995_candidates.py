"""How many epochs ``fast995`` needs, with and without test-time augmentation, on the validation split.

Selection only: each candidate (the ``fast995`` recipe with fewer epochs) trains on one thread with
the validation split fixed (split seed 0), is scored on those 5,000 images as a plain forward pass
and with TTA (the image and four 1-pixel shifts), and prints one JSON line per run. The test set is
never read. The recipe was chosen on seeds 0-2 and confirmed on further seeds (docs/benchmarks.md).

    python benchmarks/fast995_candidates.py --data-dir ../shared/data/mnist --epochs 4,3,2 --seeds 0,1,2 \
        --out benchmarks/results/fast995-candidates.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, summary, timed, write_json  # noqa: E402

VAL_SIZE, SPLIT_SEED = 5000, 0  # every candidate holds out (and is scored on) this one split


def score(epochs: int, seed: int, data: Any, vx: Any, vy: Any, data_dir: str | None) -> dict[str, Any]:
    from mnist_cnn.evaluation.metrics import evaluate_model
    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import recipe_config

    cfg = dataclasses.replace(
        recipe_config("fast995"),
        epochs=epochs,
        tta=False,
        seed=seed,
        val_size=VAL_SIZE,
        split_seed=SPLIT_SEED,
        threads=1,
        data_dir=data_dir,
    )
    res = train(cfg, None, quiet=True, data=data, evaluate_test=False)
    row: dict[str, Any] = {"epochs": epochs, "seed": seed, "train_seconds": res.metrics["train_seconds"]}
    for key, tta in (("val", False), ("val_tta", True)):
        result, row[f"{key}_seconds"] = timed(evaluate_model, res.model, vx, vy, res.meta["normalisation"], tta=tta)
        row[key] = result.accuracy
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", default="4,3,2", help="comma-separated epoch counts to try")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    ap.add_argument("--out", default=None, help="write every run and the summary as JSON here")
    args = ap.parse_args(argv)

    from mnist_cnn.data.datasets import load_dataset

    data = load_dataset("mnist", args.data_dir)
    vx, vy = data.validation(VAL_SIZE, SPLIT_SEED)
    rows = []
    for epochs in (int(e) for e in args.epochs.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(score(epochs, seed, data, vx, vy, args.data_dir))
            print(json.dumps(rows[-1]), flush=True)
    table = {}
    for epochs in sorted({r["epochs"] for r in rows}):
        mine = [r for r in rows if r["epochs"] == epochs]
        s = table[str(epochs)] = {k: summary([r[k] for r in mine]) for k in ("val", "val_tta", "train_seconds")}
        print(f"{epochs} epochs ({len(mine)} seeds): val {100 * s['val']['mean']:.2f} ± {100 * s['val']['std']:.2f}%, "
              f"with TTA {100 * s['val_tta']['mean']:.2f} ± {100 * s['val_tta']['std']:.2f}%, "
              f"train {s['train_seconds']['median']:.1f} s")  # fmt: skip
    write_json(args.out, {"machine": machine(), "runs": rows, "summary": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
