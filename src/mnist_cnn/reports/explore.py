"""Explore a data set: the ``mnist-cnn explore`` report (explore.html, summary.md, PNGs, CSV/JSON).

Class balance of train / validation / test (the validation split is the one training holds out
with the same ``--val-size`` and ``--seed``), sample digits and the mean digit per class, the
pixel-intensity histogram, and how alike the training and test sets are: a chi-squared test of the
class proportions and Kolmogorov–Smirnov tests of per-image ink, plus the train − test mean image.
Images stay uint8 until reduced (60,000 x 784 as float64 would take 376 MB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.files import atomic_write_json, atomic_write_text
from mnist_cnn.data.datasets import load_dataset, train_val_split
from mnist_cnn.reports.explain import plot_digit_grid
from mnist_cnn.reports.figures import PALETTE, pyplot, save_figure
from mnist_cnn.reports.html import Report


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels, minlength=n_classes)


def ink(images: np.ndarray) -> np.ndarray:
    """Mean intensity per image in [0, 1] (how much ink a digit uses): ``[N, 28, 28]`` -> ``[N]``."""
    return images.reshape(len(images), -1).sum(1, dtype=np.int64) / (255.0 * images[0].size)


def lit_fraction(images: np.ndarray) -> np.ndarray:
    """Fraction of pixels above half intensity per image (stroke area): ``[N]``."""
    return (images.reshape(len(images), -1) > 127).mean(1)


def pixel_stats(images: np.ndarray) -> dict[str, float]:
    """Mean and std of intensities scaled to [0, 1], and the background share, from the 256-bin
    histogram (exact, and no float copy of the images)."""
    h = np.bincount(images.ravel(), minlength=256) / images.size  # [256]
    v = np.arange(256) / 255.0
    mean = float(h @ v)
    var = float(h @ (v - mean) ** 2)
    return {"mean": mean, "std": float(np.sqrt(max(var, 0.0))), "zero_fraction": float(h[0])}


def mean_images(images: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean digit per class, ``[C, 28, 28]`` float32 in [0, 255]."""
    return np.stack(
        [
            images[labels == k].mean(0, dtype=np.float32)
            if (labels == k).any()
            else np.zeros(images.shape[1:], np.float32)
            for k in range(n_classes)
        ]
    )


def compare_splits(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, n_classes: int
) -> dict[str, Any]:
    """Train vs test: chi-squared test of class proportions, KS tests of ink and stroke area."""
    from scipy.stats import chi2_contingency, ks_2samp

    table = np.stack([class_counts(train_y, n_classes), class_counts(test_y, n_classes)])
    table = table[:, table.sum(0) > 0]  # a class absent from both splits has no expected count
    chi2, p, dof, _ = chi2_contingency(table)
    out: dict[str, Any] = {"class_proportions": {"chi2": float(chi2), "dof": int(dof), "p": float(p)}}
    for name, fn in (("ink", ink), ("lit_fraction", lit_fraction)):
        a, b = fn(train_x), fn(test_x)
        ks = ks_2samp(a, b)
        out[name] = {
            "train_mean": float(a.mean()),
            "test_mean": float(b.mean()),
            "ks_d": float(ks.statistic),
            "p": float(ks.pvalue),
        }
    return out


def _bars(path: Path, counts: dict[str, np.ndarray], classes: list[str]) -> None:

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    w = 0.8 / len(counts)
    x = np.arange(len(classes))
    for i, (split, c) in enumerate(counts.items()):
        off = (i - (len(counts) - 1) / 2) * w
        a1.bar(x + off, c, w, color=PALETTE[i], label=f"{split} ({c.sum():,})")
        a2.bar(x + off, 100 * c / max(c.sum(), 1), w, color=PALETTE[i], label=split)
    for ax, ylab, title in ((a1, "images", "class counts"), (a2, "share of split (%)", "class proportions")):
        ax.set_xticks(x, labels=classes, rotation=30 if max(map(len, classes)) > 2 else 0)
        ax.set_xlabel("class")
        ax.set_ylabel(ylab)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    a1.legend(fontsize=8)
    save_figure(fig, path)


def _pixel_hist(path: Path, train_x: np.ndarray, test_x: np.ndarray) -> None:

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (name, x) in enumerate((("train", train_x), ("test", test_x))):
        h = np.bincount(x.ravel(), minlength=256) / x.size  # [256] share of pixels per intensity
        ax.step(np.arange(256), h, where="mid", color=PALETTE[i], label=name)
    ax.set_yscale("log")
    ax.set_xlabel("pixel intensity (0 = background, 255 = full ink)")
    ax.set_ylabel("share of pixels (log scale)")
    ax.set_title("pixel-intensity histogram")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def _split_figure(path: Path, train_x: np.ndarray, test_x: np.ndarray) -> None:
    """Per-image ink distributions (train vs test) and the train − test mean-image difference."""

    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
    bins = np.linspace(0, 0.5, 61)
    for i, (name, x) in enumerate((("train", train_x), ("test", test_x))):
        a1.hist(ink(x), bins=bins, density=True, histtype="step", linewidth=1.6, color=PALETTE[i], label=name)
    a1.set_xlabel("mean intensity of the image (ink)")
    a1.set_ylabel("density")
    a1.set_title("ink per image")
    a1.legend()
    diff = train_x.mean(0, dtype=np.float64) - test_x.mean(0, dtype=np.float64)
    lim = float(np.abs(diff).max()) or 1.0
    im = a2.imshow(diff, cmap="RdBu_r", vmin=-lim, vmax=lim)
    a2.set_title("mean image: train − test")
    a2.set_xticks([])
    a2.set_yticks([])
    fig.colorbar(im, ax=a2, fraction=0.046, label="intensity difference (0–255)")
    save_figure(fig, path)


