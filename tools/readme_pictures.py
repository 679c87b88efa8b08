"""Make the README's pictures from the code as it is, so they stay true::

    mnist-cnn train --model model1 --data-dir ../shared/data/mnist --out runs/model1   # the README's main job
    python tools/readme_pictures.py --run runs/model1

writes into ``docs/images/``:

* ``readme-page.png``: the drawing page (``mnist-cnn serve``) in headless Chromium, a digit drawn with
  the mouse; needs chromium (``bash scripts/system-deps.sh``; ``MNIST_CNN_CHROMIUM`` names another
  binary) and the playwright package (``pip install -e '.[dev]'``); ``--no-page`` skips it;
* ``readme-photos.png``: each bundled sample photo, the box preprocessing cropped, the 28x28 image the
  model reads, and the bundled model's probabilities;
* ``readme-confusion.png`` and ``readme-curves.png``: the run's test confusion matrix and its training
  curves, drawn from its ``confusion_matrix.csv`` and ``history.csv``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "images"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=REPO / "runs" / "model1", help="a finished run folder")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-page", action="store_true", help="skip the browser screenshot (no chromium here)")
    ap.add_argument("--model", default="default", help="the model the page and the photos use")
    args = ap.parse_args(argv)

    from mnist_cnn.errors import MnistCnnError

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        written = [*run_pictures(args.run, args.out), photo_strip(args.out / "readme-photos.png", args.model)]
        if not args.no_page:
            written.append(page_picture(args.out / "readme-page.png", args.model))
    except MnistCnnError as exc:
        print(f"error: {exc}")
        return 1
    for path in written:
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


# --------------------------------------------------------------------------- a run's figures


def run_pictures(run: Path, out: Path) -> list[Path]:
    """The run's confusion matrix and training curves, drawn again from its CSV files."""
    from mnist_cnn.artifacts.runs import is_finished, read_history
    from mnist_cnn.errors import ConfigError
    from mnist_cnn.reports.figures import plot_confusion, plot_history

    if not is_finished(run):
        raise ConfigError(f"{run}: not a finished run folder; train one first (the README's main job) or pass --run")
    classes, cm = read_confusion(run / "confusion_matrix.csv")
    model = _run_model_name(run)
    plot_confusion(out / "readme-confusion.png", cm, classes, f"{model}: test set, rows normalised by true class")
    plot_history(out / "readme-curves.png", read_history(run), title=f"{model}: training curves")
    return [out / "readme-confusion.png", out / "readme-curves.png"]


def read_confusion(path: Path) -> tuple[list[str], np.ndarray]:
    """confusion_matrix.csv (``true\\pred,0,1,...`` then one row per true class) -> (classes, counts)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    classes = lines[0].split(",")[1:]
    cm = np.array([[int(v) for v in line.split(",")[1:]] for line in lines[1:]], dtype=np.int64)
    return classes, cm


def _run_model_name(run: Path) -> str:
    from mnist_cnn.artifacts.runs import read_run_config

    cfg = read_run_config(run)
    return f"{cfg.get('model', run.name)}, {cfg.get('epochs', '?')} epochs"


# --------------------------------------------------------------------------- photo -> crop -> answer


def photo_strip(path: Path, model: str = "default") -> Path:
    """One row per bundled sample photo: the photo with the crop box, the 28x28 input, the probabilities."""
    from PIL import Image

    from mnist_cnn.artifacts.runs import sample_images
    from mnist_cnn.inference.predictors import load_predictor
    from mnist_cnn.inference.preprocessing import preprocess
    from mnist_cnn.reports.figures import PALETTE, pyplot, save_figure

    photos = [s for s in sample_images() if Path(s["path"]).suffix.lower() in (".jpg", ".jpeg")]
    predictor = load_predictor(model)
    plt = pyplot()
    fig, axes = plt.subplots(len(photos), 3, figsize=(8.4, 2.5 * len(photos)), squeeze=False)
    for row, sample in zip(axes, photos):
        pre = preprocess(sample["path"])
        answer = predictor.predict([sample["path"]], top_k=len(predictor.classes))[0]
        row[0].imshow(Image.open(sample["path"]).convert("RGB"))
        left, top, right, bottom = pre.bbox
        row[0].add_patch(
            plt.Rectangle((left, top), right - left, bottom - top, fill=False, color=PALETTE[3], linewidth=2)
        )
        row[0].set_title("photo, and the box found", fontsize=9)
        row[1].imshow(pre.image, cmap="gray", vmin=0, vmax=255)
        row[1].set_title("what the model reads (28x28)", fontsize=9)
        probs = dict(answer.top_k)
        colours = [PALETTE[0] if c == answer.label else "#bbbbbb" for c in predictor.classes]
        row[2].barh(predictor.classes, [probs[c] for c in predictor.classes], color=colours)
        row[2].invert_yaxis()
        row[2].set_xlim(0, 1)
        row[2].set_title(f"answer: {answer.label} ({100 * answer.probability:.1f}%)", fontsize=9)
        row[2].tick_params(labelsize=8)
        for ax in row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)
    return path


# --------------------------------------------------------------------------- the drawing page


def page_picture(path: Path, model: str = "default") -> Path:
    """The drawing page served by ``mnist-cnn serve``, a digit drawn with the mouse, in headless Chromium."""
    from mnist_cnn.errors import ConfigError

    chromium = os.environ.get("MNIST_CNN_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        raise ConfigError(f"chromium not found at {chromium}; run `bash scripts/system-deps.sh` or pass --no-page")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        raise ConfigError("the page picture needs playwright: pip install -e '.[dev]' (or pass --no-page)") from None
    with serving(model) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        page.goto(url)
        expect(page.locator("#bars li")).to_have_count(10)
        box = page.locator("#pad").bounding_box()
        draw(page, box)  # twice: the page shows the server's time, and the first request warms the model up
        expect(page.locator("#bars li.best")).to_have_count(1, timeout=15_000)
        page.click("#clear")
        expect(page.locator("#bars li.best")).to_have_count(0)
        draw(page, box)
        expect(page.locator("#bars li.best")).to_have_count(1, timeout=15_000)
        page.evaluate("document.activeElement.blur()")  # no focus ring on the Clear button
        page.wait_for_timeout(300)  # the bars' transition
        page.screenshot(path=str(path))
        browser.close()
    return path


def draw(page: Any, box: dict[str, float]) -> None:
    """A handwritten-looking '2' on the canvas ``box``: an arc, a diagonal, a foot."""
    arc = [(0.5 + 0.2 * np.cos(t), 0.35 + 0.14 * np.sin(t)) for t in np.linspace(np.pi * 1.1, np.pi * 2.25, 14)]
    corners = [arc[-1], (0.3, 0.75), (0.72, 0.74)]
    pts = list(arc)
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        pts += [(x0 + (x1 - x0) * t / 12, y0 + (y1 - y0) * t / 12) for t in range(1, 13)]
    xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in pts]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for point in xy[1:]:
        page.mouse.move(*point, steps=2)
    page.mouse.up()


class serving:
    """``with serving(model) as url``: the app on a free 127.0.0.1 port, uvicorn in a thread of this process."""

    def __init__(self, model: str):
        import uvicorn

        from mnist_cnn.serving.server import load_app

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.bind(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(load_app(model), log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


if __name__ == "__main__":
    raise SystemExit(main())
