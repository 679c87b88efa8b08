"""Explain a trained model: where it fails and what it looks at.

* galleries of test images and confused class pairs (:mod:`mnist_cnn.reports.mistakes`);
* :func:`grad_cam`: Grad-CAM (Selvaraju et al. 2017) on the last convolution the model *runs*,
  found by hooking every ``nn.Conv2d`` during one forward pass, so any registered architecture
  works, not only those with a ``features`` block;
* :func:`integrated_gradients`: pixel attributions (Sundararajan et al. 2017) from a black image
  baseline; they add up to ``logit(x) - logit(baseline)`` (completeness), a built-in check.

``explain_run`` writes the ``mnist-cnn explain`` report (explain.html, summary.md, CSV/JSON).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_cnn.artifacts.files import atomic_write_json, atomic_write_text
from mnist_cnn.artifacts.runs import data_dir_for, resolve_model_path
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ConfigError
from mnist_cnn.evaluation.metrics import EvalResult, evaluate_model, normalise
from mnist_cnn.models.files import load_model
from mnist_cnn.reports.figures import plot_confusion, pyplot, save_figure
from mnist_cnn.reports.html import Report, pct
from mnist_cnn.reports.mistakes import (
    confused_pairs,
    least_confident_correct,
    most_confident_mistakes,
    prediction_cards,
)
from mnist_cnn.reports.run import write_confusion_csv
from mnist_cnn.reports.words import plural

# --------------------------------------------------------------------------- saliency


def last_conv(model: nn.Module, example: torch.Tensor) -> nn.Conv2d:
    """The last ``nn.Conv2d`` executed in a forward pass of ``example`` whose output is larger
    than 1x1 (a 1x1 map gives a uniform, uninformative Grad-CAM)."""
    ran: list[tuple[nn.Conv2d, tuple[int, ...]]] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, o: ran.append((mod, tuple(o.shape))))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    spatial = [m for m, shape in ran if shape[-1] * shape[-2] > 1]
    if not spatial:
        raise ConfigError(
            "Grad-CAM needs a convolution with a spatial output; this model has none "
            "(use --method ig for integrated gradients)"
        )
    return spatial[-1]


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM maps ``[B, 28, 28]`` in [0, 1] for normalised images ``x [B, 1, 28, 28]`` and
    target classes ``target [B]``.

    A = the layer's output ``[B, K, h, w]``; weights alpha_k = spatial mean of d logit_target / dA_k;
    map = ReLU(sum_k alpha_k A_k), upsampled bilinearly to 28x28 and scaled to max 1 per image.
    """
    import torch.nn.functional as F

    model.eval()
    layer = layer or last_conv(model, x[:1])
    saved: dict[str, torch.Tensor] = {}

    def keep(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
        saved["a"] = out
        return out.clone()  # later in-place ops (ReLU(inplace=True)) must not overwrite A

    hook = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            score = logits.gather(1, target.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(score, saved["a"])
    finally:
        hook.remove()
    a = saved["a"].detach()
    cam = F.relu((grad.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))  # [B, 1, h, w]
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).numpy()


def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor, steps: int = 64
) -> np.ndarray:
    """Integrated gradients ``[B, 28, 28]`` of logit_target for ``x [B, 1, 28, 28]`` against
    ``baseline`` (same shape): (x - x0) * mean over alpha of the gradient at x0 + alpha (x - x0),
    midpoint rule with ``steps`` points (the images are done one alpha batch at a time)."""
    model.eval()
    total = torch.zeros_like(x)
    for s in range(steps):
        alpha = (s + 0.5) / steps
        xi = (baseline + alpha * (x - baseline)).detach().requires_grad_(True)
        with torch.enable_grad():
            score = model(xi).gather(1, target.view(-1, 1)).sum()
            (g,) = torch.autograd.grad(score, xi)
        total += g
    return ((x - baseline) * total / steps)[:, 0].detach().numpy()


