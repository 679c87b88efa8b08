"""Write the sample images bundled with the package (``src/mnist_cnn/samples/``), which
``mnist-cnn predict --example`` reads, so a new user gets an answer before any data set is around::

    python tools/make_samples.py --data-dir ../shared/data/mnist

* ``digit-0.png`` .. ``digit-9.png``: the first MNIST test image of each digit, 28x28 as in the data set;
* ``photo-*.jpg``: MNIST test digits written on ruled or squared paper and photographed (rendered by
  ``benchmarks/photo_testset.py``'s ``render_page``), scaled down to a few KB.

``samples.json`` lists each file with its true label and where it came from. The photos are the first
renderings (from a fixed seed) that the bundled model reads right: they show what a photo looks
like, they do not measure accuracy (docs/ has the figures for that).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "src" / "mnist_cnn" / "samples"
PHOTOS = [("photo-3-ruled", "ruled", 3), ("photo-4-grid", "grid", 4)]  # (name, page condition, digit)
PHOTO_SIDE = 180  # px: the longer side of a bundled photo (a few KB as JPEG)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="MNIST folder (default: $MNIST_CNN_DATA_DIR, the cache)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))  # benchmarks/ is a folder of the repository, not of the package

    from mnist_cnn.artifacts.files import atomic_write_text
    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.inference.predictors import load_predictor

    ds = load_dataset("mnist", args.data_dir)
    predictor = load_predictor("default")
    args.out.mkdir(parents=True, exist_ok=True)
    entries = [_digit(ds, d, args.out) for d in range(10)]
    entries += [_photo(ds, predictor, name, cond, d, args.out) for name, cond, d in PHOTOS]
    atomic_write_text(args.out / "samples.json", json.dumps(entries, indent=2) + "\n")
    for e in entries:
        print(f"{e['file']}: {e['label']} ({(args.out / e['file']).stat().st_size} bytes) {e['source']}")
    return 0


def _digit(ds, digit: int, out: Path) -> dict[str, str]:
    """The first test image of ``digit``, as the data set has it."""
    i = int(np.flatnonzero(ds.test_labels == digit)[0])
    from mnist_cnn.artifacts.files import atomic_write_bytes

    name = f"digit-{digit}.png"
    buf = io.BytesIO()
    Image.fromarray(ds.test_images[i], mode="L").save(buf, format="PNG", optimize=True)
    atomic_write_bytes(out / name, buf.getvalue())
    return {"file": name, "label": str(digit), "source": f"MNIST test image {i}"}


def _photo(ds, predictor, name: str, cond: str, digit: int, out: Path) -> dict[str, str]:
    """The first seeded page photo of a test ``digit`` under ``cond`` that the bundled model reads right."""
    from benchmarks.photo_testset import render_page
    from mnist_cnn.artifacts.files import atomic_write_bytes

    for i in np.flatnonzero(ds.test_labels == digit)[1:51]:  # [0] is already digit-N.png
        rng = np.random.default_rng(int(i))
        im = Image.open(io.BytesIO(render_page(ds.test_images[i], cond, rng))).convert("RGB")
        im.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=75, optimize=True)
        answer = predictor.predict([buf.getvalue()])[0]
        if answer.digit == digit and not answer.unsure:
            atomic_write_bytes(out / f"{name}.jpg", buf.getvalue())
            return {
                "file": f"{name}.jpg",
                "label": str(digit),
                "source": f"MNIST test image {int(i)} on {cond} paper, photographed (rendered, seed {int(i)})",
            }
    raise SystemExit(f"no rendering of a {digit} on {cond} paper was read right; try another digit")


if __name__ == "__main__":
    raise SystemExit(main())
