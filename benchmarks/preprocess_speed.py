"""Image pipeline speed, before and after, side by side in one run.

Two parts, each run for this checkout ("after") and, with ``--before REF``, for an older commit checked
out beside it (``git worktree``, its ``src`` first on ``PYTHONPATH``), alternating so both see the
same machine:

* ``predict`` on a folder, the whole process timed (start-up, model, preprocessing, output): 2,000
  MNIST test PNGs, the 1,797 UCI optical digits as 128x128 scans, 500 notebook photos (test digits
  rendered by ``photo_testset.render_page`` as ``notebook_all``, seed 2, ~0.4 MP JPEGs); images per
  second and the accuracy read from the file names;
* one image preprocessed (decode included, model not): p50 and p95 ms of a 12 MP phone JPEG and a
  1 MP PNG (a '4' on ruled paper with a shadow and noise) and a 280x280 canvas drawing.

    python benchmarks/preprocess_speed.py --data-dir ../shared/data/mnist --before 6a40918 \\
        --out benchmarks/results/preprocess-speed.json

The busy-machine part (training and ``predict`` beside 0, 1, 2 busy processes) is
``benchmarks/contention.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


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


def canvas_drawing() -> bytes:
    """A 7 drawn on the web page's 280x280 canvas: black strokes, round pen, on white."""
    img = Image.new("RGB", (280, 280), "white")
    d = ImageDraw.Draw(img)
    d.line([(70, 60), (210, 60), (130, 230)], fill="black", width=18, joint="curve")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- the folders


def make_folders(data_dir: str | None, root: Path) -> dict[str, Path]:
    """The three folders, each image named ``<index>-<label>.<ext>``."""
    from calibration import uci_scans
    from mnist_cnn.data.datasets import load_dataset
    from photo_testset import render_page

    ds = load_dataset("mnist", data_dir)
    folders = {k: root / k for k in ("mnist_png", "uci_scans", "notebook_photos")}
    for f in folders.values():
        f.mkdir(parents=True)
    for i, (a, y) in enumerate(zip(ds.test_images[:2000], ds.test_labels[:2000])):
        Image.fromarray(a).save(folders["mnist_png"] / f"{i:05d}-{y}.png")
    scans, target = uci_scans(None)
    for i, (s, y) in enumerate(zip(scans, target)):
        s.save(folders["uci_scans"] / f"{i:05d}-{y}.png")
    rng = np.random.default_rng([2, 0])
    digits, labels = ds.test_images[5000:5500], ds.test_labels[5000:5500]
    for i, (d, y) in enumerate(zip(digits, labels)):
        (folders["notebook_photos"] / f"{i:05d}-{y}.jpg").write_bytes(render_page(d, "notebook_all", rng, digits))
    return folders


def predict_folder(folder: Path, env: dict[str, str]) -> dict[str, Any]:
    """``mnist-cnn predict FOLDER --json`` in a new process: wall time, images/s, accuracy."""
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "mnist_cnn", "predict", str(folder), "--json"], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    recs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if not recs:
        raise SystemExit(f"predict printed nothing: {out.stderr.strip()[-400:]}")
    right = sum(r.get("label") == Path(r["file"]).stem.split("-")[1] for r in recs)
    return {"images": len(recs), "seconds": wall, "img_per_s": len(recs) / wall, "accuracy": right / len(recs)}


# --------------------------------------------------------------------------- single images


SINGLE_CODE = """
import json, statistics, sys, time
from mnist_cnn.inference.preprocessing import preprocess
data, repeats = open(sys.argv[1], "rb").read(), int(sys.argv[2])
preprocess(data)  # warm-up (imports, allocator)
times = []
for _ in range(repeats):
    t = time.perf_counter()
    preprocess(data)
    times.append(1000 * (time.perf_counter() - t))
times.sort()
print(json.dumps({"p50_ms": statistics.median(times), "p95_ms": times[max(0, round(0.95 * len(times)) - 1)]}))
"""


def single_image(path: Path, repeats: int, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", SINGLE_CODE, str(path), str(repeats)], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise SystemExit(f"preprocessing {path.name} failed: {out.stderr.strip()[-400:]}")
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- versions


def versions(before: str | None, tmp: Path) -> dict[str, dict[str, str]]:
    """name -> environment: "after" is this checkout; "before" a worktree of REF with its src first."""
    base = dict(os.environ)
    out = {"after": {**base, "PYTHONPATH": str(REPO / "src")}}
    if before:
        tree = tmp / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), before], check=True)
        out["before"] = {**base, "PYTHONPATH": str(tree / "src")}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get("MNIST_CNN_DATA_DIR"), help="MNIST folder (IDX files)")
    ap.add_argument("--before", help="a git ref to measure beside this checkout (e.g. the last release)")
    ap.add_argument("--repeats", type=int, default=15, help="single-image timings per image")
    ap.add_argument("--rounds", type=int, default=2, help="predict runs per folder and version (alternating)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "folders": {}, "single": {}}
    with tempfile.TemporaryDirectory(prefix="preprocess-speed-") as tmp_name:
        tmp = Path(tmp_name)
        envs = versions(args.before, tmp)
        try:
            folders = make_folders(args.data_dir, tmp / "folders")
            singles = {"12 MP JPEG": notebook_photo(4000, 3000, "JPEG"), "1 MP PNG": notebook_photo(1000, 1000, "PNG")}
            singles["280x280 canvas drawing"] = canvas_drawing()
            for kind, folder in folders.items():
                runs: dict[str, list[dict[str, Any]]] = {v: [] for v in envs}
                for _ in range(args.rounds):
                    for version, env in envs.items():
                        runs[version].append(predict_folder(folder, env))
                results["folders"][kind] = {v: best_of(r) for v, r in runs.items()}
                report(kind, results["folders"][kind], "img_per_s", "img/s")
            for name, data in singles.items():
                path = tmp / name.replace(" ", "_")
                path.write_bytes(data)
                results["single"][name] = {v: single_image(path, args.repeats, env) for v, env in envs.items()}
                report(name, results["single"][name], "p50_ms", "ms p50")
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before")])
    results["before"] = args.before
    if args.out:
        write_json(args.out, results)


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of the rounds (the least disturbed), with every round's wall time kept."""
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "rounds_s": [round(r["seconds"], 2) for r in runs],
        "median_s": statistics.median(r["seconds"] for r in runs),
    }


def report(name: str, row: dict[str, dict[str, Any]], key: str, unit: str) -> None:
    cells = "  ".join(
        f"{v}: {r[key]:8.1f} {unit}" + (f" ({100 * r['accuracy']:.2f}%)" if "accuracy" in r else "")
        for v, r in row.items()
    )
    print(f"{name:>24}: {cells}", flush=True)


if __name__ == "__main__":
    main()
