"""Predictors (torch, ONNX Runtime without torch) and the `mnist-cnn predict` command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_cnn.errors import CheckpointError, ImageError
from mnist_cnn.inference.predictors import load_predictor
from tests.helpers import ODD_IMAGE_ERRORS, digit_image, odd_images, run_cli

# --------------------------------------------------------------------------- fixtures


def digit_png(path: Path, ink: int = 0, paper: int = 255, size: tuple[int, int] = (200, 180)) -> Path:
    img = Image.new("L", size, paper)
    ImageDraw.Draw(img).line([(60, 40), (140, 40), (90, 150)], fill=ink, width=12)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


META = {
    "arch": {"name": "linear", "kwargs": {}},
    "params": 7850,
    "classes": [str(i) for i in range(10)],
    "dataset": "mnist",
    "normalisation": {"mean": 0.0, "std": 1.0},
    "metrics": {"test_accuracy": 0.5},
    "source": "made in the test",
}


def tiny_onnx(path: Path, meta: dict | None = META, input_name: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """A linear classifier in ONNX with the export contract: ``images`` float32 [N,1,28,28] in 0..1
    -> ``logits`` [N,10], metadata_props['mnist_cnn'] = JSON. Returns its (W [784,10], b [10])."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.5, (784, 10)).astype(np.float32)
    b = rng.normal(0, 0.1, 10).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", [input_name], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "linear",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if meta is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = "mnist_cnn", json.dumps(meta)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return w, b


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# --------------------------------------------------------------------------- predictors