def explore(
    dataset: str, out: Path, *, data_dir: Any = None, val_size: int = 5000, seed: int = 0, per_class: int = 10
) -> dict[str, Any]:
    """Write the explore report for ``dataset`` into ``out``; returns the raw numbers."""

    ds = load_dataset(dataset, data_dir)
    classes = list(ds.classes)
    n = len(classes)
    tr, va = train_val_split(ds.train_labels, val_size, seed)
    splits = {
        "train": (ds.train_images[tr], ds.train_labels[tr]),
        "validation": (ds.train_images[va], ds.train_labels[va]),
        "test": (ds.test_images, ds.test_labels),
    }
    counts = {k: class_counts(y, n) for k, (_, y) in splits.items() if len(y)}
    out.mkdir(parents=True, exist_ok=True)
    _bars(out / "class_counts.png", counts, classes)
    rng = np.random.default_rng(seed)
    samples, titles = [], []
    for k in range(n):
        pool = np.flatnonzero(ds.train_labels == k)
        pick: np.ndarray = rng.choice(pool, min(per_class, len(pool)), replace=False) if len(pool) else pool
        samples += [ds.train_images[i] for i in pick]
        titles += [classes[k] if j == 0 else "" for j in range(len(pick))]
    plot_digit_grid(
        out / "samples.png", np.array(samples), titles, f"{per_class} random training images per class", ncols=per_class
    )
    means = mean_images(ds.train_images, ds.train_labels, n)
    plot_digit_grid(out / "mean_images.png", means, classes, "mean training image per class", ncols=5)
    _pixel_hist(out / "pixel_histogram.png", ds.train_images, ds.test_images)
    _split_figure(out / "train_vs_test.png", ds.train_images, ds.test_images)
    shift = compare_splits(ds.train_images, ds.train_labels, ds.test_images, ds.test_labels, n)
    raw = {
        "dataset": dataset,
        "source": ds.source,
        "classes": classes,
        "val_size": len(va),
        "seed": seed,
        "counts": {k: v.tolist() for k, v in counts.items()},
        "pixels": {k: pixel_stats(x) for k, (x, _) in splits.items() if len(x)},
        "train_vs_test": shift,
    }
    atomic_write_json(out / "explore.json", raw)
    atomic_write_text(
        out / "class_counts.csv",
        "class,"
        + ",".join(counts)
        + "\n"
        + "".join(f"{c}," + ",".join(str(int(v[i])) for v in counts.values()) + "\n" for i, c in enumerate(classes)),
    )
    _report(raw, counts, out)
    return raw


def _report(raw: dict[str, Any], counts: dict[str, np.ndarray], out: Path) -> None:
    classes = raw["classes"]
    rep = Report(
        f"Exploring {raw['dataset']}",
        f"{sum(int(v.sum()) for v in counts.values()):,} images from {raw['source']}; validation split: "
        f"{raw['val_size']:,} training images held out with seed {raw['seed']}, as `mnist-cnn train` does",
    )
    rep.section("Class counts")
    rows = [
        [c, *(f"{int(v[i]):,} ({100 * v[i] / max(v.sum(), 1):.1f}%)" for v in counts.values())]
        for i, c in enumerate(classes)
    ]
    rows.append(["all", *(f"{int(v.sum()):,}" for v in counts.values())])
    rep.table(["class", *counts], rows, "images per class (share of the split)")
    rep.figure(out / "class_counts.png", "class counts and proportions per split")
    rep.section("Samples").figure(out / "samples.png", "random training images, one row per class")
    rep.figure(out / "mean_images.png", "the mean training image of each class")
    rep.section("Pixel intensities")
    px = raw["pixels"]
    rep.table(
        ["split", "mean", "std", "background pixels (0)"],
        [[k, f"{v['mean']:.4f}", f"{v['std']:.4f}", f"{100 * v['zero_fraction']:.1f}%"] for k, v in px.items()],
        "intensities scaled to [0, 1]; training normalises with the training split's mean and std",
    )
    rep.figure(out / "pixel_histogram.png", "share of pixels at each intensity, train vs test (log scale)")
    rep.section("Train vs test")
    s = raw["train_vs_test"]
    cp = s["class_proportions"]
    rep.text(
        f"Class proportions: χ² = {cp['chi2']:.2f} with {cp['dof']} degrees of freedom, p = {cp['p']:.3g} "
        f"({'the splits differ in class balance' if cp['p'] < 0.05 else 'no evidence that the class balance differs'}"
        " at 5%)."
    )
    rep.table(
        ["per-image feature", "train mean", "test mean", "KS distance D", "KS p"],
        [
            [name, f"{v['train_mean']:.4f}", f"{v['test_mean']:.4f}", f"{v['ks_d']:.4f}", f"{v['p']:.3g}"]
            for name, v in ((n, s[n]) for n in ("ink", "lit_fraction"))
        ],
        "ink: mean intensity; lit_fraction: share of pixels above half intensity. D is the largest gap between "
        "the two cumulative distributions (0: identical); with this many images even a tiny D can have a small p",
    )
    rep.figure(
        out / "train_vs_test.png",
        "ink per image, and where the average training digit has more (red) "
        "or less (blue) ink than the average test digit",
    )
    rep.section("Files").text("Raw numbers: `explore.json`, `class_counts.csv`; figures as PNG next to this file.")
    rep.write(out, "explore.html")
