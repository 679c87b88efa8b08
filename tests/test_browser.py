"""The drawing page in a real browser: Playwright driving Debian's chromium against a live uvicorn server.

Skips with a reason when the playwright package or /usr/bin/chromium (apt-get install chromium) is absent.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM_ARGS, browser_page, chromium_or_skip, digit_image, live_server

pytestmark = pytest.mark.slow  # a real browser against a live uvicorn server

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
CHROMIUM = chromium_or_skip()
ARGS = CHROMIUM_ARGS
DIGIT = re.compile(r"^\d$")


@pytest.fixture(scope="module")
def server_url(run_dir: Path):
    """uvicorn serving the app on a free 127.0.0.1 port, in a thread of this process."""
    from mnist_cnn.serving.server import load_app

    yield from live_server(load_app(str(run_dir)))


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url: str, **context):
    return browser_page(browser, url, playwright_api.expect, **context)


def stroke_points(box: dict) -> list[tuple[float, float]]:
    """A '7': a top bar then a diagonal, in page coordinates of the canvas ``box``."""
    corners = [(0.3, 0.25), (0.72, 0.25), (0.5, 0.8)]
    pts = []
    for (x0, y0), (x1, y1) in itertools.pairwise(corners):
        pts += [(x0 + (x1 - x0) * t / 15, y0 + (y1 - y0) * t / 15) for t in range(16)]
    return [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in pts]


def test_draw_with_the_mouse_shows_a_prediction(browser, server_url: str) -> None:
    page, errors = open_page(browser, server_url, viewport={"width": 1100, "height": 760})
    expect = playwright_api.expect
    expect(page.locator("#digit")).to_have_text("–")
    pts = stroke_points(page.locator("#pad").bounding_box())
    page.mouse.move(*pts[0])
    page.mouse.down()
    for p in pts[1:]:
        page.mouse.move(*p)
    page.mouse.up()
    expect(page.locator("#digit")).to_have_text(DIGIT, timeout=15_000)
    expect(page.locator("#bars li.best")).to_have_count(1)
    expect(page.locator("#preview")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(page.locator("#model")).to_contain_text("model1")
    page.click("#clear")
    expect(page.locator("#digit")).to_have_text("–")
    expect(page.locator("#bars li.best")).to_have_count(0)
    assert errors == []


def test_draw_with_a_finger_on_a_phone(browser, server_url: str) -> None:
    """Touch input (Pointer Events from a touchscreen) on a phone-sized viewport."""
    page, errors = open_page(
        browser,
        server_url,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    cdp = page.context.new_cdp_session(page)
    pts = stroke_points(page.locator("#pad").bounding_box())

    def touch(kind: str, p: tuple[float, float] | None) -> None:
        cdp.send(
            "Input.dispatchTouchEvent",
            {
                "type": kind,
                "touchPoints": [] if p is None else [{"x": p[0], "y": p[1], "id": 1, "radiusX": 4, "radiusY": 4}],
            },
        )

    touch("touchStart", pts[0])
    for p in pts[1:]:
        touch("touchMove", p)
    touch("touchEnd", None)
    playwright_api.expect(page.locator("#digit")).to_have_text(DIGIT, timeout=15_000)
    assert page.evaluate("window.scrollY") == 0  # the finger drew instead of scrolling the page
    assert errors == []


def test_upload_a_photo(browser, server_url: str, tmp_path: Path) -> None:
    page, errors = open_page(browser, server_url)
    photo = tmp_path / "digit.png"
    digit_image(3, invert=True).convert("RGB").save(photo)
    page.set_input_files("#upload", str(photo))
    playwright_api.expect(page.locator("#digit")).to_have_text(DIGIT, timeout=15_000)
    assert errors == []


def notebook_photo(path: Path) -> Path:
    """A phone-style photo of a notebook page: a dark '7' on white paper with ruled blue lines (JPEG)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (480, 360), (250, 250, 246))
    draw = ImageDraw.Draw(img)
    for y in range(30, 360, 28):  # ruled lines
        draw.line([(0, y), (480, y)], fill=(150, 180, 225), width=2)
    draw.line([(60, 0), (60, 360)], fill=(230, 140, 140), width=2)  # the margin
    draw.line([(190, 110), (290, 110), (225, 260)], fill=(25, 25, 40), width=14, joint="curve")
    img.save(path, format="JPEG", quality=80)
    return path


def test_upload_a_notebook_photo_shows_the_digit_and_the_crop(browser, server_url: str, tmp_path: Path) -> None:
    page, errors = open_page(browser, server_url + "/?min_confidence=0")  # never unsure: the digit itself
    expect = playwright_api.expect
    camera = page.locator("#camera")  # the phone camera: a file input that asks for the back camera
    expect(camera).to_have_attribute("capture", "environment")
    expect(camera).to_have_attribute("accept", "image/*")
    page.set_input_files("#camera", str(notebook_photo(tmp_path / "notebook.jpg")))
    expect(page.locator("#digit")).to_have_text(DIGIT, timeout=15_000)
    expect(page.locator("#unsure")).to_be_hidden()
    expect(page.locator("#preview")).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(page.locator("#confidence")).to_contain_text("% sure")
    expect(page.locator("#bars li.best")).to_have_count(1)
    assert errors == []


def test_an_unsure_answer_names_the_two_most_probable_digits(browser, server_url: str, tmp_path: Path) -> None:
    """?min_confidence=1 on the page's URL goes to the API: every answer is unsure (even a probability
    that rounds to 1.0 in float32, which a calibrated crisp digit can reach)."""
    page, errors = open_page(browser, server_url + "/?min_confidence=1")
    expect = playwright_api.expect
    expect(page.locator("#unsure")).to_be_hidden()
    photo = tmp_path / "digit.png"
    digit_image(5, invert=True).convert("RGB").save(photo)
    page.set_input_files("#upload", str(photo))
    note = page.locator("#unsure")
    expect(note).to_be_visible(timeout=15_000)
    expect(note).to_have_text(re.compile(r"^not sure — is it a \d or a \d\?$"))
    expect(page.locator("#digit")).to_have_text("?")
    expect(page.locator("#digit")).to_have_class(re.compile(r"\bunsure\b"))
    page.click("#clear")
    expect(note).to_be_hidden()
    assert errors == []
