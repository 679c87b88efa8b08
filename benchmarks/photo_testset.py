"""Photo-like test set: MNIST test digits rendered as users photograph them, then read back through
``mnist_cnn.inference.preprocessing`` and a model; accuracy per condition next to the model's accuracy on
the very same digits as clean 28x28 MNIST images.

Each condition starts from the same *plain* rendering (the digit upscaled with bicubic
interpolation, so strokes are smooth, as dark ink on white paper, centred, 100-160 px tall in
a 1.4-2x larger canvas, light sensor noise, saved as PNG) and changes one thing; ``all`` draws
every change at random at once:

* ``mnist28``: the untouched 28x28 MNIST image (checks that preprocessing is close to the identity)
* ``paper``: paper texture (fibres: low-frequency blotches + grain) and an off-white tint
* ``lighting``: a lighting gradient (up to 55% darker on one side) plus a soft-edged cast shadow
* ``jpeg``: JPEG quality 15-40 (block artefacts, ringing around strokes)
* ``placement``: anywhere in a canvas 1.5-6x the digit, digit 24-400 px tall
* ``white_on_black``: bright chalk on a dark (board/screen) background
* ``colour_ink``: blue/red/green/purple ink on tinted paper (kept as RGB)
* ``blur``: Gaussian blur with sigma 15-50% of the stroke width (out of focus, still legible)
* ``thin_pen``: a ballpoint on a large photo: strokes thinned to ~2-5 px on a 200-400 px digit
* ``all``: all of the above drawn at random

A digit on a page, photographed (:func:`render_page`: the digit redrawn with a pen of varying
width on tinted paper, 70-160 px tall in a photo 2-3.2x larger, camera blur, noise, phone JPEG),
one change each, ``notebook_all`` a realistic mix of all of them:

* ``ruled`` / ``grid``: ruled (sometimes with a red margin line) or squared paper, lines crossing the strokes
* ``form_box``: a printed box around the digit (touching or crossing it sometimes), neighbouring boxes
* ``shadow``: a hand's or phone's shadow, hard to very soft; ``page_edge``: the page's edge and a table beyond
* ``perspective``: the page tilted 15-35 degrees, seen through a pinhole camera
* ``ballpoint``: 1.5-4 px strokes on a big photo; ``marker``: strokes 1.5-2x MNIST's width
* ``stray_marks``: scribbles, dots, a neighbouring digit cut by the border
* ``small_jpeg``: downscaled to 60-160 px, JPEG quality 10-35; ``notebook_all``: all of these at random
* ``crossed_line``: a ruled line that always crosses the strokes; ``cut_border``: a box too small, one
  side cutting through the digit; ``low_light``: a dark photo (20-45% light) with strong sensor noise

Each condition also reports the mean confidence and the expected calibration error (15 bins).
Tune with ``--split val --seed 1``; report with test digits and ``--seed 2``:

    python benchmarks/photo_testset.py default --data-dir /work/shared/data/mnist --seed 2 --n 500 \
        --out docs/results/photo-pages-default.json --examples docs/results/photo-pages-examples.png

    python benchmarks/photo_testset.py /tmp/inf-model --data-dir /work/shared/data/mnist --n 500 \
        --out benchmarks/results/photo-testset.json --examples docs/results/photo-examples.png

``--model`` may also be a .onnx file or ``default``. The digits are ``--n`` consecutive test images
from ``--offset`` (default 5000: the first test digits were looked at while the preprocessing was
developed), or with ``--split val`` the validation digits the model did not train on, which is what
preprocessing choices are tuned on. Rendering is seeded, so runs are reproducible.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.synth.page import PAGE_CONDITIONS, Pool, Record, Rng, page_options, render_page  # noqa: F401
from mnist_cnn.synth.paper import (  # noqa: F401 (re-exported: tests and tools use them from here)
    INKS,
    encode,
    form_box,
    homography,
    lighting,
    place,
    ruled,
    smooth_noise,
    stray_marks,
    warp,
)
from mnist_cnn.synth.strokes import ballpoint, pen_width, thin, upscale  # noqa: F401

CONDITIONS = [
    "mnist28",
    "plain",
    "paper",
    "lighting",
    "jpeg",
    "placement",
    "white_on_black",
    "colour_ink",
    "blur",
    "thin_pen",
    "all",
    *PAGE_CONDITIONS,  # a digit on a page, photographed (rendered by ``render_page``)
]

EXAMPLES = 2  # examples per condition in the --examples figure


def render(digit: np.ndarray, cond: str, rng: Rng, pool: Pool = None, record: Record = None) -> bytes:
    """One MNIST digit as an encoded photo-like image under condition ``cond`` (``pool``: other
    digits, for the fragments of neighbouring digits among stray marks; ``record``: a page's
    rendering options are appended to it)."""
    if cond in PAGE_CONDITIONS:
        return render_page(digit, cond, rng, pool, record)
    if cond == "mnist28":
        return encode(Image.fromarray(digit), "PNG")
    opts = pick(cond, rng)
    height = opts["height"]
    alpha = upscale(digit, height)
    stroke = 2.6 * height / 20  # MNIST's median stroke width at this size
    if opts["thin"]:
        alpha, stroke = thin(alpha, rng)
    s = alpha.shape[0]
    ratio = opts["canvas"]
    canvas = (int(s * ratio * rng.uniform(0.8, 1.2)), int(s * ratio * rng.uniform(0.8, 1.2)))
    canvas = (max(canvas[0], s // 2), max(canvas[1], s // 2))
    a = place(alpha, canvas, rng, centred=not opts["offcentre"])  # [h, w] ink coverage
    if opts["blur"]:
        sigma = rng.uniform(0.15, 0.5) * stroke  # out of focus, but still legible
        from scipy.ndimage import gaussian_filter

        a = gaussian_filter(a, sigma)
    h, w = a.shape
    paper = np.array(opts["paper"], np.float32)  # RGB
    ink = np.array(opts["ink"], np.float32)
    img = paper[None, None, :] * (1 - a[..., None]) + ink[None, None, :] * a[..., None]  # [h, w, 3]
    if opts["texture"]:
        tex = 1 + 0.04 * smooth_noise((h, w), max(8, h // 10), rng) + 0.025 * rng.standard_normal((h, w))
        img *= tex[..., None].astype(np.float32)
    if opts["lighting"]:
        img *= lighting((h, w), rng)[..., None]
    img += rng.normal(0, opts["noise"], img.shape)
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    if not opts["colour"]:
        im = im.convert("L")
    return encode(im, "JPEG", quality=opts["jpeg"]) if opts["jpeg"] else encode(im, "PNG")


def pick(cond: str, rng: np.random.Generator) -> dict[str, Any]:
    """The rendering options of ``cond``: the plain ones with one (``all``: every) change."""
    o: dict[str, Any] = {
        "height": int(rng.integers(100, 161)),
        "canvas": rng.uniform(1.4, 2.0),
        "offcentre": False,
        "paper": (245, 245, 242),
        "ink": (25, 25, 25),
        "texture": False,
        "lighting": False,
        "noise": 2.0,
        "jpeg": 0,
        "colour": False,
        "blur": False,
        "thin": False,
    }
    every = cond == "all"

    def on(name: str) -> bool:  # in `all`, each change is drawn with probability 1/2
        return cond == name or (every and rng.random() < 0.5)

    if on("paper"):
        o["texture"] = True
        o["paper"] = tuple(float(v) for v in rng.uniform(200, 250, 3))
    if on("lighting"):
        o["lighting"] = True
    if on("jpeg"):
        o["jpeg"] = int(rng.integers(15, 41))
    if on("placement"):
        o["offcentre"] = True
        o["height"] = int(np.exp(rng.uniform(np.log(24), np.log(400))))
        o["canvas"] = rng.uniform(1.5, 6.0)
    if on("white_on_black"):
        o["paper"] = tuple(float(v) for v in rng.uniform(10, 70, 3))
        o["ink"] = tuple(float(v) for v in rng.uniform(200, 250, 3))
    if on("colour_ink"):
        o["colour"] = True
        o["ink"] = INKS[int(rng.integers(len(INKS)))]
        o["paper"] = tuple(float(v) for v in rng.uniform(215, 250, 3))
    if on("blur"):
        o["blur"] = True
    if on("thin_pen"):
        o["thin"] = True
        o["height"] = int(rng.integers(200, 401))
    if every:
        o["noise"] = float(rng.uniform(1, 6))
    return o


# --------------------------------------------------------------------------- evaluation


def evaluate(
    predictor: Any,
    digits: np.ndarray,
    labels: np.ndarray,
    cond: str,
    seed: int,
    keep: int = 0,
    pool: np.ndarray | None = None,
) -> dict[str, Any]:
    """Render, preprocess and predict every digit under ``cond``; failures ("no digit found")
    count as wrong, with confidence 0 (no answer was given)."""
    from mnist_cnn.errors import MnistCnnError
    from mnist_cnn.inference.preprocessing import preprocess

    rng = np.random.default_rng([seed, CONDITIONS.index(cond)])
    images, contrast, ok, failed, examples = [], [], [], 0, []
    options: list[dict[str, Any]] = []
    t_pre = 0.0
    for i, d in enumerate(digits):
        data = render(d, cond, rng, digits if pool is None else pool, options)
        t = time.perf_counter()
        try:
            result = preprocess(data)
            pre = result.image
            ok.append(i)
            images.append(pre)
            contrast.append(result.signal)
        except MnistCnnError:
            failed += 1
            pre = None
        t_pre += time.perf_counter() - t
        if i < keep:
            examples.append((data, pre))
    probs = np.zeros((len(digits), 10))
    if images:  # as `predict` does: the model, then each photo's contrast factor (versions before it: none)
        for_photos = getattr(predictor, "for_photos", lambda p, _: p)
        probs[ok] = for_photos(predictor.predict_proba(np.stack(images)), contrast)
    pred = np.where(probs.max(1) > 0, probs.argmax(1), -1)
    correct = pred == labels
    ink_contrast = np.full(len(digits), np.nan)
    ink_contrast[ok] = contrast
    return {
        "condition": cond,
        "n": len(digits),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(probs.max(1).mean()),
        "ece": ece(probs, labels),
        "no_digit_found": failed,
        "preprocess_ms": 1000 * t_pre / len(digits),
        "examples": examples,
        "pred": pred,
        "probs": probs,  # [n, C] calibrated; all zero where no digit was found
        "contrast": ink_contrast,  # [n] grey levels, what preprocessing measured; NaN: no digit found
        "factors": factors(options, correct) if cond == "notebook_all" else [],
    }


def factors(options: list[dict[str, Any]], correct: np.ndarray) -> list[dict[str, Any]]:
    """Accuracy of the mixed condition's images with and without each of its ingredients (which
    of them, alone or together, make the errors)."""
    o = options
    masks = {f"paper {v}": [x["paper"] == v for x in o] for v in ("plain", "ruled", "grid", "form_box")}
    masks |= {f"pen {v}": [x["pen"] == v for x in o] for v in ("normal", "ballpoint", "marker")}
    masks |= {
        "shadow": [x["shadow"] for x in o],
        "page edge": [x["edge"] for x in o],
        "tilt > 20 degrees": [x["tilt"] > 20 for x in o],
        "stray marks": [x["stray"] for x in o],
        "small JPEG": [bool(x["small"]) for x in o],
        "ballpoint and small JPEG": [x["pen"] == "ballpoint" and bool(x["small"]) for x in o],
        "neither ballpoint nor small JPEG": [x["pen"] != "ballpoint" and not x["small"] for x in o],
        "neither, and no shadow": [x["pen"] != "ballpoint" and not x["small"] and not x["shadow"] for x in o],
    }
    rows = []
    for name, m in masks.items():
        m = np.array(m, bool)
        if m.any():
            rows.append({"factor": name, "n": int(m.sum()), "accuracy": float(correct[m].mean())})
    return rows


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error (15 equal-width confidence bins), from
    ``mnist_cnn.evaluation.calibration`` when the installed package has it."""
    try:
        from mnist_cnn.evaluation.calibration import expected_calibration_error  # type: ignore[import-not-found]
    except ImportError:
        conf, correct = probs.max(1), probs.argmax(1) == labels
        bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
        gap = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins))
        return float(gap / len(labels))
    return float(expected_calibration_error(probs, labels, n_bins=n_bins))