def plot_saliency(
    path: Path, images: np.ndarray, cams: np.ndarray | None, igs: np.ndarray, titles: list[str], per_row: int = 2
) -> None:
    """``per_row`` images per row, each as: the digit, its Grad-CAM overlay (when available),
    its integrated-gradients attribution (red: evidence for the class, blue: against)."""

    plt = pyplot()
    panels = 3 if cams is not None else 2
    rows = -(-len(images) // per_row)
    fig, axes = plt.subplots(rows, panels * per_row, figsize=(2.1 * panels * per_row, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes[i // per_row, (i % per_row) * panels :]
        ax[0].imshow(img, cmap="gray")
        ax[0].set_title(titles[i], fontsize=9)
        if cams is not None:
            ax[1].imshow(img, cmap="gray")
            ax[1].imshow(cams[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax[1].set_title("Grad-CAM", fontsize=9)
        lim = float(np.abs(igs[i]).max()) or 1.0
        ax[panels - 1].imshow(igs[i], cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax[panels - 1].set_title("integrated gradients", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


def plot_digit_grid(path: Path, images: np.ndarray, titles: list[str], title: str, ncols: int = 8) -> None:
    """A grid of digits with a short title each (for summary.md; the HTML uses cards)."""

    plt = pyplot()
    n = max(1, len(images))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.45 * ncols, 1.7 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, t in zip(axes.flat, images, titles):
        ax.imshow(img, cmap="gray")
        ax.set_title(t, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- the explain report


def parse_indices(spec: str | None, n: int) -> list[int] | None:
    """``--images 0,7,42`` -> [0, 7, 42]; each must index the test set."""
    if not spec:
        return None
    try:
        idx = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--images {spec!r}: expected comma-separated test-set indices, e.g. 0,7,42") from None
    bad = [i for i in idx if not 0 <= i < n]
    if bad:
        raise ConfigError(f"--images: index {bad[0]} is outside the test set (0..{n - 1})")
    return idx


def explain_run(
    run: Path,
    out: Path,
    *,
    images: str | None = None,
    n_random: int = 8,
    seed: int = 0,
    top: int = 16,
    method: str = "both",
    data_dir: Any = None,
    ig_steps: int = 64,
) -> dict[str, Any]:
    """Write the explain report for ``run`` into ``out``; returns the raw numbers (explain.json)."""

    if method not in ("both", "gradcam", "ig"):
        raise ConfigError(f"--method {method!r} must be gradcam, ig or both")
    model, meta = load_model(resolve_model_path(run))
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir_for(run, data_dir, meta.get("config")))
    classes = list(meta["classes"])
    norm = meta["normalisation"]
    res = evaluate_model(model, ds.test_images, ds.test_labels, norm)
    out.mkdir(parents=True, exist_ok=True)
    wrong = most_confident_mistakes(res.probs, res.labels, top)
    unsure = least_confident_correct(res.probs, res.labels, top)
    chosen = parse_indices(images, len(res.labels))
    if chosen is None:
        chosen = sorted(
            np.random.default_rng(seed).choice(len(res.labels), min(n_random, len(res.labels)), replace=False).tolist()
        )
    # saliency for the chosen images, explaining the predicted class
    x = normalise(torch.from_numpy(ds.test_images[chosen].copy()), norm["mean"], norm["std"])  # [B,1,28,28]
    target = torch.from_numpy(res.preds[chosen])
    cams = None
    cam_note = ""
    if method in ("both", "gradcam"):
        try:
            layer = last_conv(model, x[:1])
            cams = grad_cam(model, x, target, layer)
            cam_note = f"Grad-CAM on `{_module_name(model, layer)}`, the last convolution with a spatial output."
        except ConfigError as exc:
            if method == "gradcam":
                raise
            cam_note = f"Grad-CAM skipped: {exc}."
    baseline = normalise(
        torch.zeros_like(torch.from_numpy(ds.test_images[chosen[:1]].copy())), norm["mean"], norm["std"]
    )
    igs = integrated_gradients(model, x, target, baseline.expand_as(x), ig_steps)
    with torch.no_grad():
        gap = (model(x).gather(1, target.view(-1, 1)) - model(baseline.expand_as(x)).gather(1, target.view(-1, 1)))[
            :, 0
        ]
    completeness = float(
        np.max(np.abs(igs.reshape(len(chosen), -1).sum(1) - gap.numpy()) / np.maximum(np.abs(gap.numpy()), 1e-6))
    )
    titles = [f"#{i}: true {classes[res.labels[i]]}, pred {classes[res.preds[i]]}" for i in chosen]
    plot_saliency(out / "saliency.png", ds.test_images[chosen], cams, igs, titles)
    plot_digit_grid(
        out / "mistakes.png",
        ds.test_images[wrong],
        [f"{classes[res.labels[i]]}→{classes[res.preds[i]]} {100 * res.probs[i].max():.0f}%" for i in wrong],
        "most confident mistakes (true→predicted, confidence)",
    )
    plot_digit_grid(
        out / "unsure_correct.png",
        ds.test_images[unsure],
        [f"{classes[res.labels[i]]} {100 * res.probs[i].max():.0f}%" for i in unsure],
        "least confident correct predictions (class, confidence)",
    )
    cm = res.confusion(len(classes))
    write_confusion_csv(out / "confusion_matrix.csv", cm, classes)
    plot_confusion(
        out / "confusion_matrix.png", cm, classes, f"confusion matrix, test set (accuracy {100 * res.accuracy:.2f}%)"
    )
    pairs = confused_pairs(cm, classes, 10)

    def rows(idx: np.ndarray) -> list[dict[str, Any]]:
        return [
            {
                "index": int(i),
                "true": classes[res.labels[i]],
                "pred": classes[res.preds[i]],
                "confidence": float(res.probs[i].max()),
                "p_true": float(res.probs[i, res.labels[i]]),
                "probs": [round(float(p), 6) for p in res.probs[i]],
            }
            for i in idx
        ]

    raw = {
        "run": str(run),
        "model": meta["arch"]["name"],
        "test_accuracy": res.accuracy,
        "test_loss": res.loss,
        "n_test": len(res.labels),
        "mistakes": int((res.preds != res.labels).sum()),
        "most_confident_mistakes": rows(wrong),
        "least_confident_correct": rows(unsure),
        "confused_pairs": pairs,
        "saliency_images": rows(np.asarray(chosen)),
        "saliency": {
            "gradcam": cam_note,
            "ig_steps": ig_steps,
            "ig_baseline": "black image",
            "ig_max_relative_completeness_error": completeness,
        },
    }
    atomic_write_json(out / "explain.json", raw)
    atomic_write_text(out / "mistakes.csv", _mistakes_csv(res, classes))

    rep = Report(
        f"Explaining {Path(run).name}",
        f"{meta['arch']['name']} on {meta.get('dataset', 'mnist')}: test accuracy {pct(res.accuracy)}, "
        f"{plural(raw['mistakes'], 'mistake')} in {plural(len(res.labels), 'test image', thousands=True)}",
    )
    rep.section("Most confident mistakes")
    rep.text(
        "Wrong predictions the model was surest about: label noise, ambiguous writing or a real blind spot. "
        "Each card: test-set index, true class, prediction with its probability, top-3 probabilities."
    )
    rep.gallery(prediction_cards(ds.test_images, res, classes, wrong), "![most confident mistakes](mistakes.png)")
    rep.section("Least confident correct predictions")
    rep.text("Right answers the model nearly got wrong: the hardest images it still classifies correctly.")
    rep.gallery(
        prediction_cards(ds.test_images, res, classes, unsure), "![least confident correct](unsure_correct.png)"
    )
    rep.section("Most-confused class pairs")
    rep.table(
        ["classes", "confusions", "breakdown (true→predicted)"],
        [[p["pair"], p["total"], p["breakdown"]] for p in pairs] or [["none", 0, ""]],
    )
    rep.figure(out / "confusion_matrix.png", "test-set confusion matrix, rows normalised by true class")
    rep.section("Saliency maps")
    rep.text(
        f"Images {', '.join(f'#{i}' for i in chosen)} of the test set "
        f"({'chosen with --images' if images else f'drawn at random, seed {seed}'}), explaining the predicted "
        f"class. {cam_note} Integrated gradients: {ig_steps} steps from a black image; red pixels raise the "
        "predicted class's logit, blue ones lower it. Completeness check: the attributions add up to the logit "
        f"change within {100 * completeness:.1f}%."
    )
    rep.figure(out / "saliency.png", "digit, Grad-CAM overlay, integrated gradients")
    rep.section("Files").text(
        "Raw numbers: `explain.json` (every gallery image with its probabilities, the pairs, "
        "the saliency settings), `mistakes.csv` (every test mistake), `confusion_matrix.csv`."
    )
    rep.write(out, "explain.html")
    return raw


def _module_name(model: nn.Module, layer: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is layer), type(layer).__name__)


def _mistakes_csv(res: EvalResult, classes: list[str]) -> str:
    lines = ["index,true,pred,confidence,p_true"]
    for i in most_confident_mistakes(res.probs, res.labels, len(res.labels)):
        lines.append(
            f"{i},{classes[res.labels[i]]},{classes[res.preds[i]]},{res.probs[i].max():.6f},"
            f"{res.probs[i, res.labels[i]]:.6f}"
        )
    return "\n".join(lines) + "\n"
