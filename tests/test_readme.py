"""The README is run, not just read: every shell line of its ``bash`` blocks is listed in ``HOW``
with the test that runs it (a new line without one fails :func:`test_every_shell_line_has_a_test`),
its output block is compared with the real output, its Python block runs as a script, the
commands in its prose parse, its links and pictures exist, and its pictures can be made again.

Lines that would take minutes run with flags that make them small, said next to each in ``HOW``:
training gets ``--epochs 1`` and a tiny data set; the repository's main job trains one epoch on a
subset of the real data (integration).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import click
import numpy as np
import pytest

from tests.conftest import REPO, write_dataset
from tests.helpers import run_cli, serve_files

README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
PHOTO = "photo-3-ruled.jpg"  # the sample the README's own-photo lines read (a 3)
FAST_TRAIN = ["--epochs", "1", "--val-size", "100", "--batch-size", "64", "--threads", "1"]

# every shell line of the README -> the test that runs it (and how, when it runs smaller)
HOW = {
    'pip install -e ".[serve]"': "test_install_line (parsed: the package, its command and the extra are defined here)",
    "mnist-cnn predict --example": "test_quickstart_prints_what_the_readme_shows",
    "mnist-cnn predict my-photo.jpg": "test_predict_your_own_photo (the sample photo of a 3, copied)",
    "mnist-cnn predict --multi meter.jpg": "test_read_a_whole_number (the sample digits 1, 9, 2, 8 written on a page)",
    "mnist-cnn serve --open": "test_serve_open (slow; --port 0, $BROWSER records the URL)",
    "mnist-cnn data download": "test_get_mnist (from a local mirror)",
    "export MNIST_CNN_DATA_DIR=/path/to/your/mnist": "test_get_mnist (a tiny data set's folder)",
    "mnist-cnn data info": "test_get_mnist",
    "mnist-cnn train --model model1 --out runs/model1": "test_train_and_evaluate (tiny data, + FAST_TRAIN)",
    "mnist-cnn evaluate runs/model1": "test_train_and_evaluate",
    "mnist-cnn train --model model2 --out runs/model2": "test_train_and_evaluate (tiny data, + FAST_TRAIN)",
    "mnist-cnn compare runs/model1 runs/model2 --out runs/compare": "test_train_and_evaluate",
    "bash scripts/setup.sh && . .venv/bin/activate && mnist-cnn train --model model1 --data-dir "
    "../shared/data/mnist --out runs/model1 && mnist-cnn evaluate runs/model1 --data-dir ../shared/data/mnist": (
        "test_repository_commands (parsed), test_main_job_runs (integration: one epoch on 1,000 real images)"
    ),
    "bash scripts/setup.sh && . .venv/bin/activate && bash scripts/test.sh": (
        "test_repository_commands (parsed; it is what .ci/run runs)"
    ),
}


def blocks(lang: str) -> list[str]:
    return [body for info, body in FENCE.findall(README) if info == lang]


def shell_lines() -> list[str]:
    """Each command of the ``bash`` blocks, its trailing comment removed."""
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for body in blocks("bash") for line in body.splitlines()]
    return [line for line in lines if line]


def section(title: str) -> str:
    """The README's text under ``## title``, up to the next ``## ``."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def parse(args: list[str]) -> click.Command:
    """Parse ``mnist-cnn ARGS`` as click would, without running it: an unknown command or flag fails."""
    from mnist_cnn.cli import cli

    cmd: click.Command | None = cli
    name = "mnist-cnn"
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        name, rest = rest[0], rest[1:]
        cmd = cmd.get_command(click.Context(cmd), name)
        assert cmd is not None, f"`mnist-cnn {' '.join(args)}`: no command {name!r}"
    assert cmd is not None
    try:
        cmd.make_context(name, rest).close()
    except click.exceptions.Exit:  # --help
        pass
    return cmd


def test_every_shell_line_has_a_test():
    assert sorted(shell_lines()) == sorted(HOW), "a README command without a test (or a test for a removed one)"


