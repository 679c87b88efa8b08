"""p50 preprocessing time of a 12-megapixel phone JPEG and a 1000x1000 PNG (a digit on ruled paper
with a shadow and sensor noise), decoding included, model not included.

    nice -n 19 python benchmarks/preprocess_speed.py --repeats 15

To compare with an older version, check it out next to this one and put its ``src`` first:

    git worktree add /tmp/before <commit> && PYTHONPATH=/tmp/before/src python benchmarks/preprocess_speed.py
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image, ImageDraw


def notebook_photo(w: int, h: int, fmt: str, seed: int = 0) -> bytes:
    """A '4' on ruled paper, a soft shadow over a third of it, noise; encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (w, h), 238)
    d = ImageDraw.Draw(img)
    s = h / 100  # one percent of the height
    for y in np.arange(8 * s, h, 9 * s):
        d.line([(0, y), (w, y)], fill=170, width=max(1, round(0.25 * s)))
    x0, y0, pen = w / 2 - 12 * s, h / 2 - 20 * s, max(2, round(2.2 * s))
    d.line([(x0 + 8 * s, y0), (x0, y0 + 25 * s), (x0 + 26 * s, y0 + 25 * s)], fill=25, width=pen, joint="curve")
    d.line([(x0 + 20 * s, y0 + 8 * s), (x0 + 19 * s, y0 + 40 * s)], fill=25, width=pen)
    a = np.asarray(img, dtype=np.float32)
    a[:, : w // 3] *= 0.7
    a += rng.normal(0, 3, a.shape).astype(np.float32)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
    buf = io.BytesIO()
    out.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def p50_ms(data: bytes, repeats: int) -> float:
    from mnist_cnn.inference.preprocessing import preprocess

    preprocess(data)  # warm-up (imports, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        preprocess(data)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    import mnist_cnn.inference.preprocessing as pre

    print(f"preprocessing from {pre.__file__}")
    for name, (w, h, fmt) in {
        "12 MP JPEG (4000x3000)": (4000, 3000, "JPEG"),
        "1000x1000 PNG": (1000, 1000, "PNG"),
    }.items():
        data = notebook_photo(w, h, fmt)
        print(f"{name:>24}: p50 {p50_ms(data, args.repeats):7.1f} ms  ({len(data) / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
