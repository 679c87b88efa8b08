"""Reading a number from a photo on the page, in a real browser: Playwright driving Debian's chromium
against a live uvicorn server that has a (tiny, untrained) number reader.

Skips with a reason when the playwright package or /usr/bin/chromium (apt-get install chromium) is absent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from mnist_cnn.inference.predictors import Predictor
from tests.helpers import CHROMIUM_ARGS, browser_page, chromium_or_skip, live_server

pytestmark = pytest.mark.slow  # a real browser against a live uvicorn server

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
CHROMIUM = chromium_or_skip()
ARGS = CHROMIUM_ARGS
SAMPLES = Path(__file__).resolve().parent.parent / "src" / "mnist_cnn" / "samples"


class UniformModel(Predictor):
    """The drawing pad's classifier: not under test here, so no training is needed."""

    classes: ClassVar[list[str]] = [str(i) for i in range(10)]
    info: ClassVar[dict[str, Any]] = {"name": "uniform", "model_id": "uniform", "backend": "numpy"}

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 10), 0.1, dtype=np.float32)


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory):
    """uvicorn serving the app with a tiny seeded reader on a free 127.0.0.1 port, in a thread of this process."""
    import torch

    from mnist_cnn.inference.reader import NumberReader
    from mnist_cnn.models.reader import Crnn, save_reader
    from mnist_cnn.serving.app import create_app

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("reader") / "reader.safetensors"
    save_reader(path, Crnn(width=4, hidden=8), {"temperature": 1.0})
    app = create_app(UniformModel(), reader=NumberReader(path))
    yield from live_server(app)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str, **context):
    return browser_page(browser, url, playwright_api.expect, **context)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A JPEG photo of "1928" written with the bundled MNIST sample digits on paper."""
    from mnist_cnn.synth.numbers import render_number

    labels = [1, 9, 2, 8]
    digits = np.stack([np.asarray(Image.open(SAMPLES / f"digit-{k}.png").convert("L")) for k in labels])
    jpeg, _ = render_number(digits, "spaced", np.random.default_rng(0), labels)
    path = tmp_path_factory.mktemp("photo") / "number.jpg"
    path.write_bytes(jpeg)
    return path


def test_read_a_number_from_a_photo(browser, server_url: str, photo: Path) -> None:
    page, errors = open_page(browser, server_url, viewport={"width": 1100, "height": 900})
    expect = playwright_api.expect
    with page.expect_response("**/api/read") as answer:
        page.set_input_files("#read-upload", str(photo))
    reading = answer.value.json()
    assert answer.value.status == 200 and reading["digits"], reading
    expect(page.locator("#read-number")).to_have_text(reading["number"], timeout=15_000)
    boxes = page.locator("#read-boxes .read-box")
    expect(boxes).to_have_count(len(reading["digits"]))
    expect(page.locator("#read-boxes .read-row")).to_have_count(len(reading["rows"]))
    expect(page.locator("#read-prob")).to_contain_text("%")
    if reading["unsure"]:
        expect(page.locator("#read-unsure")).to_be_visible()
        expect(page.locator("#read-unsure")).to_contain_text(reading["reason"])
    # each box sits where the server found its digit, in the photo as displayed
    img = page.locator("#read-img").bounding_box()
    expect(page.locator("#read-img")).to_have_js_property("naturalWidth", reading["size"][0])
    sx, sy = img["width"] / reading["size"][0], img["height"] / reading["size"][1]
    assert sx == pytest.approx(sy, rel=0.02)  # shown at its own aspect ratio
    for i, digit in enumerate(reading["digits"]):
        box = boxes.nth(i).bounding_box()
        left, top, right, bottom = digit["bbox"]
        assert box["x"] == pytest.approx(img["x"] + left * sx, abs=2)
        assert box["y"] == pytest.approx(img["y"] + top * sy, abs=2)
        assert box["width"] == pytest.approx((right - left) * sx, abs=2)
        assert box["height"] == pytest.approx((bottom - top) * sy, abs=2)
        expect(boxes.nth(i)).to_contain_text(digit["label"])
        expect(boxes.nth(i)).to_have_attribute("title", re.compile(rf"^digit {digit['label']}: "))
    assert errors == []


def test_an_error_is_one_line_and_the_pad_still_works(browser, server_url: str, tmp_path: Path) -> None:
    page, errors = open_page(browser, server_url, viewport={"width": 1100, "height": 900})
    expect = playwright_api.expect
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 120), 255).save(blank)
    page.set_input_files("#read-upload", str(blank))
    status = page.locator("#read-status")
    expect(status).to_have_class(re.compile(r"\berror\b"), timeout=15_000)
    expect(status).to_contain_text("no digit found")
    assert "\n" not in status.inner_text()
    expect(page.locator("#reading")).to_be_hidden()
    # the drawing pad answers as before
    pad = page.locator("#pad").bounding_box()
    page.mouse.move(pad["x"] + 0.5 * pad["width"], pad["y"] + 0.2 * pad["height"])
    page.mouse.down()
    for k in range(1, 16):
        page.mouse.move(pad["x"] + 0.5 * pad["width"], pad["y"] + (0.2 + 0.04 * k) * pad["height"])
    page.mouse.up()
    expect(page.locator("#bars li.best")).to_have_count(1, timeout=15_000)
    assert [e for e in errors if not e.startswith("Failed to load resource")] == []  # the browser logs the 422
