"""Helpers shared by tests: run the CLI in-process, train tiny runs, make digit and bad/odd images,
a local download mirror's handler, the search tests' study helpers. Fixtures live in conftest.py."""

from __future__ import annotations

import io
import signal
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner
from PIL import Image


def default_sigint() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: a test runner started in the
    background by a non-interactive shell (``nohup``, ``cmd &``) passes SIGINT down as *ignored*, and
    Python then never raises KeyboardInterrupt, so the test would check the runner, not our handling."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(*args: str, **kw: Any):
    """Invoke ``mnist-cnn ARGS`` in-process through click's runner; returns the Result
    (``.exit_code``, ``.stdout``, ``.stderr``). Errors go through the real ``main`` wrapper."""
    from mnist_cnn.cli import main

    runner = CliRunner()
    return runner.invoke(_Main(main), list(args), catch_exceptions=False, **kw)


class _Main:
    """Adapter so CliRunner can drive ``main(argv)`` (which calls sys.exit) like a click command."""

    def __init__(self, fn):
        self.fn = fn
        self.name = "mnist-cnn"

    def main(self, args=None, prog_name=None, **_: Any):
        self.fn(list(args or []))
        raise SystemExit(0)


# one quick epoch on a tiny synthetic set: the flags every tiny CLI run shares
TINY_FLAGS = ("--epochs", "1", "--batch-size", "64", "--val-size", "100")


def tiny_train_argv(data_dir: Path, out: Path, *extra: str) -> list[str]:
    """``mnist-cnn train`` arguments for one quick epoch of model1 on a tiny synthetic set into ``out``."""
    return [
        "train",
        "--data-dir",
        str(data_dir),
        *TINY_FLAGS,
        "--out",
        str(out),
        *extra,
    ]


