"""Calibration of a saved model: how well its probabilities match how often it is right, before and
after its temperature (``mnist-cnn calibrate``), on four sets of digits:

* ``mnist_val_tensors``: the MNIST validation split recorded in the model's metadata (the split the
  temperature was fitted on, so its "after" is optimistic);
* ``mnist_test_tensors``: the 10,000 MNIST test images as 28x28 arrays (``predict_proba``);
* ``mnist_test_png_<N>``: the first N test digits saved as PNG files and read back as
  ``predictor.predict`` reads them (decoding + the MNIST-style preprocessing + the calibration's
  contrast factor, which is ~1 for them);
* ``uci_digits_scans``: the UCI optical digits (scikit-learn's ``load_digits``, 1,797 8x8 images of
  other writers, never used for tuning) rendered as 128x128 dark-on-white scans, through ``predict``.

Per set: ``n``, ``accuracy``, ECE (15 equal bins) and NLL before and after, the mean top-class
probability (``mean_conf_*``), how many answers ``predict`` marks unsure at the default threshold
(``unsure_rate``) and, per ECE, the 2.5th and 97.5th percentiles of the ECE over 1,000 seeded
bootstrap resamples of the images (``ece_*_bootstrap95``). ECE is biased upwards (binning noise adds
to it), so near 0 that range lies above the estimate itself: read its upper end as a conservative
95% bound, as the model card does, not as an interval around the estimate. ``--figures DIR``
writes a reliability diagram per set. The docs' figures::

    python benchmarks/calibration.py default --data-dir ../shared/data/mnist --png-n 2000 \\
        --out benchmarks/results/calibration-default.json --figures docs/images

(about 5 CPU minutes; tools/model_card.py reads the JSON into the model card). MODEL is ``default``,
a model file, a run folder, an ensemble folder or an ``.onnx`` file: every backend is measured the
same way, from the predictor's calibrated probabilities (the scores before calibration are
``T * f * log p``, ``f`` an image's contrast factor (1 for tensors), which softmax maps back to the
uncalibrated probabilities).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import metadata_of, temperature_of, timed, uncalibrated_scores, write_json  # noqa: E402

FIGURES = {  # row -> reliability diagram file name (the names docs/accuracy.md shows)
    "mnist_val_tensors": "calibration-mnist-val.png",
    "mnist_test_tensors": "calibration-mnist-test.png",
    "mnist_test_png": "calibration-mnist-test-png.png",
    "uci_digits_scans": "calibration-uci-digits.png",
}
BOOTSTRAP = 1000


def bootstrap_ece(probs: np.ndarray, labels: np.ndarray, seed: int = 0) -> list[float]:
    """2.5th and 97.5th percentiles of the ECE over BOOTSTRAP resamples of the images."""
    from mnist_cnn.evaluation.calibration import expected_calibration_error

    rng = np.random.default_rng(seed)
    n = len(labels)
    eces = [expected_calibration_error(probs[i], labels[i]) for i in (rng.integers(0, n, n) for _ in range(BOOTSTRAP))]
    lo, hi = np.percentile(eces, [2.5, 97.5])
    return [float(lo), float(hi)]


def row(
    scores: np.ndarray, labels: np.ndarray, temperature: float, factors: np.ndarray | None = None
) -> tuple[dict[str, Any], Any, Any]:
    """One set's figures, and its reliability bins before and after (``factors``: each image's
    contrast factor, by which its temperature is multiplied; none for tensors)."""
    from mnist_cnn.evaluation.calibration import nll, reliability_bins, softmax
    from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE, is_unsure

    scaled = scores if factors is None else scores / factors[:, None]  # "after" = softmax(scaled / T)
    before, after = softmax(scores), softmax(scaled, temperature)
    bins_before, bins_after = reliability_bins(before, labels), reliability_bins(after, labels)
    figures = {
        "n": len(labels),
        "accuracy": float((before.argmax(1) == labels).mean()),
        "ece_before": bins_before.ece,
        "ece_after": bins_after.ece,
        "ece_before_bootstrap95": bootstrap_ece(before, labels),
        "ece_after_bootstrap95": bootstrap_ece(after, labels),
        "nll_before": nll(scores, labels),
        "nll_after": nll(scaled, labels, temperature),
        "mean_conf_before": float(before.max(1).mean()),
        "mean_conf_after": float(after.max(1).mean()),
        "unsure_rate": float(np.mean([is_unsure(float(q), DEFAULT_MIN_CONFIDENCE) for q in after.max(1)])),
    }
    return figures, bins_before, bins_after


def through_predict(predictor: Any, images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities [N, C] of ``images`` as ``predictor.predict`` gives them (the same
    steps: preprocessing, the model, the contrast factors), and each image's contrast factor [N]."""
    from mnist_cnn.evaluation.calibration import contrast_factors
    from mnist_cnn.inference.inputs import as_batch_with_contrast

    batch, contrast = as_batch_with_contrast(images)
    probs = predictor.for_photos(predictor.predict_proba(batch), contrast)
    return probs, contrast_factors(contrast, predictor.contrast_power)


