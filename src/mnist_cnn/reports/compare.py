"""Compare models over several seeds with statistics: the ``mnist-cnn compare`` report.

Each run is evaluated again on the test set (its per-image probabilities are needed for McNemar's
test; run folders keep only summaries). Runs are grouped into models by recipe/model name and
paired across models by seed: runs with the same seed share the validation split, the training
subset and the data order, so the seed-wise difference removes that shared variation.

Two questions, two tools (see :mod:`mnist_cnn.evaluation.stats`):

* does the gap survive retraining?  t interval of the seed-wise accuracy differences (paired t;
  Welch's interval when the seeds do not match);
* is it more than test-set luck?  McNemar's exact test on one prediction per image and model:
  the majority vote of the model's seeds (with one seed, that run's predictions).

The verdict sentence is generated from those numbers, never written by hand.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.files import atomic_write_json, atomic_write_text, read_json
from mnist_cnn.artifacts.runs import read_history
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ConfigError
from mnist_cnn.evaluation.metrics import evaluate_model, result_from_probs
from mnist_cnn.evaluation.stats import diff_interval, format_p, majority_vote, mcnemar, summarise
from mnist_cnn.models.files import load_model
from mnist_cnn.reports.figures import PALETTE, plot_confusion, pyplot, save_figure
from mnist_cnn.reports.html import Report, fmt, pct

ALPHA = 0.05


@dataclass
class Run:
    """One trained run, re-evaluated on the test set."""

    path: Path
    label: str  # the model it belongs to in the comparison
    seed: int
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    probs: np.ndarray  # [N, C] test-set probabilities
    labels: np.ndarray  # [N]
    loss: float
    per_class_f1: dict[str, float] = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray:
        return self.probs.argmax(1) == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


# --------------------------------------------------------------------------- loading runs


def load_runs(paths: Sequence[Path], data_dir: Any = None) -> list[Run]:
    """Evaluate every run folder on its test set; all must share one data set."""

    runs = []
    for p in paths:
        p = Path(p)
        model, meta = load_model(p)  # CheckpointError naming the folder when it is not a run
        metrics = read_json(p / "metrics.json", "metrics file") if (p / "metrics.json").exists() else {}
        cfg = meta.get("config") or {}
        ds = load_dataset(meta.get("dataset", "mnist"), data_dir or cfg.get("data_dir"))
        res = evaluate_model(model, ds.test_images, ds.test_labels, meta["normalisation"])
        f1 = {c: v["f1"] for c, v in res.per_class(ds.classes).items()}
        label = cfg.get("model") or meta["arch"]["name"]
        runs.append(
            Run(
                p,
                str(label),
                int(cfg.get("seed", 0)),
                {**metrics, "classes": list(ds.classes)},
                read_history(p),
                res.probs,
                res.labels,
                res.loss,
                f1,
            )
        )
    if len({(len(r.labels), r.labels.tobytes()) for r in runs}) > 1:
        raise ConfigError(
            "compare: the runs were evaluated on different test sets (another --dataset?); compare runs of one data set"
        )
    return runs


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs per model name (sorted by seed). When that cannot tell them apart (one model name for
    all, or one model and seed twice, e.g. two learning rates of one architecture), each run
    folder is its own entry, named after the folder."""
    keys = [(r.label, r.seed) for r in runs]
    if len(set(keys)) < len(keys) or (len({r.label for r in runs}) == 1 and len(runs) > 1):
        for r in runs:
            r.label = r.path.name
    if len({r.label for r in runs}) < len(runs) and len({r.path.resolve() for r in runs}) < len(runs):
        raise ConfigError("compare: a run folder is given twice; pass each run once")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    for rs in groups.values():
        rs.sort(key=lambda r: r.seed)
    if len(groups) < 2:
        raise ConfigError("compare needs runs of at least two models (RUN_DIR... or --models A B)")
    return groups


# --------------------------------------------------------------------------- statistics + verdict


