"""Accuracy benchmark of the ``best`` recipe, and the ablations that chose it.

Benchmark (the figures in docs/accuracy.md): trains seeds 0..N-1 of the recipe into
RUNS/member-k (exactly ``mnist-cnn train --recipe best --ensemble N --out RUNS``), then prints the
single-model test accuracy mean ± std, min, max, the per-seed results and wall times, the ensemble
of all N members, and the same with test-time augmentation. Finished members are reused, so an
interrupted benchmark continues where it stopped (pass --fresh to start over)::

    python benchmarks/accuracy.py --data-dir ../shared/data/mnist --seeds 5 --runs runs/accuracy \\
        --out benchmarks/results/accuracy-cpu.json

Ablations (``--ablations``): variants of the recipe trained on a subset of the training split and
scored on the VALIDATION split only (the test set is never evaluated in this mode)::

    python benchmarks/accuracy.py --ablations --data-dir ../shared/data/mnist --train-subset 10000 \\
        --epochs 15 --threads 1 --out benchmarks/results/accuracy-ablations.json

Nothing is selected on the test set: the recipe, its epochs and the use of TTA are decided from
the ablations' validation accuracy; every member of the ensemble gets the same weight.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, summary, timed, write_json  # noqa: E402

# name -> TrainConfig overrides on top of the recipe
ABLATIONS: dict[str, dict[str, Any]] = {
    "recipe as is": {},
    "model1 (seed net)": {"model": "model1"},
    "fastnet 4 blocks (fast995 net)": {"model": "fastnet", "model_kwargs": {"width": 16, "blocks": 4}},
    "bncnn width 48": {"model_kwargs": {"width": 48}},
    "bncnn dropout 0.2": {"model_kwargs": {"dropout": 0.2}},
    "augment none": {"augment": "none"},
    "augment light": {"augment": "light"},
    "augment strong (+elastic)": {"augment": "strong"},
    "no EMA": {"ema": 0.0},
    "EMA 0.999 (horizon rescaled)": {"ema": 0.999},
    "no label smoothing": {"label_smoothing": 0.0},
    "cosine schedule": {"schedule": "cosine"},
    "lr 0.001": {"lr": 0.001},
    "AdamW weight decay 0.05": {"optimizer": "adamw", "weight_decay": 0.05},
}


def pct(x: float | None) -> str:
    return "  n/a " if x is None else f"{100 * x:.2f}%"


def scaled_ema(cfg: Any, recipe_cfg: Any, n_train: int) -> float:
    """EMA decay with the same averaging horizon, as a fraction of all steps, as the full recipe
    (a 0.999 EMA over a short ablation run would still be mostly the initial weights)."""
    if not cfg.ema:
        return 0.0
    full = math.ceil((60000 - recipe_cfg.val_size) / recipe_cfg.batch_size) * recipe_cfg.epochs
    run = math.ceil(n_train / cfg.batch_size) * cfg.epochs
    return max(0.9, 1 - (1 - cfg.ema) * full / run) if run < full else cfg.ema


def ablations(args: argparse.Namespace, ds: Any) -> dict[str, Any]:
    from mnist_cnn.data.datasets import train_val_split
    from mnist_cnn.evaluation.metrics import evaluate_model
    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import recipe_config

    base = recipe_config(args.recipe)
    names = args.only.split(",") if args.only else list(ABLATIONS)
    rows = []
    for name in names:
        accs, tta_accs, secs = [], [], []
        for seed in range(args.seeds):
            cfg = base.merged(
                {
                    **ABLATIONS[name],
                    "seed": seed,
                    "data_dir": args.data_dir,
                    "threads": args.threads,
                    "epochs": args.epochs,
                    "train_subset": args.train_subset,
                }
            )
            n_train = min(args.train_subset or 10**9, 60000 - cfg.val_size)
            cfg = cfg.merged({"ema": scaled_ema(cfg, base, n_train)})
            res = train(cfg, None, quiet=True, data=ds, evaluate_test=False)
            _, va = train_val_split(ds.train_labels, cfg.val_size, cfg.seed)
            tta = evaluate_model(
                res.model, ds.train_images[va], ds.train_labels[va], res.meta["normalisation"], tta=True
            )
            accs.append(res.metrics["val_accuracy"])
            tta_accs.append(tta.accuracy)
            secs.append(res.metrics["train_seconds"])
            print(
                f"  {name} seed {seed}: val {pct(accs[-1])}  val+TTA {pct(tta_accs[-1])}  "
                f"train {secs[-1]:.0f}s  (ema {cfg.ema:g})",
                flush=True,
            )
        rows.append(
            {
                "variant": name,
                "overrides": ABLATIONS[name],
                "val_accuracy": summary(accs),
                "val_accuracy_tta": summary(tta_accs),
                "train_seconds": summary(secs),
            }
        )
    print("\n| variant | val accuracy | val + TTA | train s |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {pct(r['val_accuracy']['mean'])} | {pct(r['val_accuracy_tta']['mean'])} | "
            f"{r['train_seconds']['mean']:.0f} |"
        )
    return {
        "mode": "ablations",
        "recipe": args.recipe,
        "base": base.to_dict(),
        "epochs": args.epochs,
        "train_subset": args.train_subset,
        "seeds": args.seeds,
        "rows": rows,
    }


def benchmark(args: argparse.Namespace, ds: Any) -> dict[str, Any]:
    from mnist_cnn.artifacts.files import read_json
    from mnist_cnn.inference.ensemble import evaluate_members, load_member
    from mnist_cnn.inference.evaluate import evaluate_run
    from mnist_cnn.training.ensemble import member_dir, train_members
    from mnist_cnn.training.recipes import recipe_config

    cfg = recipe_config(args.recipe).merged(
        {"data_dir": args.data_dir, "threads": args.threads, "epochs": args.epochs, "train_subset": args.train_subset}
    )
    if args.train_subset:
        print(f"note: --train-subset {args.train_subset}: a smoke test, not the benchmark", flush=True)
    runs = Path(args.runs)
    ens, wall_total = timed(
        lambda: train_members(cfg, runs, args.seeds, resume=not args.fresh, force=args.fresh, quiet=args.quiet, data=ds)
    )
    seeds = []
    for k in range(args.seeds):
        run = member_dir(runs, k)
        m = read_json(run / "metrics.json", "run metrics")
        row = {
            "seed": m["seed"],
            "run": str(run),
            "test_accuracy": m["test_accuracy"],
            "val_accuracy": m.get("val_accuracy"),
            "train_seconds": m["train_seconds"],
            "wall_seconds": ens["member_wall_seconds"][k],
            "val_accuracy_tta": evaluate_run(run, "val", tta=True, data_dir=args.data_dir)["accuracy"],
            "test_accuracy_tta": evaluate_run(run, "test", tta=True, data_dir=args.data_dir)["accuracy"],
        }
        seeds.append(row)
        wall = "reused" if row["wall_seconds"] is None else f"{row['wall_seconds']:.0f}s"
        print(
            f"seed {row['seed']}: test {pct(row['test_accuracy'])}  val {pct(row['val_accuracy'])}  "
            f"test+TTA {pct(row['test_accuracy_tta'])}  val+TTA {pct(row['val_accuracy_tta'])}  "
            f"train {row['train_seconds']:.0f}s  wall {wall}",
            flush=True,
        )
    members = [load_member(member_dir(runs, k)) for k in range(args.seeds)]
    ens_tta = evaluate_members(members, "test", tta=True, data_dir=args.data_dir)[0]
    out = {
        "mode": "benchmark",
        "recipe": args.recipe,
        "config": cfg.to_dict(),
        "runs": str(runs),
        "seeds": seeds,
        "test_accuracy": summary([s["test_accuracy"] for s in seeds]),
        "test_accuracy_tta": summary([s["test_accuracy_tta"] for s in seeds]),
        "val_accuracy": summary([s["val_accuracy"] for s in seeds]),
        "val_accuracy_tta": summary([s["val_accuracy_tta"] for s in seeds]),
        "train_seconds": summary([s["train_seconds"] for s in seeds]),
        "ensemble": {
            "members": args.seeds,
            "test_accuracy": ens["test_accuracy"],
            "test_loss": ens["test_loss"],
            "test_accuracy_tta": ens_tta["accuracy"],
        },
        "wall_seconds_this_call": wall_total,
    }
    t, tt, ts = out["test_accuracy"], out["test_accuracy_tta"], out["train_seconds"]
    print(f"\n{args.recipe}, {args.seeds} seeds, {cfg.epochs} epochs ({cfg.model}):")
    print(
        f"  single model test  {100 * t['mean']:.2f} ± {100 * t['std']:.2f}%  (min {pct(t['min'])}, "
        f"max {pct(t['max'])})"
    )
    print(
        f"  single model +TTA  {100 * tt['mean']:.2f} ± {100 * tt['std']:.2f}%  (min {pct(tt['min'])}, "
        f"max {pct(tt['max'])})"
    )
    print(f"  ensemble of {args.seeds}     {pct(ens['test_accuracy'])}  (+TTA {pct(ens_tta['accuracy'])})")
    median = statistics.median([s["train_seconds"] for s in seeds])
    print(
        f"  train time per model {ts['mean'] / 60:.1f} min (median {median / 60:.1f}, "
        f"max {ts['max'] / 60:.1f}); this call {wall_total / 60:.1f} min wall"
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="Folder with the four MNIST IDX files.")
    ap.add_argument("--recipe", default="best")
    ap.add_argument("--seeds", type=int, default=None, help="Seeds (default: 5 for the benchmark, 1 for ablations).")
    ap.add_argument("--epochs", type=int, default=None, help="Override the recipe's epochs.")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores).")
    ap.add_argument("--runs", default="runs/accuracy", help="Folder for the member runs and the ensemble.")
    ap.add_argument("--fresh", action="store_true", help="Retrain every member even if already finished.")
    ap.add_argument("--quiet", action="store_true", help="No per-epoch lines.")
    ap.add_argument("--ablations", action="store_true", help="Run the ablation table (validation split only).")
    ap.add_argument(
        "--train-subset",
        type=int,
        default=None,
        help="First N training images (ablations; a smoke test of the benchmark).",
    )
    ap.add_argument("--only", default=None, help="Ablations: comma-separated variant names.")
    ap.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = ap.parse_args()
    args.seeds = args.seeds or (1 if args.ablations else 5)
    if args.only and (bad := [n for n in args.only.split(",") if n not in ABLATIONS]):
        ap.error(f"unknown variant(s) {bad}; valid: {list(ABLATIONS)}")

    import torch

    from mnist_cnn.data.datasets import load_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset("mnist", args.data_dir)
    result = ablations(args, ds) if args.ablations else benchmark(args, ds)
    write_json(args.out, {**result, "machine": machine(), "command": sys.argv, "data_checksums": ds.checksums})


if __name__ == "__main__":
    main()