def example_figure(rows: list[dict[str, Any]], path: Path, per_row: int = 6) -> None:
    """One row per condition: each rendered input (thumbnail) next to its 28x28 preprocessed image."""
    cell, pad = 84, 6
    w = per_row * (2 * cell + 3 * pad)
    fig = Image.new("RGB", (w + 130, len(rows) * (cell + pad) + pad), (255, 255, 255))
    from PIL import ImageDraw

    draw = ImageDraw.Draw(fig)
    for r, row in enumerate(rows):
        y = pad + r * (cell + pad)
        draw.text((4, y + cell // 2 - 6), row["condition"], fill=(0, 0, 0))
        for c, (data, pre) in enumerate(row["examples"][:per_row]):
            x = 130 + c * (2 * cell + 3 * pad)
            src = Image.open(io.BytesIO(data)).convert("RGB")
            src.thumbnail((cell, cell))
            fig.paste(src, (x, y))
            if pre is not None:
                fig.paste(Image.fromarray(pre).resize((cell, cell), Image.NEAREST).convert("RGB"), (x + cell + pad, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.save(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="run folder, .safetensors, .onnx or default")
    ap.add_argument("--data-dir", type=Path, help="folder with the MNIST IDX files")
    ap.add_argument("--n", type=int, default=500, help="digits per condition")
    ap.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="test digits (for reporting) or the validation split the model did not train on "
        "(val_size 5000, seed 0: for tuning preprocessing without looking at the test set)",
    )
    ap.add_argument(
        "--offset", type=int, default=5000, help="first digit used (test digits 0..999 were looked at while developing)"
    )
    ap.add_argument("--seed", type=int, default=0, help="rendering seed: tune on 1 (with --split val), report on 2")
    ap.add_argument("--conditions", nargs="*", default=CONDITIONS, choices=CONDITIONS)
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    ap.add_argument("--examples", type=Path, help="write a PNG with rendered inputs and their 28x28 versions")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.inference.predictors import load_predictor

    predictor = load_predictor(args.model)
    ds = load_dataset("mnist", args.data_dir)
    if args.split == "test":
        images, all_labels = ds.test_images, ds.test_labels
    else:
        from mnist_cnn.data.datasets import train_val_split

        _, va = train_val_split(ds.train_labels, 5000, 0)
        images, all_labels = ds.train_images[va], ds.train_labels[va]
    pick_ = slice(args.offset, args.offset + args.n) if args.split == "test" else slice(0, args.n)
    digits, labels = images[pick_], all_labels[pick_].astype(int)
    reference = float((predictor.predict_proba(digits).argmax(1) == labels).mean())
    print(
        f"model {predictor.info.get('model_id')} ({predictor.info.get('name')}, {predictor.info.get('backend')}); "
        f"the same {len(digits)} {args.split} digits as clean MNIST: {100 * reference:.2f}%"
    )
    rows = []
    for cond in args.conditions:
        r = evaluate(predictor, digits, labels, cond, args.seed, keep=EXAMPLES if args.examples else 0)
        r["clean_accuracy"] = reference
        rows.append(r)
        print(
            f"{cond:>15}: {100 * r['accuracy']:6.2f}%  confidence {r['mean_confidence']:.3f}  ECE {r['ece']:.3f}  "
            f"(no digit found: {r['no_digit_found']}, preprocess {r['preprocess_ms']:.1f} ms/image)",
            flush=True,
        )
        for f in r["factors"]:
            print(f"{'':>17}{f['factor']:>34}: {100 * f['accuracy']:6.2f}% of {f['n']}")
    if args.examples:
        example_figure(rows, args.examples, per_row=EXAMPLES)
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import machine, write_json

        write_json(
            args.out,
            {
                "model": str(args.model),
                "model_info": {k: predictor.info.get(k) for k in ("name", "model_id", "backend", "accuracy")},
                "n": len(digits),
                "split": args.split,
                "offset": args.offset if args.split == "test" else 0,
                "seed": args.seed,
                "clean_accuracy_same_digits": reference,
                "conditions": [
                    {k: v for k, v in r.items() if k not in ("examples", "pred", "probs", "contrast")} for r in rows
                ],
                "machine": machine(),
            },
        )


if __name__ == "__main__":
    main()