def pair_stats(a: list[Run], b: list[Run], alpha: float = ALPHA) -> dict[str, Any]:
    """Difference of test accuracy A - B (CI over seeds) and McNemar on the majority votes."""

    seeds_a, seeds_b = [r.seed for r in a], [r.seed for r in b]
    paired = seeds_a == seeds_b
    diff = diff_interval([r.accuracy for r in a], [r.accuracy for r in b], paired)
    labels = a[0].labels
    vote_a = majority_vote(np.stack([r.probs for r in a])) == labels
    vote_b = majority_vote(np.stack([r.probs for r in b])) == labels
    mc = mcnemar(vote_a, vote_b)
    per_seed = (
        [{"seed": ra.seed, **mcnemar(ra.correct, rb.correct).to_dict()} for ra, rb in zip(a, b)] if paired else []
    )
    return {
        "a": a[0].label,
        "b": b[0].label,
        "paired_seeds": paired,
        "difference": diff.to_dict(),
        "vote_accuracy": {"a": float(vote_a.mean()), "b": float(vote_b.mean())},
        "mcnemar": mc.to_dict(),
        "mcnemar_per_seed": per_seed,
        "alpha": alpha,
        **dict(zip(("verdict", "verdict_kind"), verdict(a[0].label, b[0].label, diff, mc, alpha, len(a), len(b)))),
    }


def _pp(x: float) -> str:
    return f"{100 * x:.2f} pp"


def verdict(name_a: str, name_b: str, diff: Any, mc: Any, alpha: float, n_a: int, n_b: int) -> tuple[str, str]:
    """A plain-language conclusion that follows from the numbers, and its kind (sig/nosig/warn)."""

    sign = 1 if diff.mean >= 0 else -1
    hi, lo = (name_a, name_b) if sign > 0 else (name_b, name_a)
    gap = abs(diff.mean)
    ci = ""
    if not math.isnan(diff.ci_low):
        a, b = sorted((sign * diff.ci_low, sign * diff.ci_high))
        how = f"{min(n_a, n_b)} paired seeds" if diff.method == "paired t" else f"{n_a} and {n_b} seeds, Welch"
        ci = f" (95% CI {_pp(a)} to {_pp(b)} over {how})"
    p = f"McNemar p {'' if mc.p_value < 1e-300 else '= '}{format_p(mc.p_value)}"
    level = f"{100 * alpha:.3g}%"
    significant = mc.p_value < alpha
    one_seed = math.isnan(diff.ci_low)
    if significant and (one_seed or diff.excludes_zero):
        caveat = " (one seed per model: the spread between training seeds is not measured)" if one_seed else ""
        return (
            f"**{hi}** is more accurate than **{lo}** by {_pp(gap)}{ci}; {p}: significant at {level}{caveat}.",
            "warn" if one_seed else "sig",
        )
    if significant:
        return (
            (
                f"**{hi}** scores {_pp(gap)} higher than **{lo}**{ci}. {p} is significant at {level} on this test "
                "set, but the confidence interval over seeds includes 0: the gap does not hold up across training "
                "seeds, so it is not an established difference."
            ),
            "warn",
        )
    if diff.excludes_zero:
        return (
            (
                f"No significant difference on the test set between **{name_a}** and **{name_b}**: {p} ≥ "
                f"{alpha:.3g}. {hi} is ahead by {_pp(gap)}{ci} consistently across seeds, but the gap is too small "
                "for the test set to confirm."
            ),
            "warn",
        )
    return (
        (
            f"No significant difference between **{name_a}** and **{name_b}**: {hi} − {lo} = {_pp(gap)}{ci}; "
            f"{p} ≥ {alpha:.3g}."
        ),
        "nosig",
    )


