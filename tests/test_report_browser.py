"""Reports in a real browser: Playwright driving Debian's chromium on report.html / compare.html.

No console errors, no network request besides the file itself, every image decoded, no sideways
scrolling on a phone-sized screen, and the page prints to PDF. Skips with a reason when the
playwright package or /usr/bin/chromium (apt-get install chromium) is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import write_dataset
from tests.helpers import TINY_FLAGS, run_cli

pytestmark = pytest.mark.slow  # a real browser, and a compare run (two models x two seeds) to show in it

# chromium flags: no GPU, no background traffic (updates, sync, first-run pages), no sandbox in containers
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """A compare report (two models x two seeds, one epoch each) and one of its runs' report.html."""
    root = tmp_path_factory.mktemp("browser")
    data = write_dataset(root / "data")
    out = root / "cmp"
    r = run_cli(
        "compare",
        "--models",
        "model1",
        "model2",
        "--seeds",
        "2",
        *TINY_FLAGS,
        "--threads",
        "1",
        "--data-dir",
        str(data),
        "--out",
        str(out),
        "-q",
    )
    assert r.exit_code == 0, r.stderr
    return {"compare": out / "compare.html", "run": out / "runs" / "model1-seed0" / "report.html"}


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A headless chromium context on a fresh profile folder; skips when either piece is missing."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    chromium = Path(os.environ.get("MNIST_CNN_CHROMIUM", "/usr/bin/chromium"))
    if not chromium.exists():
        pytest.skip(f"chromium not found at {chromium} (apt-get install -y chromium, or set MNIST_CNN_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), headless=True, executable_path=str(chromium), args=FLAGS
        )
        yield ctx
        ctx.close()


def open_report(ctx, path: Path, width: int = 1200, height: int = 900):
    page = ctx.new_page()
    page.set_viewport_size({"width": width, "height": height})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda req: requests.append(req.url))
    page.goto(path.as_uri(), wait_until="load")
    # wait for every image to decode, at most 10 s (a broken image then fails the width check)
    page.evaluate(
        "() => Promise.race([Promise.all([...document.images].map(i => i.decode().catch(() => 0))),"
        " new Promise(done => setTimeout(done, 10000))])"
    )
    return page, errors, requests


@pytest.mark.parametrize("which", ["compare", "run"])
def test_report_opens_without_errors_or_network(browser, reports: dict[str, Path], which: str) -> None:
    page, errors, requests = open_report(browser, reports[which])
    assert errors == []
    # the document itself and its data: images; nothing else (no fonts, scripts or CDNs)
    assert [u for u in requests if not u.startswith("data:")] == [reports[which].as_uri()]
    widths = page.evaluate("() => [...document.images].map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    assert page.locator("h1").inner_text().strip()
    page.close()


def test_compare_report_reads_on_a_phone_and_prints(browser, reports: dict[str, Path], tmp_path: Path) -> None:
    page, errors, _ = open_report(browser, reports["compare"], width=390, height=844)
    assert errors == []
    # wide tables scroll inside their own box; the page itself never scrolls sideways
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    img_widths = page.evaluate("() => [...document.images].map(i => i.getBoundingClientRect().width)")
    assert max(img_widths) <= 390
    verdict = page.locator(".verdict").first.inner_text()
    assert "model1" in verdict and "McNemar p" in verdict
    pdf = tmp_path / "report.pdf"
    page.pdf(path=str(pdf), format="A4")
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    page.close()