def test_torch_predictor(run_dir: Path) -> None:
    p = load_predictor(run_dir)
    assert p.classes == [str(i) for i in range(10)]
    info = p.info
    assert info["backend"] == "torch" and info["name"] == "model1" and info["params"] > 1000
    assert info["dataset"] == "mnist" and 0 <= info["accuracy"] <= 1
    assert info["model_id"].startswith("model-") and len(info["model_id"]) == len("model-") + 12
    assert info["provenance"]["file"].endswith("model.safetensors")
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    probs = p.predict_proba(x)
    assert probs.shape == (5, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(p.predict_proba(x[2]), probs[2:3], atol=1e-6)  # a single [28, 28] works too
    top = p.top_k(probs, 3)
    assert len(top) == 5 and [q for _, q in top[0]] == sorted(probs[0], reverse=True)[:3]


def test_same_weights_same_model_id(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes((run_dir / "model.safetensors").read_bytes())
    a, b = load_predictor(run_dir).info["model_id"], load_predictor(copy).info["model_id"]
    assert a.split("-")[-1] == b.split("-")[-1]


def test_bad_inputs_and_specs(run_dir: Path, tmp_path: Path) -> None:
    p = load_predictor(run_dir)
    with pytest.raises(ImageError, match=r"\[N, 28, 28\]"):
        p.predict_proba(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ImageError, match="uint8"):
        p.predict_proba(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(CheckpointError):
        load_predictor(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        load_predictor(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="not a loadable ONNX model"):
        load_predictor(tmp_path / "junk.onnx")


def test_onnx_predictor_matches_numpy(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    w, b = tiny_onnx(tmp_path / "m.onnx")
    p = load_predictor(str(tmp_path / "m.onnx"))
    assert p.info["backend"] == "onnxruntime" and p.classes == META["classes"]
    assert p.info["accuracy"] == 0.5 and p.info["provenance"]["source"] == "made in the test"
    x = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    expected = softmax((x.reshape(7, -1).astype(np.float32) / 255) @ w + b)  # input contract: uint8 / 255
    got = p.predict_proba(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert p.predict_proba(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)


def test_onnx_without_metadata_or_wrong_input_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    tiny_onnx(tmp_path / "nometa.onnx", meta=None)
    with pytest.raises(CheckpointError, match="no mnist_cnn metadata"):
        load_predictor(tmp_path / "nometa.onnx")
    tiny_onnx(tmp_path / "wrong.onnx", input_name="input")
    with pytest.raises(CheckpointError, match="expected input 'images'"):
        load_predictor(tmp_path / "wrong.onnx")


def test_onnx_backend_never_imports_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    tiny_onnx(tmp_path / "m.onnx")
    img = digit_png(tmp_path / "d.png")
    code = (
        "import sys, json\n"
        "from mnist_cnn.inference.predictors import load_predictor\n"
        "from mnist_cnn.inference.batch import predict_files\n"
        "from mnist_cnn.cli import main\n"
        f"p = load_predictor({str(tmp_path / 'm.onnx')!r})\n"
        f"r = predict_files(p, [__import__('pathlib').Path({str(img)!r})])\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'digit': r[0]['digit'], 'backend': p.info['backend']}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"torch": False, "digit": got["digit"], "backend": "onnxruntime"}
    assert 0 <= got["digit"] <= 9


def test_exported_onnx_matches_torch(run_dir: Path, tmp_path: Path) -> None:
    """The real export (by the serving stage) read back by our ONNX predictor agrees with torch."""
    pytest.importorskip("onnxscript")
    from mnist_cnn.inference.export import export_onnx

    onnx_path = export_onnx(run_dir, tmp_path / "m.onnx", verify=False).path
    torch_p, onnx_p = load_predictor(run_dir), load_predictor(onnx_path)
    x = np.random.default_rng(2).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(onnx_p.predict_proba(x), torch_p.predict_proba(x), atol=1e-4)
    assert onnx_p.classes == torch_p.classes and onnx_p.info["name"] == torch_p.info["name"]
    assert onnx_p.info["provenance"]["source"].endswith("model.safetensors")


# --------------------------------------------------------------------------- the predict command


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    digit_png(folder / "a.png")
    digit_png(folder / "sub" / "b.jpg", ink=255, paper=0)
    (folder / "notes.txt").write_text("not an image; skipped when walking the folder")
    (folder / ".hidden.png").write_bytes(b"")
    return folder


def test_predict_folder_text_output(run_dir: Path, images: Path) -> None:
    res = run_cli("predict", str(images), "--model", str(run_dir))
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(images / "a.png") + ": ")
    assert "top-3:" in lines[0] and lines[1].startswith(str(images / "sub" / "b.jpg"))


def test_predict_json_top_k_and_failures(run_dir: Path, images: Path, tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is truncated")
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    res = run_cli(
        "predict",
        str(images / "a.png"),
        str(bad),
        str(blank),
        str(tmp_path / "missing.jpg"),
        "--model",
        str(run_dir),
        "--json",
        "--top-k",
        "2",
    )
    assert res.exit_code == 1  # some images failed, the others were still predicted
    records = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["file"] for r in records] == [str(images / "a.png"), str(bad), str(blank), str(tmp_path / "missing.jpg")]
    ok = records[0]
    assert {"file", "digit", "probability", "top_k"} <= set(ok) and isinstance(ok["digit"], int)
    assert len(ok["top_k"]) == 2 and ok["top_k"][0]["probability"] == ok["probability"]
    assert ok["top_k"][0]["probability"] >= ok["top_k"][1]["probability"]
    assert ok["preprocessing"]["inverted"] is True
    assert set(records[1]) == {"file", "error"} and "not a recognised image format" in records[1]["error"]
    assert "no digit found" in records[2]["error"] and "no such file" in records[3]["error"]
    assert "3 of 4 image(s) failed" in res.stderr and "Traceback" not in res.stderr


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """The bad and odd images of docs/reliability.md (tests/helpers.py ``odd_images``) plus ``plain.png``.
    Digit 1 is one the tiny model reads clearly; digit 3 is the animated GIF's later frames."""
    folder = tmp_path / "odd"
    folder.mkdir()
    for name, data in odd_images(digit_image(1, invert=True), digit_image(3, invert=True)).items():
        (folder / name).write_bytes(data)
    return folder


def test_predict_folder_of_bad_and_odd_images(run_dir: Path, odd_folder: Path) -> None:
    """Each bad image is one line on stderr, no traceback, exit 1; every odd-but-valid one is read
    as the plain PNG of the same digit."""
    from mnist_cnn.inference.preprocessing import preprocess

    files = sorted(str(f) for f in odd_folder.iterdir())
    bad = {str(odd_folder / name) for name in ODD_IMAGE_ERRORS}
    good = [f for f in files if f not in bad]
    res = run_cli("predict", str(odd_folder), "--model", str(run_dir))
    assert res.exit_code == 1, (res.stdout, res.stderr)  # some failed; the others were still predicted
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    err = res.stderr.strip().splitlines()
    assert err[-1] == f"{len(bad)} of {len(files)} image(s) failed", res.stderr
    errors = dict(line.split(": error: ", 1) for line in err[:-1])
    assert sorted(errors) == sorted(bad), res.stderr
    for name, start in ODD_IMAGE_ERRORS.items():
        assert errors[str(odd_folder / name)].startswith(start), (name, errors[str(odd_folder / name)])
    assert errors[str(odd_folder / "empty.png")] == "the image is empty (0 bytes); send a PNG or JPEG of a digit"
    assert errors[str(odd_folder / "bomb.png")] == (
        "the image has too many pixels (limit 50,000,000); send a smaller image"
    )
    out = res.stdout.strip().splitlines()
    assert [line.split(": ", 1)[0] for line in out] == good  # nothing on stdout for a file that failed

    p = load_predictor(run_dir)
    digit = int(p.predict_proba(preprocess(odd_folder / "plain.png").image).argmax())
    for line in out:
        assert line.split(": ", 1)[1].startswith(f"{digit} ("), line


def test_predict_json_of_bad_and_odd_images(run_dir: Path, odd_folder: Path) -> None:
    """--json: one object per file, with ``file`` and either digit/probability/top_k or error."""
    from mnist_cnn.inference.preprocessing import preprocess

    res = run_cli("predict", str(odd_folder), "--model", str(run_dir), "--json")
    assert res.exit_code == 1 and "Traceback" not in res.stderr, res.stderr
    records = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["file"] for r in records] == sorted(str(f) for f in odd_folder.iterdir())
    p = load_predictor(run_dir)
    digit = int(p.predict_proba(preprocess(odd_folder / "plain.png").image).argmax())
    for rec in records:
        name = Path(rec["file"]).name
        if name in ODD_IMAGE_ERRORS:
            assert set(rec) == {"file", "error"} and rec["error"].startswith(ODD_IMAGE_ERRORS[name]), rec
            assert "\n" not in rec["error"]
            continue
        assert "error" not in rec and {"file", "digit", "probability", "top_k"} <= set(rec), rec
        want = p.predict_proba(preprocess(Path(rec["file"])).image)[0]  # the library on the same file
        assert rec["digit"] == int(want.argmax()) == digit, name
        assert rec["probability"] == pytest.approx(float(want.max()), abs=1e-5), name
        assert len(rec["top_k"]) == 3 and rec["top_k"][0] == {
            "label": str(digit),
            "digit": digit,
            "probability": rec["probability"],
        }, name
    assert f"{len(ODD_IMAGE_ERRORS)} of {len(records)} image(s) failed" in res.stderr


def test_predict_save_preprocessed(run_dir: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "pre"
    digit_png(images / "other" / "a.png")  # same name in another folder: must not overwrite
    res = run_cli("predict", str(images), "--model", str(run_dir), "--save-preprocessed", str(out))
    assert res.exit_code == 0, res.stderr
    saved = sorted(p.name for p in out.iterdir())
    assert saved == ["a-2.png", "a.png", "b.png"]
    a = np.asarray(Image.open(out / "a.png"))
    assert a.shape == (28, 28) and a.dtype == np.uint8 and a.max() == 255 and a[0].max() == 0


def tiny_reader(folder: Path) -> Path:
    """An untrained number reader: it reads some string; these tests check the answer's form, not its digits."""
    from mnist_cnn.models.reader import Crnn, save_reader

    path = folder / "reader.safetensors"
    save_reader(path, Crnn(width=4, hidden=8), {"temperature": 1.0})
    return path


def test_predict_multi(tmp_path: Path) -> None:
    img = Image.new("L", (520, 200), 255)
    d = ImageDraw.Draw(img)
    for x in (40, 200, 360):
        d.line([(x, 40), (x + 80, 40), (x + 30, 160)], fill=0, width=12)
    img.save(tmp_path / "row.png")
    reader = tiny_reader(tmp_path)
    args = ("predict", str(tmp_path / "row.png"), "--multi", "--reader", str(reader))
    res = run_cli(*args, "--json", "--save-preprocessed", str(tmp_path / "pre"))
    assert res.exit_code == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["number"] == rec["rows"][0]["number"] and len(rec["rows"]) == 1
    assert len(rec["digits"]) == len(rec["number"]) and rec["size"] == [520, 200]
    lefts = [d["bbox"][0] for d in rec["digits"]]
    assert lefts == sorted(lefts)
    assert 0 <= rec["probability"] <= 1 and isinstance(rec["unsure"], bool)
    assert sorted(p.name for p in (tmp_path / "pre").iterdir()) == ["row-row0.png"]
    crop = np.asarray(Image.open(tmp_path / "pre" / "row-row0.png"))
    assert crop.shape[0] == 32 and crop.max() == 255
    text = run_cli(*args, "--min-confidence", "1")
    assert text.exit_code == 0 and text.stdout.startswith(f"{tmp_path / 'row.png'}: unsure: ")
    bad = run_cli("predict", str(tmp_path / "row.png"), "--multi", "--reader", str(tmp_path / "row.png"))
    assert bad.exit_code != 0 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_predict_errors_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    res = run_cli("predict", str(tmp_path / "empty"), "--model", str(run_dir))
    assert res.exit_code != 0 and res.stderr.startswith("error: no image files found")
    res = run_cli("predict", str(digit_png(tmp_path / "d.png")), "--model", str(tmp_path / "no-run"))
    assert res.exit_code != 0 and res.stderr.startswith("error:") and "Traceback" not in res.stderr


def test_predict_with_onnx_model(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    w, b = tiny_onnx(tmp_path / "m.onnx")
    img = digit_png(tmp_path / "d.png")
    res = run_cli(
        "predict", str(img), "--model", str(tmp_path / "m.onnx"), "--json", "--save-preprocessed", str(tmp_path / "pre")
    )
    assert res.exit_code == 0, res.stderr
    rec = json.loads(res.stdout)
    pre = np.asarray(Image.open(tmp_path / "pre" / "d.png"))
    expected = softmax((pre.reshape(1, -1).astype(np.float32) / 255) @ w + b)[0]
    assert rec["digit"] == int(expected.argmax()) and rec["probability"] == pytest.approx(expected.max(), abs=1e-5)


@pytest.mark.integration
def test_predict_real_model_reads_photos(tmp_path: Path, real_data: Path) -> None:
    """End to end on real digits: MNIST test digits rendered as dark ink on large, noisy JPEGs."""
    from mnist_cnn.data.datasets import load_dataset

    ds = load_dataset("mnist", real_data)
    rng = np.random.default_rng(0)
    p = load_predictor(_trained_on_real(tmp_path, real_data))
    n = 40
    for i in range(n):
        big = Image.fromarray(255 - ds.test_images[i]).resize((168, 168), Image.BICUBIC)
        canvas = Image.new("L", (320, 260), 255)
        canvas.paste(big, (int(rng.integers(0, 150)), int(rng.integers(0, 90))))
        noisy = np.clip(np.asarray(canvas, np.float32) * 0.9 + rng.normal(0, 6, (260, 320)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=40)
        (tmp_path / "photos").mkdir(exist_ok=True)
        (tmp_path / "photos" / f"{i:03d}.jpg").write_bytes(buf.getvalue())
    from mnist_cnn.inference.batch import image_files, predict_files

    records = predict_files(p, image_files([tmp_path / "photos"]))
    photo_acc = np.mean([r["digit"] == ds.test_labels[i] for i, r in enumerate(records)])
    clean_acc = np.mean(p.predict_proba(ds.test_images[:n]).argmax(1) == ds.test_labels[:n])
    assert photo_acc >= clean_acc - 0.1, (photo_acc, clean_acc)


def _trained_on_real(tmp_path: Path, real_data: Path) -> Path:
    """A small model trained for one epoch on 6,000 real MNIST images (about 10 s on one core)."""
    from mnist_cnn.training.config import TrainConfig
    from mnist_cnn.training.engine import train

    cfg = TrainConfig(data_dir=str(real_data), epochs=1, batch_size=64, val_size=500, train_subset=6000)
    return train(cfg, tmp_path / "real-run", quiet=True).run_dir


# --------------------------------------------------------------------------- calibrated probabilities, unsure


def test_torch_predictor_divides_the_logits_by_the_models_temperature(run_dir: Path) -> None:
    from mnist_cnn.evaluation.metrics import predict_logits

    p = load_predictor(run_dir)
    assert p.temperature == p.meta["calibration"]["temperature"] and p.info["calibration"]["method"] == "temperature"
    x = np.random.default_rng(3).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    n = p.meta["normalisation"]
    logits = predict_logits(p.model, x, n["mean"], n["std"]).numpy()
    np.testing.assert_allclose(p.predict_proba(x), softmax(logits / p.temperature), atol=1e-6)


def test_predictions_below_the_threshold_are_unsure(run_dir: Path) -> None:
    from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE

    p = load_predictor(run_dir)
    img = digit_image(1)
    (default,) = p.predict(img)
    assert default.unsure is (default.probability < DEFAULT_MIN_CONFIDENCE)
    assert p.predict(img, min_confidence=0.0)[0].unsure is False
    (always,) = p.predict(img, min_confidence=1.0)
    assert always.unsure is True and always.to_dict()["unsure"] is True  # 1: always unsure (float32 rounds to 1.0)


def test_predict_min_confidence_text_and_json(run_dir: Path, images: Path) -> None:
    sure = run_cli("predict", str(images / "a.png"), "--model", str(run_dir), "--min-confidence", "0", "--json")
    assert sure.exit_code == 0, sure.stderr
    assert json.loads(sure.stdout)["unsure"] is False
    unsure = run_cli("predict", str(images / "a.png"), "--model", str(run_dir), "--min-confidence", "1", "--json")
    rec = json.loads(unsure.stdout)
    assert rec["unsure"] is True  # 1: always unsure
    if rec["unsure"]:
        text = run_cli("predict", str(images / "a.png"), "--model", str(run_dir), "--min-confidence", "1").stdout
        first, second = (t["label"] for t in rec["top_k"][:2])
        assert f": unsure: {first} or {second}? (" in text
    bad = run_cli("predict", str(images / "a.png"), "--model", str(run_dir), "--min-confidence", "1.5")
    assert bad.exit_code == 2 and "--min-confidence" in bad.stderr and "Traceback" not in bad.stderr


def test_predict_files_marks_unsure_itself(run_dir: Path, images: Path, tmp_path: Path) -> None:
    """The library marks ``unsure`` (one threshold, ``is_unsure``), not the CLI afterwards."""
    from mnist_cnn.inference.batch import predict_files
    from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE

    p = load_predictor(run_dir)
    files = [images / "a.png", tmp_path / "missing.png"]
    (rec, failed) = predict_files(p, files)
    assert rec["unsure"] is (rec["probability"] < DEFAULT_MIN_CONFIDENCE)
    assert "error" in failed and "unsure" not in failed
    assert predict_files(p, files[:1], min_confidence=0.0)[0]["unsure"] is False
    assert predict_files(p, files[:1], min_confidence=1.0)[0]["unsure"] is True
    from mnist_cnn.inference.reader import NumberReader

    reader = NumberReader(tiny_reader(tmp_path))
    row = predict_files(p, [images / "a.png"], multi=True, min_confidence=1.0, reader=reader)[0]
    assert row["unsure"] is True and row["rows"][0]["unsure"] is True and row["reason"]


def noisy_digit_png(path: Path, ink: int, sigma: float, seed: int = 0) -> Path:
    """:func:`digit_png` on textured paper: noise of ``sigma`` grey levels in 4x4-pixel blotches."""
    a = np.asarray(Image.open(digit_png(path, ink=ink)), dtype=np.float64)  # [180, 200]
    a = a + np.kron(np.random.default_rng(seed).normal(0.0, sigma, (45, 50)), np.ones((4, 4)))
    Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).save(path)
    return path


def test_faint_ink_is_less_sure_under_a_contrast_power_in_every_path(run_dir: Path, tmp_path: Path) -> None:
    """``calibration.contrast_power``: a photo's temperature is T * (255 / signal) ** power, signal the
    ink's contrast over the paper's noise, in ``Predictor.predict``, ``predict`` (files, CLI) and the
    server alike; tensors, and a dim digit on clean paper, keep T."""
    import shutil

    from fastapi.testclient import TestClient

    from mnist_cnn.models.files import write_calibration
    from mnist_cnn.serving.app import create_app

    model = tmp_path / "m.safetensors"
    shutil.copy(run_dir / "model.safetensors", model)
    plain = load_predictor(run_dir)
    write_calibration(model, {**plain.meta["calibration"], "contrast_power": 1.5})
    faint_ink = load_predictor(model)
    assert plain.contrast_power == 0.0 and faint_ink.contrast_power == 1.5
    assert faint_ink.temperature == plain.temperature  # same T: only photos change
    bold, faint = noisy_digit_png(tmp_path / "bold.png", 0, 8.0), noisy_digit_png(tmp_path / "faint.png", 215, 8.0)
    dim = digit_png(tmp_path / "dim.png", ink=185)  # faint too, but on clean paper: nothing is lost
    x = np.random.default_rng(4).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert [a.probability for a in faint_ink.predict(x)] == [a.probability for a in plain.predict(x)]
    assert faint_ink.predict(dim)[0].probability == pytest.approx(plain.predict(dim)[0].probability, abs=1e-6)
    (a_bold,), (a_faint,) = faint_ink.predict(bold), faint_ink.predict(faint)
    (p_bold,), (p_faint,) = plain.predict(bold), plain.predict(faint)
    assert a_faint.digit == p_faint.digit and a_faint.probability < p_faint.probability  # lost in noise: less sure
    assert p_faint.probability - a_faint.probability > 2 * abs(p_bold.probability - a_bold.probability)
    rec = json.loads(run_cli("predict", str(faint), "--model", str(model), "--json").stdout)
    assert rec["probability"] == pytest.approx(a_faint.probability, abs=1e-6)
    with TestClient(create_app(faint_ink)) as client:
        r = client.post("/api/predict", files={"file": ("faint.png", faint.read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["probability"] == pytest.approx(a_faint.probability, abs=1e-6)
