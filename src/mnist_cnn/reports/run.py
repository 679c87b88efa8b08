"""A run folder's evaluation artifacts (metrics, classification report, confusion matrix) and its report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.files import atomic_write_json, atomic_write_text, read_json
from mnist_cnn.artifacts.runs import METRICS, REPORT, read_run_config
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ConfigError, MnistCnnError
from mnist_cnn.evaluation.calibration import ReliabilityBins, reliability_bins, softmax
from mnist_cnn.evaluation.metrics import EvalResult, evaluate_model
from mnist_cnn.models.files import load_model, model_calibration
from mnist_cnn.reports.figures import PALETTE, plot_confusion, pyplot, save_figure
from mnist_cnn.reports.html import Report, fmt, pct
from mnist_cnn.reports.mistakes import confused_pairs, most_confident_mistakes, prediction_cards
from mnist_cnn.reports.words import plural

# a name the run-folder contract already counts as the run's own (artifacts.runs: metrics*.png), so that
# `train --force` replaces it like the other figures
RELIABILITY_PNG = "metrics_reliability.png"


def write_confusion_csv(path: Path, cm: np.ndarray, classes: list[str] | tuple[str, ...]) -> None:
    rows = ["true\\pred," + ",".join(classes)]
    rows += [f"{c}," + ",".join(str(int(v)) for v in cm[i]) for i, c in enumerate(classes)]
    atomic_write_text(path, "\n".join(rows) + "\n")


def write_eval_artifacts(
    out: Path, result: EvalResult, classes: list[str] | tuple[str, ...], metrics: dict[str, Any], split: str = "test"
) -> None:
    """metrics.json, classification_report.txt, confusion_matrix.{csv,png} for ``split``."""
    suffix = "" if split == "test" else f"_{split}"
    cm = result.confusion(len(classes))
    write_confusion_csv(out / f"confusion_matrix{suffix}.csv", cm, classes)
    plot_confusion(
        out / f"confusion_matrix{suffix}.png",
        cm,
        classes,
        f"confusion matrix, {split} set (accuracy {100 * result.accuracy:.2f}%)",
    )
    atomic_write_text(out / f"classification_report{suffix}.txt", result.report(classes))
    atomic_write_json(out / f"metrics{suffix}.json", metrics)


# --------------------------------------------------------------------------- one run's report.html


def _run_test_result(out: Path, config: dict[str, Any], result: EvalResult | None, data: Any):
    """The test-set result and images for the mistakes gallery; re-evaluates the saved model
    when ``result`` is not given. Returns (result, images) or (None, None) without data."""

    try:
        if data is None:
            data = load_dataset(config.get("dataset", "mnist"), config.get("data_dir"))
        if result is None:
            model, meta = load_model(out)
            result = evaluate_model(model, data.test_images, data.test_labels, meta["normalisation"])
    except MnistCnnError:
        return None, None
    return result, data.test_images


def write_run_report(out: Path, result: EvalResult | None = None, data: Any = None) -> Path:
    """``out/report.html`` for a finished run folder: metrics, learning curves, confusion matrix,
    per-class table, classification report, calibration (ECE before and after the temperature, a
    reliability diagram), the most confident mistakes and the configuration.

    ``result``/``data`` (the test-set EvalResult and Dataset) avoid re-running the model when the
    caller has them (training does); otherwise the saved model is evaluated again.
    """

    out = Path(out)
    metrics = read_json(out / METRICS, "metrics file")
    config = read_run_config(out)
    rep = Report(
        f"Run report: {out.name}",
        f"{metrics.get('model')} on {metrics.get('dataset')}, seed {metrics.get('seed')}, "
        f"{plural(int(metrics.get('epochs_run') or 0), 'epoch')}",
    )
    rows = [
        ["test accuracy", pct(metrics.get("test_accuracy"))],
        ["test loss", fmt(metrics.get("test_loss"))],
        ["validation accuracy", pct(metrics.get("val_accuracy"))],
        ["validation loss", fmt(metrics.get("val_loss"))],
        ["parameters", f"{metrics.get('params', 0):,}"],
        ["epochs run", str(metrics.get("epochs_run"))],
        ["train time", f"{metrics.get('train_seconds', 0):.1f} s"],
    ]
    rep.section("Metrics").table(["metric", "value"], rows)
    if (out / "history.png").exists():
        rep.section("Learning curves").figure(out / "history.png", "loss and accuracy per epoch, train and validation")
    classes = list(metrics.get("per_class") or [])
    if (out / "confusion_matrix.png").exists():
        rep.section("Confusion matrix").figure(out / "confusion_matrix.png", "test set, rows normalised by true class")
    result, images = _run_test_result(out, config, result, data) if classes else (None, None)
    if result is not None:
        pairs = confused_pairs(result.confusion(len(classes)), classes, 5)
        rep.table(
            ["classes", "confusions", "breakdown"],
            [[p["pair"], p["total"], p["breakdown"]] for p in pairs],
            "most-confused class pairs (both directions)",
        )
    if classes:
        pc = metrics["per_class"]
        rep.section("Per class").table(
            ["class", "precision", "recall", "F1", "support"],
            [[c, fmt(v["precision"]), fmt(v["recall"]), fmt(v["f1"]), v["support"]] for c, v in pc.items()],
        )
        rep.text("The same numbers with averages: `classification_report.txt`.")
    if result is not None:
        _calibration_section(rep, out, result)
    if result is not None:
        idx = most_confident_mistakes(result.probs, result.labels, 12)
        rep.section("Most confident mistakes")
        if len(idx) and images is not None:
            rep.text(
                f"The {plural(len(idx), 'test image')} the model got wrong with the highest confidence "
                f"({plural(int((result.preds != result.labels).sum()), 'mistake')} in all)."
            )
            rep.gallery(prediction_cards(images, result, classes, idx))
        else:
            rep.text("No mistakes on the test set.")
    if config:
        import json

        rep.section("Configuration").pre(json.dumps(config, indent=2), "json")
    return rep.write(out, REPORT, md_name=None)


def _calibration_section(rep: Report, out: Path, result: EvalResult) -> None:
    """The temperature, NLL and ECE before/after on validation (the fit) and test, and the reliability diagram."""
    try:
        cal = model_calibration(out)
    except MnistCnnError:
        return
    rep.section("Calibration")
    if not cal or cal.get("method") != "temperature":
        reason = (cal or {}).get("reason", "the model was saved before calibration existed")
        rep.text(f"Not calibrated: {reason}. Fit it with `mnist-cnn calibrate {out}`.")
        return
    t = float(cal["temperature"])
    test = result.calibration(t)
    rows = [
        [
            cal.get("fitted_on", "?"),
            fmt(cal.get("nll_before")),
            fmt(cal.get("nll_after")),
            fmt(cal.get("ece_before")),
            fmt(cal.get("ece_after")),
        ],
        [
            f"test split (n={len(result.labels)})",
            fmt(test["nll_before"]),
            fmt(test["nll_after"]),
            fmt(test["ece_before"]),
            fmt(test["ece_after"]),
        ],
    ]
    rep.text(
        f"Probabilities are softmax(logits / T) with T = {t:.4f}, fitted on the validation split to minimise "
        "the negative log-likelihood; the predicted class, and so the accuracy, does not change. ECE: expected "
        "calibration error (15 equal-width confidence bins)."
    )
    rep.table(["data", "NLL before", "NLL after", "ECE before", "ECE after"], rows)
    scores = result.log_scores()
    before = reliability_bins(softmax(scores), result.labels)
    after = reliability_bins(softmax(scores, t), result.labels)
    figure = out / RELIABILITY_PNG
    plot_reliability(figure, before, after, f"test split, T = {t:.3f}")
    rep.figure(figure, "reliability diagram, test split: accuracy per confidence bin")


def plot_reliability(path: Path, before: ReliabilityBins, after: ReliabilityBins, title: str = "") -> None:
    """Accuracy against confidence per bin, before and after calibration (the diagonal is perfect),
    with how many answers fall in each bin below. The legend sits under the figure: inside the axes it
    would cover points wherever they fall (an under-confident model's lie in the upper left)."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5.2, 6.4), height_ratios=[3, 1], sharex=True, layout="constrained")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    mids = (before.edges[:-1] + before.edges[1:]) / 2
    width = before.edges[1] - before.edges[0]
    for bins, name, colour, marker in ((before, "before", PALETTE[1], "s--"), (after, "after", PALETTE[0], "o-")):
        used = bins.counts > 0
        ax.plot(
            bins.confidence[used], bins.accuracy[used], marker, color=colour, ms=4, label=f"{name} (ECE {bins.ece:.4f})"
        )
        hist.bar(mids, bins.counts, width=width * 0.9, color=colour, alpha=0.5, label=name)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8, frameon=False)
    ax.set_title(title or "reliability diagram")
    hist.set_yscale("log")
    hist.set_xlabel("confidence (probability of the predicted class)")
    hist.set_ylabel("answers")
    save_figure(fig, path)


# --------------------------------------------------------------------------- TensorBoard


def tensorboard_writer(logdir: str):
    """A ``torch.utils.tensorboard.SummaryWriter`` for ``train --tensorboard DIR``."""

    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package; install it with "
            "`pip install 'mnist-cnn[tensorboard]'` or drop --tensorboard"
        ) from None
    return SummaryWriter(log_dir=logdir)


def log_scalars(tb: Any, row: dict[str, float]) -> None:
    """One epoch's history row as TensorBoard scalars (train/loss, val/accuracy, lr, ...), flushed
    so the curves are on disk even if the run is killed."""
    for k, v in row.items():
        if k != "epoch":
            tb.add_scalar(k.replace("_", "/", 1), v, int(row["epoch"]))
    tb.flush()
