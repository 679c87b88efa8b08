"""What got in a new user's way, each fixed and kept fixed: a run's recorded data folder, the
sample images and `predict --example`, `serve --open`, top-k digits in ``Prediction.to_dict``,
file objects for ``Predictor.predict``, "1 epochs", the licence warning at set-up, the reliability
plot's legend, and real-data and browser tests that skip loudly (and fail CI)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, real_data_dir, skip_summary, write_dataset
from tests.helpers import digit_image, encode, run_cli, tiny_run

# --------------------------------------------------------------------------- the run's recorded data folder


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run trained with data_dir set (config.json records it), 200 test images."""
    root = tmp_path_factory.mktemp("recorded")
    return tiny_run(root, write_dataset(root / "data"), epochs=1).run_dir


def test_evaluate_a_run_reads_the_data_folder_it_was_trained_on(recorded_run: Path):
    import mnist_cnn

    assert mnist_cnn.evaluate(recorded_run)["n"] == 200  # no data_dir, no variable, an empty cache
    r = run_cli("evaluate", str(recorded_run), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["n"] == 200


def test_explain_a_run_reads_the_data_folder_it_was_trained_on(recorded_run: Path, tmp_path: Path):
    r = run_cli("explain", str(recorded_run), "--out", str(tmp_path / "ex"), "--method", "ig", "--ig-steps", "4")
    assert r.exit_code == 0, r.output
    assert "in 200 test images" in r.stdout


def test_a_given_folder_or_the_variable_wins_over_the_recorded_one(
    recorded_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mnist_cnn

    other = write_dataset(tmp_path / "other", n_test=120)
    assert mnist_cnn.evaluate(recorded_run, data_dir=other)["n"] == 120
    monkeypatch.setenv("MNIST_CNN_DATA_DIR", str(other))
    assert mnist_cnn.evaluate(recorded_run)["n"] == 120
    r = run_cli("evaluate", str(recorded_run), "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["n"] == 120


def test_a_recorded_folder_that_is_gone_falls_back_to_the_usual_search(tmp_path: Path):
    from mnist_cnn.artifacts.runs import data_dir_for

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"data_dir": str(tmp_path / "gone")}}))
    assert data_dir_for(run) is None
    (tmp_path / "gone").mkdir()
    assert data_dir_for(run) == str(tmp_path / "gone")
    assert data_dir_for(run, "given") == "given"


# --------------------------------------------------------------------------- the quickstart's sample images


def test_predict_example_answers_every_bundled_sample_right():
    from mnist_cnn.artifacts.runs import sample_images

    samples = sample_images()
    assert len(samples) >= 10 and sum(Path(s["path"]).suffix == ".jpg" for s in samples) >= 2
    assert all(Path(s["path"]).stat().st_size < 8_000 for s in samples)  # small files
    r = run_cli("predict", "--example", "--json")
    assert r.exit_code == 0, r.output
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(rec["file"]).name for rec in records] == [Path(s["path"]).name for s in samples]
    assert [rec["label"] for rec in records] == [s["label"] for s in samples]
    assert not any(rec["unsure"] for rec in records)


def test_predict_example_prints_the_names_and_refuses_images_too(tmp_path: Path):
    r = run_cli("predict", "--example")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("digit-0.png: 0 (")
    r = run_cli("predict", "--example", str(tmp_path))
    assert r.exit_code == 2 and "not both" in r.stderr
    r = run_cli("predict")
    assert r.exit_code == 2 and "predict --example" in r.stderr and "Traceback" not in r.output


