"""The accuracy variant table (Accuracy issue): every variant of the ``best`` recipe tried, each over
three or more seeds, scored on the VALIDATION split only (no variant run evaluates the test set).

Every run holds out the same 5,000 images (``split_seed`` 0) while its training seed varies, so
the teachers of the distillation variants never saw a student's validation images and the members
of a heterogeneous ensemble share one validation split. Runs live in RUNS/<variant>/seed<k>;
finished runs are reused and an interrupted one resumes from its checkpoint, so the table can be
built over several sessions (``--only`` picks variants, in the order given)::

    python benchmarks/variants.py --data-dir ../shared/data/mnist --runs runs/variants \\
        --only best,hvcnet,kd-ensemble,self-kd,long-ema,long-strong --threads 1 --worker 0/2
    # ... and --worker 1/2 beside it
    python benchmarks/variants.py --runs runs/variants --report     # the table from what is finished

Ensembles (mean of the members' probabilities, equal weights) are scored on the same split from
finished runs; each ensemble row lists which runs it used.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, summary, write_json  # noqa: E402

SPLIT_SEED = 0


@dataclass(frozen=True)
class Variant:
    what: str  # one line for the table
    overrides: dict[str, Any]
    seeds: tuple[int, ...] = (0, 1, 2)
    # seed -> teacher spec (run folders, comma-separated), given the runs folder
    teacher: Callable[[Path, int], str] | None = field(default=None, compare=False)
    needs: tuple[str, ...] = ()  # variants whose runs must be finished first


def _run(runs: Path, variant: str, seed: int) -> Path:
    return runs / variant / f"seed{seed}"


VARIANTS: dict[str, Variant] = {
    "best": Variant(
        "the `best` recipe as it is: bncnn, 40 epochs, medium augmentation, label smoothing 0.1",
        {},
        seeds=(0, 1, 2, 3, 4),
    ),
    "kd-ensemble": Variant(
        "distilled from the 5-member `best` ensemble (alpha 0.5, T 4), same net and schedule",
        {"distill_alpha": 0.5, "distill_temperature": 4.0},
        seeds=(10, 11, 12),
        teacher=lambda runs, seed: ",".join(str(_run(runs, "best", k)) for k in range(5)),
        needs=("best",),
    ),
    "self-kd": Variant(
        "self-distillation: one `best` model (seed k-20) teaches a fresh one (alpha 0.5, T 4)",
        {"distill_alpha": 0.5, "distill_temperature": 4.0},
        seeds=(20, 21, 22),
        teacher=lambda runs, seed: str(_run(runs, "best", seed - 20)),
        needs=("best",),
    ),
    "hvcnet": Variant(
        "Byerly-style net: no pooling, BN, homogeneous vector capsules (width 8, 569k params), 20 epochs",
        {"model": "hvcnet", "model_kwargs": {"width": 8}, "epochs": 20},
    ),
    "long-ema": Variant(
        "long schedule: 100 epochs, EMA of weights 0.999 over the tail, otherwise `best`",
        {"epochs": 100, "ema": 0.999},
    ),
    # the long schedule with its augmentation re-tuned: 2.5x the epochs can afford a stronger
    # distortion (elastic as well) before the net underfits; long-ema's validation curve was flat
    "long-strong": Variant(
        "long schedule, augmentation re-tuned for it: 100 epochs, EMA 0.999, `strong` (elastic) augmentation",
        {"epochs": 100, "ema": 0.999, "augment": "strong"},
    ),
}

# name -> (what, [(variant, seed), ...]); each ensemble is scored once on the shared split
ENSEMBLES: dict[str, tuple[str, list[tuple[str, int]]]] = {
    "best x5": ("homogeneous: the five `best` seeds", [("best", k) for k in range(5)]),
    "best x3": ("homogeneous: `best` seeds 0-2", [("best", k) for k in range(3)]),
    "hvcnet x3": ("homogeneous: the three hvcnet seeds", [("hvcnet", k) for k in range(3)]),
    "best x3 + hvcnet x3": (
        "heterogeneous: two architectures, three seeds each",
        [("best", k) for k in range(3)] + [("hvcnet", k) for k in range(3)],
    ),
    "best x5 + hvcnet x3": (
        "heterogeneous: all finished bncnn and hvcnet members",
        [("best", k) for k in range(5)] + [("hvcnet", k) for k in range(3)],
    ),
    "kd-ensemble x3": ("homogeneous: the three distilled students", [("kd-ensemble", k) for k in (10, 11, 12)]),
}


def config_for(name: str, seed: int, runs: Path, args: argparse.Namespace) -> Any:
    from mnist_cnn.training.recipes import recipe_config

    v = VARIANTS[name]
    extra: dict[str, Any] = {"seed": seed, "split_seed": SPLIT_SEED, "data_dir": args.data_dir}
    for key in ("threads", "epochs", "train_subset"):  # the last two: smoke runs only
        if getattr(args, key):
            extra[key] = getattr(args, key)
    if v.teacher is not None:
        extra["teacher"] = v.teacher(runs, seed)
    return recipe_config("best").merged({**v.overrides, **extra}).validate()


def train_one(name: str, seed: int, runs: Path, args: argparse.Namespace) -> None:
    from mnist_cnn.artifacts.runs import has_checkpoint, is_finished
    from mnist_cnn.training.engine import train

    out = _run(runs, name, seed)
    if is_finished(out):
        return
    cfg = config_for(name, seed, runs, args)
    resume = has_checkpoint(out)
    print(f"== {name} seed {seed}: {'resuming' if resume else 'training'} -> {out}", flush=True)
    # evaluate_test=False: a variant is judged on validation only; the test set stays unseen here
    train(cfg, out, resume=resume, force=out.exists() and not resume, quiet=args.quiet, evaluate_test=False)


def wait_for(needs: tuple[str, ...], runs: Path, poll: float = 30.0) -> None:
    """Block until every run of the variants in ``needs`` has finished (another worker trains them)."""
    from mnist_cnn.artifacts.runs import is_finished

    waiting = [_run(runs, v, s) for v in needs for s in VARIANTS[v].seeds]
    while not all(is_finished(f) for f in waiting):
        time.sleep(poll)


def run_row(name: str, runs: Path) -> dict[str, Any] | None:
    from mnist_cnn.artifacts.files import read_json
    from mnist_cnn.artifacts.runs import METRICS, is_finished

    v = VARIANTS[name]
    done = [s for s in v.seeds if is_finished(_run(runs, name, s))]
    if not done:
        return None
    metrics = [read_json(_run(runs, name, s) / METRICS, "metrics") for s in done]
    val = [m["val_accuracy"] for m in metrics]
    minutes = [_minutes(_run(runs, name, s)) for s in done]
    return {
        "variant": name,
        "what": v.what,
        "seeds": done,
        "seeds_planned": list(v.seeds),
        "params": metrics[0]["params"],
        "val_accuracy": summary(val),
        "val_per_seed": dict(zip(map(str, done), val, strict=True)),
        "train_minutes": summary(minutes),
        "precision": sorted({m.get("precision_used", "?") for m in metrics}),
    }


class ValScores:
    """Each finished run's validation probabilities on the shared split, computed once (an ensemble
    table reuses a run in several rows)."""

    def __init__(self, data_dir: str | None):
        from mnist_cnn.data.datasets import load_dataset

        self.x, self.y = load_dataset("mnist", data_dir).validation(5000, SPLIT_SEED)
        self.probs: dict[Path, Any] = {}

    def __call__(self, folder: Path) -> Any:
        from mnist_cnn.artifacts.runs import SplitSpec
        from mnist_cnn.inference.ensemble import ensemble_probs, load_member, shared_split

        if folder not in self.probs:
            member = load_member(folder)
            split = shared_split([member])
            if split != SplitSpec(5000, SPLIT_SEED):  # not an assert: `python -O` would skip it
                raise SystemExit(
                    f"error: {folder} holds out another validation split ({split}); the table compares runs on "
                    f"--split-seed {SPLIT_SEED} only: retrain it with the command in docs/accuracy.md"
                )
            self.probs[folder] = ensemble_probs([member], self.x)[0]
        return self.probs[folder]


def ensemble_row(name: str, runs: Path, scores: ValScores) -> dict[str, Any] | None:
    import numpy as np

    from mnist_cnn.artifacts.runs import is_finished

    what, parts = ENSEMBLES[name]
    folders = [_run(runs, v, s) for v, s in parts]
    if not all(is_finished(f) for f in folders):
        return None
    each = [scores(f) for f in folders]
    probs = np.mean(each, axis=0)  # equal weights: the mean of the members' probabilities
    return {
        "ensemble": name,
        "what": what,
        "members": [str(f) for f in folders],
        "val_accuracy": float((probs.argmax(1) == scores.y).mean()),
        "member_val_mean": float(np.mean([(p.argmax(1) == scores.y).mean() for p in each])),
        "train_minutes_total": sum(_minutes(f) for f in folders),
    }


def _minutes(folder: Path) -> float:
    """Training minutes of a run as the median epoch's seconds times its epochs: robust to an epoch
    that a pause (another job's quiet window, SIGSTOP) or a resume stretched."""
    from mnist_cnn.artifacts.runs import read_history

    seconds = [row["seconds"] for row in read_history(folder)]
    return statistics.median(seconds) * len(seconds) / 60


def print_table(rows: list[dict[str, Any]], ens: list[dict[str, Any]]) -> None:
    print("\n| variant | seeds | params | val accuracy (mean ± std) | min | max | train min / model |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        a, t = r["val_accuracy"], r["train_minutes"]
        print(
            f"| {r['variant']} | {a['n']} | {r['params']:,} | {100 * a['mean']:.2f} ± {100 * a['std']:.2f}% "
            f"| {100 * a['min']:.2f}% | {100 * a['max']:.2f}% | {t['median']:.1f} |"
        )
    if ens:
        print("\n| ensemble | members | val accuracy | members' mean | train min, all members |")
        print("|---|---:|---:|---:|---:|")
        for e in ens:
            print(
                f"| {e['ensemble']} | {len(e['members'])} | {100 * e['val_accuracy']:.2f}% "
                f"| {100 * e['member_val_mean']:.2f}% | {e['train_minutes_total']:.0f} |"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs", default="runs/variants")
    ap.add_argument("--only", default=",".join(VARIANTS), help="variants to train, comma-separated, in order")
    ap.add_argument("--report", action="store_true", help="train nothing: the table from finished runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--worker",
        default="0/1",
        help="I/N: train every N-th run from the I-th (run N workers of --threads 1 side by side: on this "
        "2-core box two 1-thread runs train 1.4x the images per second of one 2-thread run)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="smoke runs only: override every variant's epochs")
    ap.add_argument("--train-subset", type=int, default=None, help="smoke runs only: train on N images")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default=None, help="write the table as JSON here")
    args = ap.parse_args(argv)
    runs = Path(args.runs)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not args.report:
        i, n = (int(p) for p in args.worker.split("/"))
        todo = [(name, seed) for name in names for seed in VARIANTS[name].seeds]
        for name, seed in todo[i::n]:
            wait_for(VARIANTS[name].needs, runs)
            train_one(name, seed, runs, args)
    rows = [r for r in (run_row(n, runs) for n in VARIANTS) if r is not None]
    scores = ValScores(args.data_dir)
    ens = [e for e in (ensemble_row(n, runs, scores) for n in ENSEMBLES) if e is not None]
    print_table(rows, ens)
    write_json(args.out, {"machine": machine(), "split_seed": SPLIT_SEED, "variants": rows, "ensembles": ens})
    return 0


if __name__ == "__main__":
    sys.exit(main())