def tiny_run(tmp_path: Path, data_dir: Path, name: str = "run", **overrides: Any):
    """Train a tiny model1 run (2 epochs on the synthetic set) and return its TrainResult."""
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.engine import train

    fields = {"data_dir": str(data_dir), "epochs": 2, "batch_size": 64, "val_size": 100, **overrides}
    cfg = TrainConfig(**fields)
    return train(cfg, tmp_path / name, quiet=True)


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims ``width`` x ``height`` (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("L", (8, 8), 0)))
    ihdr = 8 + 8  # signature, then length + 'IHDR'
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def digit_image(i: int = 0, size: int = 112, invert: bool = False) -> Image.Image:
    """A synthetic digit-like image (bright strokes on dark), upscaled; ``invert``: dark on light paper."""
    from benchmarks.common import synthetic_digits

    x, _ = synthetic_digits(8, seed=3)
    a = np.kron(x[i], np.ones((size // 28, size // 28), dtype=np.uint8))
    return Image.fromarray(255 - a if invert else a, mode="L")


# The bad images of docs/reliability.md ("Images for predict/serve"): file name -> how the refusal
# starts, the same for `predict` and the server (the tails of the empty and bomb ones differ).
ODD_IMAGE_ERRORS = {
    "empty.png": "the image is empty (0 bytes); send a PNG or JPEG",
    "text.png": "not a recognised image format; send a PNG, JPEG, GIF, BMP, TIFF or WebP",
    "truncated.png": "the image data is truncated or corrupt (",
    "truncated.jpg": "the image data is truncated or corrupt (",
    "1x1.png": "no digit found: the image is blank or too faint",
    "bomb.png": "the image has too many pixels (limit ",
}


def odd_images(digit: Image.Image, later: Image.Image) -> dict[str, bytes]:
    """The bad and the odd-but-valid images of docs/reliability.md made from ``digit`` (mode ``L``,
    dark ink on light paper): file name -> encoded bytes. The names in :data:`ODD_IMAGE_ERRORS` must
    be refused with that message; every other one must read like ``plain.png`` (``later``: the other
    frames of the animated GIF, which must be ignored)."""

    a = np.asarray(digit)
    png, jpeg = encode(digit.convert("RGB")), encode(digit.convert("RGB"), "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display", as a phone writes it
    black_ink, white_ink = np.zeros((*a.shape, 4), np.uint8), np.full((*a.shape, 4), 255, np.uint8)
    black_ink[..., 3] = white_ink[..., 3] = 255 - a  # transparent page: the ink is only in the alpha channel
    return {
        "plain.png": encode(digit),
        "empty.png": b"",
        "text.png": b"seven, written out in words\n" * 8,
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "1x1.png": encode(Image.new("L", (1, 1), 0)),
        "bomb.png": png_with_header_size(50_000, 50_000),  # a tiny file; decoding it would take 2.5 GB
        "animated.gif": encode(
            digit.convert("P"), "GIF", save_all=True, append_images=[later.convert("P")] * 2, duration=100
        ),
        "16-bit.png": encode(Image.fromarray(a.astype(np.uint16) * 257)),  # I;16, 0..65535
        "cmyk.jpg": encode(digit.convert("CMYK"), "JPEG", quality=95),
        "exif-rotated.jpg": encode(digit.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes()),
        "alpha-black-ink.png": encode(Image.fromarray(black_ink)),
        "alpha-white-ink.png": encode(Image.fromarray(white_ink)),
    }


# --------------------------------------------------------------------------- a local download mirror
# (test_download, and test_hardening's disk-full download; the `server` and `files` fixtures are in conftest.py)


@dataclass
class Mirror:
    """What one mirror answers: ``routes[path] = (status, body, mode)``; mode "cut" sends the
    full Content-Length, half the body, then closes; "stall" sends half and then hangs."""

    routes: dict[str, tuple[int, bytes, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class MirrorHandler(BaseHTTPRequestHandler):
    """Answers ``GET /<mirror name>/<file>`` from ``server.mirrors[name]`` (a :class:`Mirror`)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        mirror, path = self.server.mirrors[self.path.split("/")[1]], "/".join(self.path.split("/")[2:])
        mirror.requests.append(path)
        status, body, mode = mirror.routes.get(path, (404, b"<html>not found</html>", "full"))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "full":
            self.wfile.write(body)
            return
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if mode == "stall":
            self.server.release.wait(30)
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def serve_files(mirror: Mirror, blobs: dict[str, bytes], mode: str = "full") -> None:
    """Have ``mirror`` answer 200 with each of ``blobs`` (file name -> bytes), sent per ``mode``."""
    mirror.routes.update({n: (200, b, mode) for n, b in blobs.items()})


# --------------------------------------------------------------------------- search studies
# (test_search on SQLite, test_search_postgres on PostgreSQL)

STUDY = "s"
# tiny and cheap: 1 thread, 100 validation images, batch 64; heartbeat 1 s so dead trials go stale fast
TINY_SEARCH = ["--space", "arch", "--val-size", "100", "--batch-size", "64", "--threads", "1", "--heartbeat", "1"]


def search_args(storage: str, data: Path, *extra: str) -> list[str]:
    return ["search", "--study", STUDY, "--storage", storage, *TINY_SEARCH, "--data-dir", str(data), *extra]


def load_trials(storage: str, study: str = STUDY) -> list:
    import optuna

    from mnist_cnn.search.storage import driver_url

    return optuna.load_study(study_name=study, storage=driver_url(storage)).get_trials()


def check_two_workers_exact(storage: str, data: Path, n: int = 8) -> list:
    """The shared two-worker test (also run against PostgreSQL): exactly n finished trials,
    numbered 0..n-1 once each, run by two different worker processes."""
    r = run_cli(*search_args(storage, data, "--trials", str(n), "--workers", "2", "--budget-epochs", "2"))
    assert r.exit_code == 0, r.stderr
    trials = load_trials(storage)
    states = Counter(t.state.name for t in trials)
    assert states == Counter({"COMPLETE": states["COMPLETE"], "PRUNED": states["PRUNED"]}), states
    assert states["COMPLETE"] + states["PRUNED"] == n
    assert sorted(t.number for t in trials) == list(range(n))  # none lost, none duplicated
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "both workers should have run trials"
    assert all(t.user_attrs["config"]["model"] == "convnet" for t in trials)
    assert f"{n} trials" in r.stdout
    return trials


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_or_skip() -> str:
    """The chromium the browser tests drive (``MNIST_CNN_CHROMIUM``, else /usr/bin/chromium); called at a
    test module's top, it skips the whole module with the reason when there is none."""
    import os

    import pytest

    path = os.environ.get("MNIST_CNN_CHROMIUM", "/usr/bin/chromium")
    if not Path(path).exists():
        pytest.skip(
            f"chromium not found at {path} (apt-get install -y chromium, or set MNIST_CNN_CHROMIUM)",
            allow_module_level=True,
        )
    return path


def live_server(app: Any) -> Any:
    """A generator for a fixture: uvicorn serving ``app`` on a free 127.0.0.1 port in a thread of this
    process; yields its URL, stops it afterwards."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY by asyncio
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)
    sock.close()


def browser_page(browser: Any, url: str, expect: Any, **context: Any) -> tuple[Any, list[str]]:
    """A new page at ``url`` (after the drawing page's 10 bars appear) and the list its errors go to."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    expect(page.locator("#bars li")).to_have_count(10)
    return page, errors