def test_the_samples_are_package_data():
    """pyproject ships the samples folder (a wheel without it would break the quickstart)."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mnist_cnn"]
    assert "samples/*" in data


@pytest.mark.slow  # builds a wheel
def test_the_wheel_holds_the_samples_and_the_model(tmp_path: Path):
    import zipfile

    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    r = subprocess.run([*pip, "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("mnist_cnn-*.whl"))).namelist()
    assert {"mnist_cnn/samples/samples.json", "mnist_cnn/samples/photo-3-ruled.jpg"} <= set(names)
    assert "mnist_cnn/pretrained/default.safetensors" in names


def test_serve_open_opens_the_page_once_the_server_listens(run_dir: Path, monkeypatch: pytest.MonkeyPatch):
    import threading
    import webbrowser

    import uvicorn

    opened: list[str] = []
    done = threading.Event()

    def run(self, sockets=None):
        self.started = True  # uvicorn sets this once it accepts connections
        done.wait(10)

    monkeypatch.setattr(uvicorn.Server, "run", run)
    monkeypatch.setattr(webbrowser, "open", lambda url: opened.append(url) or done.set() or True)
    r = run_cli("serve", "--open", "--model", str(run_dir), "--port", "0", "--host", "0.0.0.0")
    assert r.exit_code == 0, r.output
    assert done.is_set() and opened[0].startswith("http://127.0.0.1:") and opened[0].endswith("/")


# --------------------------------------------------------------------------- predictions


def test_to_dict_top_k_has_the_digit_like_the_cli_json(run_dir: Path, tmp_path: Path):
    from mnist_cnn.inference.predictors import load_predictor

    photo = tmp_path / "d.png"
    digit_image(4, invert=True).save(photo)
    predictor = load_predictor(run_dir)
    mine = predictor.predict(photo, top_k=3)[0].to_dict()
    r = run_cli("predict", str(photo), "--model", str(run_dir), "--json", "--top-k", "3")
    cli = json.loads(r.stdout)
    assert [t["digit"] for t in mine["top_k"]] == [t["digit"] for t in cli["top_k"]]
    assert all(predictor.classes[t["digit"]] == t["label"] for t in mine["top_k"])
    assert set(mine["top_k"][0]) == set(cli["top_k"][0])


def test_to_dict_top_k_digit_for_named_classes():
    """Fashion-MNIST's labels are names: the digit comes from the predictor, not from the label."""
    from mnist_cnn.inference.predictors import Prediction

    p = Prediction(7, "Sneaker", 0.9, [("Sneaker", 0.9), ("Sandal", 0.08)], False, (7, 5))
    assert [t["digit"] for t in p.to_dict()["top_k"]] == [7, 5]
    by_hand = Prediction(3, "3", 0.9, [("3", 0.9), ("8", 0.05)])
    assert [t["digit"] for t in by_hand.to_dict()["top_k"]] == [3, 8]


def test_predict_takes_a_bytesio_or_an_open_file(run_dir: Path, tmp_path: Path):
    from mnist_cnn.inference.predictors import load_predictor

    predictor = load_predictor(run_dir)
    png = encode(digit_image(2, invert=True))
    (tmp_path / "d.png").write_bytes(png)
    want = predictor.predict(png)[0]
    assert predictor.predict(io.BytesIO(png))[0] == want
    with open(tmp_path / "d.png", "rb") as fh:
        assert predictor.predict(fh)[0] == want
    with open(tmp_path / "d.png", "rb") as a, open(tmp_path / "d.png", "rb") as b:
        assert [p.digit for p in predictor.predict([a, b])] == [want.digit] * 2


def test_a_text_file_or_a_read_stream_is_one_clear_error(run_dir: Path, tmp_path: Path):
    from mnist_cnn.errors import ImageError
    from mnist_cnn.inference.predictors import load_predictor

    predictor = load_predictor(run_dir)
    (tmp_path / "d.png").write_bytes(encode(digit_image(2)))
    with open(tmp_path / "d.png", encoding="latin-1") as fh, pytest.raises(ImageError, match="text mode"):
        predictor.predict(fh)
    stream = io.BytesIO(encode(digit_image(2)))
    stream.read()
    with pytest.raises(ImageError, match="seek"):
        predictor.predict(stream)


# --------------------------------------------------------------------------- words and pictures


def test_plural():
    from mnist_cnn.reports.words import plural

    assert plural(1, "epoch") == "1 epoch"
    assert plural(2, "epoch") == "2 epochs"
    assert plural(0, "mistake") == "0 mistakes"
    assert plural(10000, "test image", thousands=True) == "10,000 test images"


def test_a_one_epoch_run_report_says_1_epoch(recorded_run: Path):
    html = (recorded_run / "report.html").read_text()
    assert "1 epoch" in html and "1 epochs" not in html