def as_png(image: np.ndarray) -> Image.Image:
    """A 28x28 MNIST image saved as a PNG file and opened again."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def uci_scans(limit: int | None) -> tuple[list[Image.Image], np.ndarray]:
    """UCI optical digits (0..16 ink) as dark ink on white 128x128 pages, the digit 88 px tall."""
    from sklearn.datasets import load_digits

    d = load_digits()
    scans = []
    for a in d.images[:limit]:
        digit = Image.fromarray(255 - (a / 16.0 * 255).astype(np.uint8)).resize((88, 88), Image.BILINEAR)
        page = Image.new("L", (128, 128), 255)
        page.paste(digit, (20, 20))
        scans.append(page)
    return scans, np.asarray(d.target[:limit], np.int64)


def measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    from mnist_cnn.artifacts.runs import split_of
    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.errors import ConfigError
    from mnist_cnn.inference.predictors import load_predictor

    p = load_predictor(args.model)
    meta = metadata_of(p)
    if meta.get("dataset", "mnist") != "mnist":
        raise ConfigError(f"{args.model}: a {meta.get('dataset')} model; this benchmark measures MNIST models")
    t = temperature_of(p)
    ds = load_dataset("mnist", args.data_dir)
    split = split_of(meta.get("config"))
    out: dict[str, Any] = {
        "model": str(args.model),
        "model_id": p.info.get("model_id"),
        "temperature": t,
        "calibration": p.info.get("calibration"),
        "validation_split": {"val_size": split.val_size, "seed": split.seed},
    }
    bins: dict[str, tuple[Any, Any]] = {}

    def add(name: str, key: str, probs: np.ndarray, labels: np.ndarray, factors: np.ndarray | None = None) -> None:
        scores = uncalibrated_scores(probs, t, factors)
        (r, before, after), seconds = timed(lambda: row(scores, np.asarray(labels, np.int64), t, factors))
        out[name], bins[key] = r, (before, after)
        print(
            f"{name:<22} n={r['n']:>6,}  accuracy {100 * r['accuracy']:.2f}%  ECE {r['ece_before']:.4f} -> "
            f"{r['ece_after']:.4f}  NLL {r['nll_before']:.4f} -> {r['nll_after']:.4f}  "
            f"unsure {100 * r['unsure_rate']:.1f}%  ({seconds:.0f}s)",
            flush=True,
        )

    if split.val_size:
        xv, yv = ds.validation(split.val_size, split.seed)
        add("mnist_val_tensors", "mnist_val_tensors", p.predict_proba(xv), yv)
    add("mnist_test_tensors", "mnist_test_tensors", p.predict_proba(ds.test_images), ds.test_labels)
    n = min(args.png_n, len(ds.test_labels))
    pngs = [as_png(a) for a in ds.test_images[:n]]
    probs, factors = through_predict(p, pngs)
    add(f"mnist_test_png_{n}", "mnist_test_png", probs, ds.test_labels[:n], factors)
    scans, target = uci_scans(args.uci_n)
    probs, factors = through_predict(p, scans)
    add("uci_digits_scans", "uci_digits_scans", probs, target, factors)
    return out, bins


def write_figures(folder: Path, out: dict[str, Any], bins: dict[str, tuple[Any, Any]]) -> None:
    from mnist_cnn.reports.run import plot_reliability

    folder.mkdir(parents=True, exist_ok=True)
    titles = {
        "mnist_val_tensors": "MNIST validation",
        "mnist_test_tensors": "MNIST test",
        "mnist_test_png": "MNIST test as PNG",
        "uci_digits_scans": "UCI optical digits (scans)",
    }
    for key, (before, after) in bins.items():
        n = int(before.counts.sum())
        title = f"{out['model']}: {titles[key]} ({n:,}), T = {out['temperature']:.3f}"
        plot_reliability(folder / FIGURES[key], before, after, title)
        print(f"wrote {folder / FIGURES[key]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="default, a model file, a run folder, an ensemble folder or an .onnx file")
    ap.add_argument("--data-dir", required=True, help="Folder with the four MNIST IDX files.")
    ap.add_argument("--png-n", type=int, default=2000, help="How many test digits go through PNG + predict.")
    ap.add_argument("--uci-n", type=int, default=None, help="Only the first N UCI digits (default: all 1,797).")
    ap.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    ap.add_argument("--figures", type=Path, help="Write the reliability diagrams (PNG) into this folder.")
    args = ap.parse_args(argv)

    from mnist_cnn.errors import MnistCnnError

    try:
        out, bins = measure(args)
    except MnistCnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json(args.out, out)
    if args.figures:
        write_figures(args.figures, out, bins)
    return 0


if __name__ == "__main__":
    sys.exit(main())
