"""Fit a model's calibration on its validation split *and* on page photos of validation digits.

    python benchmarks/photo_calibration.py default --data-dir ../shared/data/mnist \
        --out benchmarks/results/photo-calibration.json [--write]   # --write: store it in the model's sidecar

``mnist-cnn calibrate`` fits the temperature on the validation split's clean digits. Those are 99.7%
right at ~0.999 confidence, so the fit says little about the rarer, harder inputs photos bring: a
page photo the model gets wrong is often 0.8-0.98 "sure". Here the calibration minimises the
negative log-likelihood of two sets, each with half the weight: the clean validation digits, and
the same validation digits rendered as page photos (``photo_testset.py``'s page conditions,
generator seed 1, never the test digits or the test seed 2) and preprocessed as ``predict`` does.
Digits with "no digit found" give no answer and are left out of the fit.

Two fits are compared: one temperature for every image (``balanced_temperature``), and a
temperature with a contrast power (``contrast_calibration``): a photo whose ink signal is ``s``
(``PreprocessResult.signal``: twice the ink's contrast over the paper's noise, at most 255) gets
``T * (255 / s) ** power``, clean digits (no preprocessing) ``T``. Ink lost in noise is where page
photos go wrong (a hairline ballpoint in a small JPEG); ``--write`` stores the second. The UCI
scans (benchmarks/calibration.py) are the check on real data that nothing here was fitted on.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, uncalibrated_scores, write_json  # noqa: E402
from photo_testset import PAGE_CONDITIONS, evaluate  # noqa: E402

RENDER_SEED = 1  # the tuning seed of photo_testset.py; reports use seed 2 on test digits
# The realistic mix of page conditions: 900 renderings, not 300 like each single condition, so that
# photos as people take them weigh as much in the fit as the easy single conditions (chosen on
# validation renderings, two folds by digit: held-out notebook_all ECE 0.048 with 300, 0.043 with 900)
MIXED = "notebook_all"


def photo_scores(
    predictor: Any, digits: np.ndarray, labels: np.ndarray, conds: list[str], n: dict[str, int] | None = None
) -> dict[str, Any]:
    """Per condition: scores [m, C] whose softmax is the model's uncalibrated probabilities, their
    labels and ink contrasts, for the m images that gave an answer, and n, how many were rendered
    (``n[cond]`` of the digits; all of them for a condition not named)."""
    from mnist_cnn.evaluation.calibration import contrast_factors

    t = predictor.temperature
    out = {}
    for cond in conds:
        k = (n or {}).get(cond, len(labels))
        r = evaluate(predictor, digits[:k], labels[:k], cond, RENDER_SEED)
        answered = r["probs"].max(1) > 0
        c = r["contrast"][answered]
        f = contrast_factors(c, predictor.contrast_power)  # undo the stored contrast factor too
        out[cond] = {"scores": uncalibrated_scores(r["probs"][answered], t, f), "labels": labels[:k][answered],
                     "contrast": c, "n": k}  # fmt: skip
        print(f"{cond:>15}: {100 * r['accuracy']:6.2f}%  ({int((~answered).sum())} no digit found)", flush=True)
    return out


def halves(n_clean: int, n_photos: int) -> np.ndarray:
    """Row weights giving each set half the total: 1 / (2 n) per row."""
    return np.concatenate([np.full(n_clean, 0.5 / n_clean), np.full(n_photos, 0.5 / n_photos)])


def balanced_temperature(clean: tuple[np.ndarray, np.ndarray], photos: tuple[np.ndarray, np.ndarray]) -> float:
    """One temperature fitted on both sets, half the weight each. (The bundled default's 0.599 of
    2026-12-01 was fitted with whole repeats instead, the photos at 57% of the weight.)"""
    from mnist_cnn.evaluation.calibration import fit_temperature

    (zc, yc), (zp, yp) = clean, photos
    return fit_temperature(np.concatenate([zc, zp]), np.concatenate([yc, yp]), weights=halves(len(yc), len(yp)))


def contrast_calibration(
    clean: tuple[np.ndarray, np.ndarray], photos: tuple[np.ndarray, np.ndarray], contrast: np.ndarray
) -> tuple[float, float]:
    """``(T, power)`` fitted on both sets, half the weight each; the clean digits have no contrast
    (factor 1), each photo its own."""
    from mnist_cnn.evaluation.calibration import fit_contrast_temperature

    (zc, yc), (zp, yp) = clean, photos
    c = np.concatenate([np.full(len(yc), np.nan), contrast])
    return fit_contrast_temperature(np.concatenate([zc, zp]), np.concatenate([yc, yp]), c, halves(len(yc), len(yp)))


Fit = tuple[float, float]  # (temperature, contrast power)
Set = tuple[np.ndarray, np.ndarray, np.ndarray]  # scores [N, C], labels [N], contrast [N] (NaN: none)


def summary(sets: dict[str, Set], fits: dict[str, Fit]) -> dict[str, Any]:
    """NLL and ECE of every set under every candidate calibration."""
    from mnist_cnn.evaluation.calibration import contrast_factors, expected_calibration_error, nll, softmax

    out: dict[str, Any] = {}
    for name, (z, y, c) in sets.items():
        out[name] = {}
        for k, (t, q) in fits.items():
            scaled = z / contrast_factors(c, q)[:, None]
            out[name][f"{k} (T={t:.3f}, power={q:.3f})"] = {
                "nll": nll(scaled, y, t),
                "ece": expected_calibration_error(softmax(scaled, t), y),
            }
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a .safetensors model file, a run folder or default")
    ap.add_argument("--data-dir", type=Path)
    ap.add_argument("--n", type=int, default=300, help="validation digits per single page condition")
    ap.add_argument("--n-mixed", type=int, default=900, help="validation digits of notebook_all, the realistic mix")
    ap.add_argument("--conditions", nargs="*", default=PAGE_CONDITIONS, choices=PAGE_CONDITIONS)
    ap.add_argument("--write", action="store_true", help="store the balanced temperature in the model's sidecar")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from mnist_cnn.data.datasets import load_dataset, train_val_split
    from mnist_cnn.evaluation.calibration import calibration_metrics, fit_temperature
    from mnist_cnn.inference.predictors import TorchPredictor, load_predictor
    from mnist_cnn.models.files import write_calibration
    from mnist_cnn.training.config import TrainConfig

    predictor = load_predictor(args.model)
    if not isinstance(predictor, TorchPredictor):
        raise SystemExit(f"{args.model}: a single torch model file or run is needed (its temperature is written)")
    cfg = TrainConfig.from_dict(predictor.meta["config"])  # the model's own validation split
    ds = load_dataset("mnist", args.data_dir)
    _, va = train_val_split(ds.train_labels, cfg.val_size, cfg.val_seed)
    vx, vy = ds.train_images[va], ds.train_labels[va].astype(int)
    clean = (uncalibrated_scores(predictor.predict_proba(vx), predictor.temperature), vy)
    per = photo_scores(
        predictor, vx, vy, args.conditions, {c: args.n_mixed if c == MIXED else args.n for c in args.conditions}
    )
    photos = (np.concatenate([p["scores"] for p in per.values()]), np.concatenate([p["labels"] for p in per.values()]))
    contrast = np.concatenate([p["contrast"] for p in per.values()])
    fits: dict[str, Fit] = {
        "stored": (predictor.temperature, predictor.contrast_power),
        "clean only": (fit_temperature(*clean), 0.0),
        "photos only": (fit_temperature(*photos), 0.0),
        "balanced": (balanced_temperature(clean, photos), 0.0),
        "balanced, contrast": contrast_calibration(clean, photos, contrast),
    }
    sets: dict[str, Set] = {"validation digits": (*clean, np.full(len(vy), np.nan)),
                            "their page photos": (*photos, contrast)}  # fmt: skip
    sets |= {f"page photos: {c}": (p["scores"], p["labels"], p["contrast"]) for c, p in per.items()}
    result = {"model": str(args.model), "n_per_condition": args.n, "n_mixed": args.n_mixed, "render_seed": RENDER_SEED,
              "fits": {k: {"temperature": t, "contrast_power": q} for k, (t, q) in fits.items()},
              "sets": summary(sets, fits), "machine": machine()}  # fmt: skip
    for name, rows in result["sets"].items():
        print(f"{name:>30}: " + "  ".join(f"{k} ECE {v['ece']:.4f}" for k, v in rows.items()))
    t, q = fits["balanced, contrast"]
    print(f"stored T {predictor.temperature:.4f} power {predictor.contrast_power:.4f}; fitted T {t:.4f} power {q:.4f}")
    if args.write:
        record = {
            "method": "temperature",
            "temperature": t,
            "contrast_power": q,
            "fitted_on": f"validation split (n={len(vy)}) and {len(photos[1])} page photos of its digits, half the "
            f"weight each; a photo's temperature is T * (255 / signal) ** contrast_power, "
            f"signal = min(255, 2 contrast / noise) "
            f"(benchmarks/photo_calibration.py, render seed {RENDER_SEED})",
            **calibration_metrics(*clean, t),  # on the clean validation digits, T = 1 against T
            "clean_only_temperature": fits["clean only"][0],
        }
        print(f"wrote {write_calibration(predictor.path, record)}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