# --------------------------------------------------------------------------- figures


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def plot_learning_curves(path: Path, groups: dict[str, list[Run]]) -> None:
    """Loss and accuracy per epoch: one colour per model, train solid, validation dashed; the line
    is the mean over seeds and the band spans the lowest to highest seed."""

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (label, runs) in enumerate(groups.items()):
        for split, style in (("train", "-"), ("val", "--")):
            for ax, key in zip(axes, ("loss", "accuracy")):
                col = f"{split}_{key}"
                curves = [[h[col] for h in r.history if col in h] for r in runs]
                n = min(map(len, curves), default=0)
                if n == 0:
                    continue
                y = np.array([c[:n] for c in curves])  # [seeds, epochs]
                ep = np.arange(1, n + 1)
                ax.plot(
                    ep,
                    y.mean(0),
                    style,
                    color=_colour(i),
                    marker="o",
                    ms=3,
                    label=f"{label} {'train' if split == 'train' else 'validation'}",
                )
                if len(runs) > 1:
                    ax.fill_between(ep, y.min(0), y.max(0), color=_colour(i), alpha=0.15, linewidth=0)
    last = max((len(r.history) for runs in groups.values() for r in runs), default=1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlim(0.5, last + 0.5)
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs only
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key} (mean over seeds, band: min–max)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    save_figure(fig, path)