def test_reliability_legend_covers_no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An under-confident model's points sit in the upper left, where the legend used to be."""
    from mnist_cnn.evaluation.calibration import reliability_bins
    from mnist_cnn.reports import run as run_report

    figures = []
    monkeypatch.setattr(run_report, "save_figure", lambda fig, path: figures.append(fig))
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.15, 1, 3000)
    probs = np.concatenate([conf[:, None], np.repeat((1 - conf[:, None]) / 9, 9, axis=1)], axis=1)
    labels = (rng.uniform(size=3000) > np.minimum(1, conf + 0.35)).astype(int)  # right more often than sure
    bins = reliability_bins(probs, labels)
    run_report.plot_reliability(tmp_path / "r.png", bins, bins)
    fig = figures[0]
    fig.canvas.draw()
    main = fig.axes[0].get_window_extent()
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert legends and not any(leg.get_window_extent().overlaps(main) for leg in legends)


# --------------------------------------------------------------------------- set-up prints no licence warning


def test_pyproject_licence_raises_no_setuptools_warning(monkeypatch: pytest.MonkeyPatch):
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(REPO)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), "pyproject.toml")
    assert not [str(w.message)[:120] for w in caught if "licen" in str(w.message).lower()]


# --------------------------------------------------------------------------- skipped tests are loud


def test_real_data_tests_honour_mnist_cnn_data_dir(tmp_path: Path):
    default = REPO.parent / "shared" / "data" / "mnist"
    assert real_data_dir({}) == default
    assert real_data_dir({"MNIST_CNN_DATA_DIR": str(tmp_path)}) == tmp_path
    assert real_data_dir({"MNIST_CNN_DATA_DIR": str(tmp_path), "MNIST_CNN_REAL_DATA": "/x"}) == Path("/x")


def test_skip_summary_names_each_kind():
    assert skip_summary({}, ci=True) == []
    lines = skip_summary({"real-data": ["tests/a.py::t"], "browser": ["tests/test_browser.py"]}, ci=True)
    assert lines[0].startswith("!!! SKIPPED 1 real-data test(s)") and "tests/a.py::t" in lines[0]
    assert "tests/test_browser.py" in lines[1] and "CI=true" in lines[2]


def _test_sh(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "MNIST_CNN_REAL_DATA", "MNIST_CNN_DATA_DIR")}
    return subprocess.run(
        ["bash", "scripts/test.sh", *args], cwd=REPO, env={**base, **env}, capture_output=True, text=True, timeout=300
    )


REAL_TEST = "tests/test_split.py::test_same_split_as_scikit_learn_on_real_mnist"


@pytest.mark.slow  # two pytest sessions in subprocesses
def test_test_sh_ends_loudly_on_a_skipped_real_data_test_and_ci_fails(tmp_path: Path):
    r = _test_sh(REAL_TEST, MNIST_CNN_DATA_DIR=str(tmp_path / "none"))
    assert r.returncode == 0, r.stdout[-2000:]
    assert r.stdout.rstrip().splitlines()[-1].startswith("!!! SKIPPED 1 real-data test(s)")
    assert REAL_TEST in r.stdout.rstrip().splitlines()[-1]
    r = _test_sh(REAL_TEST, MNIST_CNN_DATA_DIR=str(tmp_path / "none"), CI="true")
    assert r.returncode == 1 and r.stdout.rstrip().splitlines()[-1].startswith("!!! CI=true")


@pytest.mark.slow  # a pytest session in a subprocess
def test_test_sh_names_a_skipped_browser_module():
    plain = "tests/test_split.py::test_synthetic_set_split_is_stratified_and_disjoint"  # so that one test runs
    r = _test_sh("tests/test_browser.py", plain, MNIST_CNN_CHROMIUM="/nonexistent/chromium", CI="true")
    assert r.returncode == 0, r.stdout[-2000:]  # a browser skip is loud, not a CI failure
    assert r.stdout.rstrip().splitlines()[-1] == (
        "!!! SKIPPED 1 browser test(s) (no chromium/playwright: bash scripts/system-deps.sh): tests/test_browser.py"
    )


def test_ci_run_keeps_the_guard_and_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci and '"$rc" -eq 5' in ci