def test_install_line():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "mnist-cnn" and project["scripts"]["mnist-cnn"] == "mnist_cnn.cli:main"
    (line,) = [line for line in shell_lines() if line.startswith("pip install")]
    target = shlex.split(line)[-1]
    extras = re.fullmatch(r"\.\[([\w,]+)\]", target)
    assert extras and set(extras[1].split(",")) <= set(project["optional-dependencies"])
    assert {"fastapi", "uvicorn"} <= {re.split(r"[<>=;\[ ]", d)[0] for d in project["optional-dependencies"]["serve"]}
    assert project["requires-python"] == ">=3.10" and "Python 3.10 or later" in README


# --------------------------------------------------------------------------- the quickstart

SHOWN = re.compile(r"^(?P<file>\S+): (?P<label>\S+) \((?P<p>[\d.]+)%\)  top-3: (?P<top>.*)$")


def _answers(text: str) -> dict[str, re.Match[str]]:
    return {m["file"]: m for m in map(SHOWN.match, text.splitlines()) if m}


def test_quickstart_prints_what_the_readme_shows():
    """The output block: the same files, answers and top-3 digits; percentages within 0.2."""
    shown = _answers(blocks("text")[0])
    assert len(shown) == len(blocks("text")[0].strip().splitlines()) >= 3
    r = run_cli("predict", "--example")
    assert r.exit_code == 0, r.output
    real = _answers(r.stdout)
    for name, want in shown.items():
        got = real[name]
        assert (got["label"], re.findall(r"(\d) ", got["top"])) == (want["label"], re.findall(r"(\d) ", want["top"]))
        assert abs(float(got["p"]) - float(want["p"])) <= 0.2, (name, got["p"], want["p"])


def test_predict_your_own_photo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mnist_cnn.artifacts.runs import SAMPLES_DIR

    monkeypatch.chdir(tmp_path)
    shutil.copy(SAMPLES_DIR / PHOTO, "my-photo.jpg")
    r = run_cli(*shlex.split("mnist-cnn predict my-photo.jpg")[1:])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("my-photo.jpg: 3 (")


