"""Figures: matplotlib (Agg backend, no display) written atomically, one palette for every plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.files import atomic_save

# one colour per series/model, used by every plot so a model keeps its colour across figures
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    atomic_save(
        path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110, bbox_inches="tight")
    )
    pyplot().close(fig)


def plot_confusion(path: Path, cm: np.ndarray, classes: list[str] | tuple[str, ...], title: str = "") -> None:
    """Row-normalised confusion matrix heatmap (rows: true class; cells show the fraction)."""
    plt = pyplot()
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = range(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=45 if max(map(len, classes)) > 2 else 0)
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix (row-normalised)")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    f"{norm[i, j]:.2f}" if i == j else f"{norm[i, j]:.3f}".lstrip("0"),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    save_figure(fig, path)


def plot_history(path: Path, history: list[dict[str, float]], title: str = "") -> None:
    """Loss and accuracy per epoch, train and validation."""
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ep = [r["epoch"] for r in history]
    for ax, key, label in ((a1, "loss", "loss"), (a2, "accuracy", "accuracy")):
        ax.plot(ep, [r[f"train_{key}"] for r in history], "o-", color=PALETTE[0], label="train", ms=3)
        if history and f"val_{key}" in history[0]:
            ax.plot(ep, [r[f"val_{key}"] for r in history], "s--", color=PALETTE[1], label="validation", ms=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)  # whole epochs only
        ax.grid(alpha=0.3)
        ax.legend()
    a1.set_title("loss")
    a2.set_title("accuracy")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
