"""Shared fixtures: tiny synthetic IDX data sets (made in the test), the real data set
(``real_data``: tests using it must be marked ``integration``), a tiny trained run, a local
download mirror. Plain helpers live in helpers.py.

The real data set is looked for in $MNIST_CNN_REAL_DATA, then $MNIST_CNN_DATA_DIR (the variable
users already set for the CLI), then ``../shared/data/mnist``. A run that skipped a real-data or
browser test ends with a loud line naming them; with ``CI=true`` a skipped real-data test fails
the run (a green CI must mean the real-data tests ran)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from benchmarks.common import synthetic_digits  # one definition, also the serve_load benchmark's fallback
from tests.helpers import Mirror, MirrorHandler, tiny_run

torch.set_num_threads(1)  # tests are tiny; one thread keeps them predictable on a busy 2-core box
# ... and the commands they run (in this process or as subprocesses) use one thread too: the adaptive
# choice follows the machine's load, and a different count gives different (equally good) weights,
# which tests that train twice and compare would read as a failure. Tests of the choice clear it.
os.environ.setdefault("MNIST_CNN_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
REAL_DATA_VARS = ("MNIST_CNN_REAL_DATA", "MNIST_CNN_DATA_DIR")
BROWSER_MODULES = ("tests/test_browser.py", "tests/test_read_browser.py", "tests/test_report_browser.py")


def real_data_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where the real-data tests read MNIST: the first variable of REAL_DATA_VARS set, else ../shared/data/mnist."""
    for var in REAL_DATA_VARS:
        if env.get(var):
            return Path(env[var]).expanduser()
    return REPO.parent / "shared" / "data" / "mnist"


REAL_DATA = real_data_dir()  # read once, before _isolated_env clears MNIST_CNN_DATA_DIR for each test


def write_dataset(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    from mnist_cnn.data.idx import write_idx

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, s in (("train", n_train, seed), ("t10k", n_test, seed + 1)):
        x, y = synthetic_digits(n, s)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A folder with a valid tiny MNIST-format data set (600 train / 200 test)."""
    return write_dataset(tmp_path / "data")


@pytest.fixture
def real_data() -> Path:
    if not (REAL_DATA / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(
            f"real MNIST not found at {REAL_DATA} (set MNIST_CNN_DATA_DIR to a folder holding the four "
            "MNIST IDX files; `mnist-cnn data download --data-dir DIR` fetches them)"
        )
    return REAL_DATA


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the user's cache or data-dir variable by accident."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MNIST_CNN_DATA_DIR", raising=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The markers must mean something: a test that reads the real data set is an integration test."""
    uses_real = [item for item in items if "real_data" in getattr(item, "fixturenames", ())]
    unmarked = [item.nodeid for item in uses_real if item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError("tests using the real_data fixture must be marked integration: " + ", ".join(unmarked))
    _REAL_TESTS.update(item.nodeid for item in uses_real)


# --------------------------------------------------------------------------- skipped tests are not silent

# this session's state (report hooks get no config to stash it in)
_REAL_TESTS: set[str] = set()  # node ids of the tests using real_data
_SKIPPED: dict[str, list[str]] = {}  # "real-data" / "browser" -> skipped node ids


def skip_kind(nodeid: str, reason: str, real_tests: set[str]) -> str | None:
    """Which kind of skip must be shouted about: a real-data test, a browser test (one of the browser
    modules, or any test skipped for want of chromium or playwright), or None."""
    if nodeid in real_tests:
        return "real-data"
    if nodeid.split("::")[0] in BROWSER_MODULES or any(w in reason.lower() for w in ("chromium", "playwright")):
        return "browser"
    return None


def _note_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    kind = skip_kind(report.nodeid, reason, _REAL_TESTS)
    if kind is not None:
        _SKIPPED.setdefault(kind, []).append(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A browser module skipped whole (no chromium or playwright) counts too."""
    _note_skip(report)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when in ("setup", "call"):
        _note_skip(report)


def skip_summary(skipped: Mapping[str, list[str]], ci: bool) -> list[str]:
    """The lines a run that skipped real-data or browser tests ends with (none when it skipped none)."""
    lines = []
    for kind, why in (
        ("real-data", "no MNIST: set MNIST_CNN_DATA_DIR"),
        ("browser", "no chromium/playwright: bash scripts/system-deps.sh"),
    ):
        ids = skipped.get(kind) or []
        if ids:
            shown = ", ".join(ids[:6]) + (f" and {len(ids) - 6} more" if len(ids) > 6 else "")
            lines.append(f"!!! SKIPPED {len(ids)} {kind} test(s) ({why}): {shown}")
    if ci and skipped.get("real-data"):
        lines.append("!!! CI=true: skipped real-data tests fail the run")
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI a skipped real-data test is a failure: the run must not end green without them."""
    if os.environ.get("CI") == "true" and _SKIPPED.get("real-data"):
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's own summary line: the loud lines, last, where nobody misses them."""
    lines = skip_summary(_SKIPPED, os.environ.get("CI") == "true")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True, bold=True)
        else:
            print(line)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model1 run folder (synthetic data), shared by the tests of one module."""
    root = tmp_path_factory.mktemp("run")
    return tiny_run(root, write_dataset(root / "data")).run_dir


@pytest.fixture
def server() -> Iterator[Callable[[str], tuple[str, Mirror]]]:
    """``add(name)`` -> (base URL, Mirror) served by one threaded server on 127.0.0.1."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), MirrorHandler)
    httpd.daemon_threads = True
    httpd.mirrors, httpd.release = {}, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()

    def add(name: str) -> tuple[str, Mirror]:
        httpd.mirrors[name] = Mirror()
        return f"http://127.0.0.1:{httpd.server_address[1]}/{name}/", httpd.mirrors[name]

    yield add
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """The four tiny data set files (name -> bytes), and the mnist spec's official sha256 patched to theirs."""
    from dataclasses import replace

    from mnist_cnn import data as d
    from mnist_cnn.artifacts.files import sha256_file

    spec = d.DATASETS["mnist"]
    names = [f.name for f in spec.all_files()]
    src = write_dataset(tmp_path / "src")
    blobs = {n: (src / n).read_bytes() for n in names}
    sums = {n: sha256_file(src / n) for n in names}
    patched = {s: tuple(replace(f, sha256=sums[f.name]) for f in pair) for s, pair in spec.files.items()}
    monkeypatch.setitem(d.DATASETS, "mnist", replace(spec, files=patched))
    return blobs


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, size, ro)`` mounts a real tmpfs under tmp_path (needs root/CAP_SYS_ADMIN;
    skips with the reason otherwise) and unmounts it afterwards."""
    mounted: list[Path] = []

    def mount(name: str, size: str = "1m", ro: bool = False) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small tmpfs needs root and mount(8); the monkeypatched variant still runs")
        target = tmp_path / name
        target.mkdir()
        opts = f"size={size},mode=0755" + (",ro" if ro else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(target)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)