def test_read_a_whole_number(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from PIL import Image

    from mnist_cnn.artifacts.runs import SAMPLES_DIR
    from mnist_cnn.synth.numbers import render_number

    digits = np.stack([np.asarray(Image.open(SAMPLES_DIR / f"digit-{d}.png")) for d in (1, 9, 2, 8)])
    photo, _ = render_number(digits, "spaced", np.random.default_rng(0), height=(90, 90))
    monkeypatch.chdir(tmp_path)
    Path("meter.jpg").write_bytes(photo)
    r = run_cli(*shlex.split("mnist-cnn predict --multi meter.jpg")[1:])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("meter.jpg: 1928 ("), r.stdout


@pytest.mark.slow  # a server process loading the bundled model
def test_serve_open(tmp_path: Path):
    """The README's `serve --open` (on a free port): the browser is sent to the page, which is served."""
    record = tmp_path / "url.txt"
    write = "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
    browser = f"{sys.executable} -c '{write}' {record} %s"
    args = [*shlex.split("mnist-cnn serve --open")[1:], "--port", "0", "--log-level", "warning"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mnist_cnn", *args],
        env={**os.environ, "BROWSER": browser},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert record.exists(), "the browser was not opened"
        with urllib.request.urlopen(record.read_text(), timeout=10) as page:
            assert page.status == 200 and b"Digit recogniser" in page.read()
    finally:
        proc.terminate()
        proc.wait(20)


# --------------------------------------------------------------------------- getting MNIST


def test_get_mnist(server, files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`data download` (from a local mirror, into the cache the README names), `export`, `data info`."""
    from mnist_cnn import data as d

    assert "~/.cache/mnist-cnn/mnist" in section("Get MNIST")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert d.cache_dir("mnist") == tmp_path / "home" / ".cache" / "mnist-cnn" / "mnist"
    url, mirror = server("m")
    serve_files(mirror, files)
    monkeypatch.setitem(d.DATASETS, "mnist", replace(d.DATASETS["mnist"], mirrors=(url,)))
    own = write_dataset(tmp_path / "own", n_test=120)
    for line in shell_lines()[shell_lines().index("mnist-cnn data download") :][:3]:
        if line.startswith("export "):
            name, value = line.split(maxsplit=1)[1].split("=", 1)
            monkeypatch.setenv(name, str(own) if value == "/path/to/your/mnist" else value)
            continue
        r = run_cli(*shlex.split(line)[1:])
        assert r.exit_code == 0, (line, r.output)
        if line == "mnist-cnn data download":
            assert sorted(p.name for p in d.cache_dir("mnist").iterdir()) == sorted(files)
        else:
            assert str(own) in r.output and "test      120 images" in r.output


# --------------------------------------------------------------------------- training


def test_train_and_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The training section's lines in order, in an empty folder, on a tiny data set found through the
    variable; the training lines run one epoch (FAST_TRAIN)."""
    monkeypatch.setenv("MNIST_CNN_DATA_DIR", str(write_dataset(tmp_path / "mnist")))
    monkeypatch.chdir(tmp_path)
    lines = [line for line in shell_lines() if line in section("Train and evaluate")]
    assert len(lines) == 4
    for line in lines:
        args = shlex.split(line)[1:]
        r = run_cli(*args, *(FAST_TRAIN if args[0] == "train" else []))
        assert r.exit_code == 0, (line, r.output)
    assert (tmp_path / "runs" / "model1" / "report.html").is_file()
    assert (tmp_path / "runs" / "compare" / "compare.html").is_file()


@pytest.mark.slow  # a fresh process training model2 for five epochs (on 600 images)
def test_python_block_runs(tmp_path: Path):
    """The README's Python block as a script in an empty folder holding my-photo.jpg, with MNIST found
    through the variable (a tiny set: 600 training and 5,000 validation images, as TrainConfig's
    default validation split needs)."""
    from mnist_cnn.artifacts.runs import SAMPLES_DIR

    (code,) = blocks("python")
    shutil.copy(SAMPLES_DIR / PHOTO, tmp_path / "my-photo.jpg")
    data = write_dataset(tmp_path / "mnist", n_train=5600, n_test=100)
    env = {**os.environ, "MNIST_CNN_DATA_DIR": str(data), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    first, as_dict, accuracy, preds = r.stdout.splitlines()[:4]
    assert first.startswith("3 ") and first.endswith(" sure")
    assert "'digit': 3" in as_dict and "'top_k': [{'label': '3', 'digit': 3" in as_dict
    assert 0 <= float(accuracy) <= 1 and preds.count("Prediction(") == 5


# --------------------------------------------------------------------------- this repository


def test_repository_commands():
    """Set-up + main job, set-up + tests: the scripts exist, the mnist-cnn parts parse, and the test
    command is the one CI runs."""
    main_job, tests = [line for line in shell_lines() if line.startswith("bash scripts/setup.sh")]
    for line in (main_job, tests):
        parts = line.split(" && ")
        assert parts[:2] == ["bash scripts/setup.sh", ". .venv/bin/activate"]
        for part in parts[2:]:
            if part.startswith("mnist-cnn "):
                parse(shlex.split(part)[1:])
            else:
                assert (REPO / shlex.split(part)[1]).is_file(), part
    assert tests.endswith("bash scripts/test.sh") and "bash scripts/test.sh\n" in (REPO / ".ci" / "run").read_text()


@pytest.mark.integration
def test_main_job_runs(real_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The main job's mnist-cnn commands from the repository root, one epoch on 1,000 real images,
    into a temporary run folder (the README's data path is used as written when it is where the data is)."""
    (main_job,) = [line for line in shell_lines() if "mnist-cnn train" in line and line.startswith("bash")]
    monkeypatch.chdir(REPO)
    out = str(tmp_path / "model1")
    for part in main_job.split(" && ")[2:]:
        args = [out if a == "runs/model1" else a for a in shlex.split(part)[1:]]
        if not (REPO / "../shared/data/mnist").resolve().samefile(real_data):
            args = [str(real_data) if a == "../shared/data/mnist" else a for a in args]
        small = ["--epochs", "1", "--train-subset", "1000", "--val-size", "500", "--threads", "1"]
        r = run_cli(*args, *(small if args[0] == "train" else []), "--json")
        assert r.exit_code == 0, (part, r.output)
    assert json.loads(r.stdout)["n"] == 10_000


# --------------------------------------------------------------------------- prose, links and pictures


def test_commands_in_the_prose_parse():
    inline = re.findall(r"`(mnist-cnn [^`]*)`", README)
    assert len(inline) >= 4
    for snippet in inline:
        parse([a for a in shlex.split(snippet)[1:] if a not in ("RUN_DIR",)])
    scripts = re.findall(r"`(?:bash|python) ((?:scripts|tools)/[^\s`]+)", README)
    assert len(scripts) >= 3 and all((REPO / script).is_file() for script in scripts), scripts


def test_links_and_pictures_exist():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert any(t.startswith("docs/images/") for t in targets)
    missing = [t for t in targets if not t.startswith("http") and not (REPO / t).exists()]
    assert not missing


def test_no_clock_times_or_issue_numbers():
    assert not re.findall(r"\b\d{1,2}:\d{2}\b", README)
    assert not re.findall(r"(?i)\bissue\s*#?\d+|(?<![\w/])#\d+\b", README)


# --------------------------------------------------------------------------- the pictures stay true


def _pictures_tool():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import readme_pictures
    finally:
        sys.path.remove(str(REPO / "tools"))
    return readme_pictures


def test_pictures_of_a_run_and_of_the_photos(run_dir: Path, tmp_path: Path):
    from PIL import Image

    tool = _pictures_tool()
    written = [*tool.run_pictures(run_dir, tmp_path), tool.photo_strip(tmp_path / "readme-photos.png")]
    assert [p.name for p in written] == ["readme-confusion.png", "readme-curves.png", "readme-photos.png"]
    for path in written:
        assert Image.open(path).size[0] > 400
    for name in ("readme-confusion.png", "readme-curves.png", "readme-photos.png", "readme-page.png"):
        assert f"docs/images/{name}" in README


def test_pictures_refuse_an_unfinished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert _pictures_tool().main(["--run", str(tmp_path), "--out", str(tmp_path / "p"), "--no-page"]) == 1
    assert "not a finished run folder" in capsys.readouterr().out


@pytest.mark.slow  # headless chromium against a live server
def test_page_picture(tmp_path: Path):
    chromium = os.environ.get("MNIST_CNN_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"chromium not found at {chromium} (bash scripts/system-deps.sh)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package (for chromium) is not installed")
    from PIL import Image

    path = _pictures_tool().page_picture(tmp_path / "page.png")
    assert Image.open(path).size == (1000, 640)


@pytest.mark.integration
def test_the_bundled_samples_can_be_made_again(real_data: Path, tmp_path: Path):
    """tools/make_samples.py remakes the samples from the real test set: the same list and the same
    digit PNGs (the photos' JPEG bytes may differ with the JPEG library, so only their names are compared)."""
    from mnist_cnn.artifacts.runs import SAMPLES_DIR

    sys.path.insert(0, str(REPO / "tools"))
    try:
        import make_samples
    finally:
        sys.path.remove(str(REPO / "tools"))
    assert make_samples.main(["--data-dir", str(real_data), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "samples.json").read_text() == (SAMPLES_DIR / "samples.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in SAMPLES_DIR.iterdir())
    for png in SAMPLES_DIR.glob("*.png"):
        assert (tmp_path / png.name).read_bytes() == png.read_bytes(), png.name