def plot_accuracy_by_seed(path: Path, groups: dict[str, list[Run]]) -> None:
    """Test accuracy of every seed (dots) with the mean and its 95% t interval (bar) per model."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 3, 3.6))
    for i, (label, runs) in enumerate(groups.items()):
        acc = [100 * r.accuracy for r in runs]
        s = summarise(acc)
        ax.scatter([i] * len(acc), acc, color=_colour(i), alpha=0.7, zorder=3, label=label)
        if s.n > 1:
            ax.errorbar(
                i + 0.15, s.mean, yerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]], fmt="D", color=_colour(i), capsize=5
            )
    ax.set_xticks(range(len(groups)), labels=list(groups))
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("test accuracy per seed; diamond: mean with 95% CI")
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def plot_f1(path: Path, groups: dict[str, list[Run]], classes: list[str]) -> None:
    """Per-class F1 (mean over seeds, whiskers: std), models side by side."""

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(classes) * len(groups) / 2 + 4), 3.8))
    w = 0.8 / len(groups)
    lows = []
    for i, (label, runs) in enumerate(groups.items()):
        f = np.array([[r.per_class_f1[c] for c in classes] for r in runs])  # [seeds, classes]
        x = np.arange(len(classes)) + (i - (len(groups) - 1) / 2) * w
        ax.bar(
            x, f.mean(0), w, yerr=f.std(0, ddof=1) if len(runs) > 1 else None, color=_colour(i), label=label, capsize=2
        )
        lows.append(f.mean(0).min())
    ax.set_xticks(range(len(classes)), labels=classes, rotation=30 if max(map(len, classes)) > 2 else 0)
    ax.set_ylim(max(0.0, min(lows) - 0.05), 1.0)  # zoomed: the differences are in the last percent
    ax.set_xlabel("class")
    ax.set_ylabel("F1 (test)")
    ax.set_title("per-class F1, mean over seeds (y axis zoomed)")
    ax.legend(fontsize=8, ncols=len(groups))
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


# --------------------------------------------------------------------------- the report


def _ms(values: list[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:

    s = summarise([scale * v for v in values])
    return f"{s.mean:.{digits}f}{unit}" if s.n < 2 else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}{unit}"


def _ci(values: list[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:

    s = summarise([scale * v for v in values])
    return "–" if s.n < 2 else f"{s.ci_low:.{digits}f} to {s.ci_high:.{digits}f}{unit}"


def build_report(groups: dict[str, list[Run]], out: Path, command: str = "") -> dict[str, Any]:
    """Write compare.html, summary.md, compare.json, runs.csv, pairwise.csv, per_class_f1.csv and
    the figures into ``out``; returns the raw numbers."""

    out.mkdir(parents=True, exist_ok=True)
    classes = next(iter(groups.values()))[0].metrics["classes"]
    n_pairs = len(groups) * (len(groups) - 1) // 2
    alpha = ALPHA / n_pairs  # Bonferroni: every pair is tested at 5% / pairs
    pairs = [pair_stats(groups[a], groups[b], alpha) for a, b in itertools.combinations(groups, 2)]
    models = {label: _model_summary(runs) for label, runs in groups.items()}
    raw = {
        "models": models,
        "pairs": pairs,
        "alpha": alpha,
        "classes": classes,
        "runs": [_run_row(r) for rs in groups.values() for r in rs],
        "command": command,
    }
    plot_accuracy_by_seed(out / "accuracy_by_seed.png", groups)
    plot_learning_curves(out / "learning_curves.png", groups)
    plot_f1(out / "per_class_f1.png", groups, classes)
    for label, runs in groups.items():
        cm = np.sum([_confusion(r, len(classes)) for r in runs], axis=0)
        plot_confusion(
            out / f"confusion_{_slug(label)}.png",
            cm,
            classes,
            f"{label}: confusion matrix, test set, {len(runs)} seed(s) summed",
        )
    atomic_write_json(out / "compare.json", raw)
    atomic_write_text(out / "runs.csv", _csv(raw["runs"]))
    atomic_write_text(out / "pairwise.csv", _csv([_pair_row(p) for p in pairs]))
    f1_rows = [
        {"class": c, **{label: summarise([r.per_class_f1[c] for r in rs]).mean for label, rs in groups.items()}}
        for c in classes
    ]
    atomic_write_text(out / "per_class_f1.csv", _csv(f1_rows))

    names = list(groups)
    rep = Report(
        "Model comparison: " + " vs ".join(names),
        f"{sum(map(len, groups.values()))} runs on the {len(next(iter(groups.values()))[0].labels):,}-image "
        f"test set; seeds {', '.join(sorted({str(r.seed) for rs in groups.values() for r in rs}))}",
    )
    rep.section("Verdict")
    for p in pairs:
        rep.verdict(p["verdict"], p["verdict_kind"])
    rep.text(
        f"How to read it: the confidence interval shows whether the gap survives retraining with other seeds; "
        f"McNemar's exact test on the test images where the models disagree shows whether it is more than "
        f"test-set luck (each model's prediction per image: majority vote of its seeds). Significance level "
        f"{100 * alpha:.3g}%{' (5% / ' + str(n_pairs) + ' pairs, Bonferroni)' if n_pairs > 1 else ''}."
    )
    rep.section("Summary").table(
        ["model", "seeds", "params", "train time", "val accuracy", "test accuracy", "95% CI", "test loss", "95% CI"],
        [
            [
                label,
                m["n"],
                f"{m['params']:,}",
                m["train_time"],
                m["val_accuracy"],
                m["test_accuracy"],
                m["test_accuracy_ci"],
                m["test_loss"],
                m["test_loss_ci"],
            ]
            for label, m in models.items()
        ],
        "mean ± std over seeds; 95% CI: t interval of the mean over seeds (needs 2+ seeds)",
    )
    rep.figure(out / "accuracy_by_seed.png", "test accuracy of each seed, and the mean with its 95% CI")
    rep.section("Statistical tests").table(
        [
            "A vs B",
            "A − B",
            "95% CI",
            "CI method",
            "A right, B wrong",
            "A wrong, B right",
            "McNemar p (exact)",
            "p (χ², corrected)",
        ],
        [
            [
                f"{p['a']} vs {p['b']}",
                _pp(p["difference"]["mean"]),
                _ci_pp(p["difference"]),
                p["difference"]["method"],
                p["mcnemar"]["b"],
                p["mcnemar"]["c"],
                format_p(p["mcnemar"]["p_exact"]),
                format_p(p["mcnemar"]["p_chi2"]),
            ]
            for p in pairs
        ],
        "McNemar counts are of the majority-vote predictions over each model's seeds",
    )
    per_seed = [
        [f"{p['a']} vs {p['b']}", s["seed"], s["b"], s["c"], format_p(s["p_exact"])]
        for p in pairs
        for s in p["mcnemar_per_seed"]
    ]
    if per_seed:
        rep.heading("McNemar per seed pair")
        rep.table(
            ["A vs B", "seed", "A right, B wrong", "A wrong, B right", "p (exact)"],
            per_seed,
            "the same test on each pair of runs trained with the same seed",
        )
    rep.section("Per-class F1").table(
        ["class", *names],
        [[r["class"], *(fmt(r[n]) for n in names)] for r in f1_rows],
        "F1 on the test set, mean over seeds",
    )
    rep.figure(out / "per_class_f1.png", "per-class F1 side by side")
    rep.section("Learning curves").figure(
        out / "learning_curves.png", "train (solid) and validation (dashed) loss and accuracy per epoch"
    )
    rep.section("Confusion matrices")
    for label in names:
        rep.figure(out / f"confusion_{_slug(label)}.png", f"{label}: rows normalised by true class")
    rep.section("Runs").table(
        ["model", "seed", "val accuracy", "test accuracy", "test loss", "train time", "folder"],
        [
            [
                r["model"],
                r["seed"],
                pct(r["val_accuracy"]),
                pct(r["test_accuracy"]),
                fmt(r["test_loss"]),
                f"{r['train_seconds']:.1f} s",
                f"`{r['path']}`",
            ]
            for r in raw["runs"]
        ],
    )
    rep.section("Reproduce")
    if command:
        rep.pre(command, "sh")
    rep.text("Raw numbers: `compare.json` (everything above), `runs.csv`, `pairwise.csv`, `per_class_f1.csv`.")
    rep.write(out, "compare.html")
    return raw


def _ci_pp(d: dict[str, Any]) -> str:
    if d["ci_low"] is None or math.isnan(d["ci_low"]):
        return "–"
    return f"{100 * d['ci_low']:.2f} to {100 * d['ci_high']:.2f} pp"


def _model_summary(runs: list[Run]) -> dict[str, Any]:

    acc, loss = [r.accuracy for r in runs], [r.loss for r in runs]
    vals = [r.metrics["val_accuracy"] for r in runs if r.metrics.get("val_accuracy") is not None]
    return {
        "n": len(runs),
        "seeds": [r.seed for r in runs],
        "params": int(runs[0].metrics.get("params", 0)),
        "test_accuracy_stats": summarise(acc).to_dict(),
        "test_loss_stats": summarise(loss).to_dict(),
        "train_time": _ms([r.metrics.get("train_seconds", math.nan) for r in runs], digits=1, unit=" s"),
        "val_accuracy": _ms(vals, 100, unit="%") if vals else "–",
        "test_accuracy": _ms(acc, 100, unit="%"),
        "test_accuracy_ci": _ci(acc, 100, unit="%"),
        "test_loss": _ms(loss, digits=4),
        "test_loss_ci": _ci(loss, digits=4),
    }


def _run_row(r: Run) -> dict[str, Any]:
    return {
        "model": r.label,
        "seed": r.seed,
        "path": str(r.path),
        "params": r.metrics.get("params"),
        "epochs_run": r.metrics.get("epochs_run"),
        "train_seconds": r.metrics.get("train_seconds", math.nan),
        "val_accuracy": r.metrics.get("val_accuracy"),
        "test_accuracy": r.accuracy,
        "test_loss": r.loss,
    }


def _pair_row(p: dict[str, Any]) -> dict[str, Any]:
    d, m = p["difference"], p["mcnemar"]
    return {
        "a": p["a"],
        "b": p["b"],
        "diff": d["mean"],
        "ci_low": d["ci_low"],
        "ci_high": d["ci_high"],
        "ci_method": d["method"],
        "mcnemar_b": m["b"],
        "mcnemar_c": m["c"],
        "p_exact": m["p_exact"],
        "p_chi2": m["p_chi2"],
        "alpha": p["alpha"],
        "verdict": p["verdict"].replace("**", ""),
    }


def _confusion(r: Run, n: int) -> np.ndarray:

    return result_from_probs(r.probs, r.labels, r.loss).confusion(n)


def _slug(label: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)


def _csv(rows: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()
