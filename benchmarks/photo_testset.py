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
]
INKS = [(20, 40, 160), (170, 25, 30), (20, 110, 50), (90, 30, 120), (30, 30, 30)]  # blue, red, green, purple, black


# --------------------------------------------------------------------------- rendering


def upscale(digit: np.ndarray, height: int) -> np.ndarray:
    """uint8 [28, 28] -> ink coverage float [s, s] in 0..1 with the 20-px digit about ``height`` tall."""
    side = max(28, int(round(height * 28 / 20)))
    return np.asarray(Image.fromarray(digit).resize((side, side), Image.BICUBIC), dtype=np.float32).clip(0, 255) / 255


def thin(alpha: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Redraw the strokes 2-5 px wide (a ballpoint pen on a big photo): the skeleton of the
    digit's mask widened to the pen's radius, edges anti-aliased. Returns (coverage, stroke width)."""
    from scipy import ndimage as ndi

    skeleton = zhang_suen(alpha >= 0.5)
    radius = rng.uniform(1.0, 2.5)
    to_line = ndi.distance_transform_edt(~skeleton)
    return np.clip(radius + 0.5 - to_line, 0, 1).astype(np.float32), 2 * radius + 1


def _zs_tables() -> tuple[np.ndarray, np.ndarray]:
    """Zhang-Suen deletion tables over the 256 neighbourhood codes (bit i: neighbour P(i+2),
    P2 = north, then clockwise), one per sub-iteration."""
    t1, t2 = np.zeros(256, bool), np.zeros(256, bool)
    for code in range(256):
        p = [(code >> i) & 1 for i in range(8)]  # P2..P9
        b = sum(p)
        a = sum(p[i] == 0 and p[(i + 1) % 8] == 1 for i in range(8))
        p2, p3, p4, p5, p6, p7, p8, p9 = p
        if 2 <= b <= 6 and a == 1:
            t1[code] = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
            t2[code] = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
    return t1, t2


ZS_TABLES = _zs_tables()
ZS_KERNEL = np.array([[128, 1, 2], [64, 0, 4], [32, 16, 8]], np.int32)


def zhang_suen(mask: np.ndarray) -> np.ndarray:
    """A connected one-pixel skeleton of ``mask`` (Zhang & Suen 1984, table-driven)."""
    from scipy import ndimage as ndi

    m = mask.copy()
    changed = True
    while changed:
        changed = False
        for table in ZS_TABLES:
            code = ndi.correlate(m.astype(np.int32), ZS_KERNEL, mode="constant")
            delete = m & table[code]
            if delete.any():
                m &= ~delete
                changed = True
    return m


def place(alpha: np.ndarray, canvas: tuple[int, int], rng: np.random.Generator, centred: bool) -> np.ndarray:
    """Put ``alpha`` [s, s] into a zero canvas (h, w), centred or at a random position (may be cropped by
    at most the empty margin of the 28x28 frame, never the digit)."""
    h, w = canvas
    s = alpha.shape[0]
    margin = int(s * 4 / 28)  # MNIST's empty border, scaled
    out = np.zeros((h, w), np.float32)
    if centred:
        y, x = (h - s) // 2, (w - s) // 2
    else:
        y = int(rng.integers(-margin, max(-margin + 1, h - s + margin)))
        x = int(rng.integers(-margin, max(-margin + 1, w - s + margin)))
    ys, xs = slice(max(0, y), min(h, y + s)), slice(max(0, x), min(w, x + s))
    out[ys, xs] = alpha[ys.start - y : ys.stop - y, xs.start - x : xs.stop - x]
    return out


def smooth_noise(shape: tuple[int, int], scale: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std noise with features ~``scale`` px (bicubic-upsampled coarse noise)."""
    h, w = shape
    gh, gw = max(2, h // scale + 2), max(2, w // scale + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    up = np.asarray(Image.fromarray(coarse, mode="F").resize((w, h), Image.BICUBIC))
    return (up - up.mean()) / (up.std() + 1e-6)


def lighting(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Multiplicative light field [h, w]: a linear gradient (to 45-100%) times a soft cast shadow."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    a = rng.uniform(0, 2 * np.pi)
    t = np.cos(a) * xx / w + np.sin(a) * yy / h
    t = (t - t.min()) / (t.max() - t.min() + 1e-6)
    light = 1.0 - rng.uniform(0.25, 0.55) * t
    b = rng.uniform(0, 2 * np.pi)  # shadow edge: a line through a random point, softened
    px, py = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    d = np.cos(b) * (xx - px) + np.sin(b) * (yy - py)
    soft = rng.uniform(0.03, 0.15) * max(h, w)
    shadow = 1.0 - rng.uniform(0.2, 0.4) / (1.0 + np.exp(-d / soft))
    return light * shadow


def render(digit: np.ndarray, cond: str, rng: np.random.Generator) -> bytes:
    """One MNIST test digit as an encoded photo-like image under condition ``cond``."""
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


def encode(img: Image.Image, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- evaluation


def evaluate(
    predictor: Any, digits: np.ndarray, labels: np.ndarray, cond: str, seed: int, keep: int = 0
) -> dict[str, Any]:
    """Render, preprocess and predict every digit under ``cond``; failures count as wrong."""
    from mnist_cnn.errors import MnistCnnError
    from mnist_cnn.inference.preprocessing import preprocess

    rng = np.random.default_rng([seed, CONDITIONS.index(cond)])
    images, ok, failed, examples = [], [], 0, []
    t_pre = 0.0
    for i, d in enumerate(digits):
        data = render(d, cond, rng)
        t = time.perf_counter()
        try:
            pre = preprocess(data).image
            ok.append(i)
            images.append(pre)
        except MnistCnnError:
            failed += 1
            pre = None
        t_pre += time.perf_counter() - t
        if i < keep:
            examples.append((data, pre))
    pred = np.full(len(digits), -1)
    if images:
        pred[ok] = predictor.predict_proba(np.stack(images)).argmax(1)
    correct = pred == labels
    return {
        "condition": cond,
        "n": len(digits),
        "accuracy": float(correct.mean()),
        "no_digit_found": failed,
        "preprocess_ms": 1000 * t_pre / len(digits),
        "examples": examples,
        "pred": pred,
    }


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
    ap.add_argument("--seed", type=int, default=0)
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
        r = evaluate(predictor, digits, labels, cond, args.seed, keep=6 if args.examples else 0)
        rows.append(r)
        print(
            f"{cond:>15}: {100 * r['accuracy']:6.2f}%  (no digit found: {r['no_digit_found']}, "
            f"preprocess {r['preprocess_ms']:.1f} ms/image)",
            flush=True,
        )
    if args.examples:
        example_figure(rows, args.examples)
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
                "conditions": [{k: v for k, v in r.items() if k not in ("examples", "pred")} for r in rows],
                "machine": machine(),
            },
        )


if __name__ == "__main__":
    main()
