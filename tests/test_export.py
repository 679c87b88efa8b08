"""ONNX export: graph contract (names, dynamic batch, normalisation inside), checker, metadata, parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript", reason="the dynamo ONNX exporter needs onnxscript (pip install 'mnist-cnn[export]')")

from mnist_cnn.inference import export as ex
from mnist_cnn.inference.onnx import read_onnx_metadata
from mnist_cnn.models.registry import create_model, list_models
from tests.conftest import write_dataset
from tests.helpers import run_cli, tiny_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ex.ExportResult]:
    """(data folder, run folder, export result): one tiny run exported once for the module."""
    root = tmp_path_factory.mktemp("export")
    data = write_dataset(root / "data")
    run = tiny_run(root, data).run_dir
    result = ex.export_onnx(run, root / "model.onnx", data_dir=data)
    return data, run, result


def test_parity_on_synthetic_test_split(exported) -> None:
    _, _, r = exported
    assert r.parity is not None and r.parity.n == 200 and "test split" in r.parity.images
    assert r.parity.max_abs_logit_diff <= 1e-4
    assert r.parity.same_argmax == 1.0


def test_graph_contract_and_checker(exported) -> None:
    import onnx

    _, _, r = exported
    proto = onnx.load(str(r.path))
    onnx.checker.check_model(proto, full_check=True)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("images", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # symbolic batch axis
    assert [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_dynamic_batch_and_normalisation_inside(exported) -> None:
    """Any batch size runs, and feeding uint8/255 gives the torch model's logits on normalised input,
    divided by its calibration temperature."""
    from mnist_cnn.evaluation.metrics import predict_logits
    from mnist_cnn.models.files import load_model, temperature_of

    _, run, r = exported
    model, meta = load_model(run)
    t = temperature_of(meta, run)
    assert t != 1.0  # the tiny run was calibrated: the division is really tested
    session = ex.onnx_session(r.path, threads=1)
    rng = np.random.default_rng(1)
    for n in (1, 3, 17):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        (got,) = session.run(None, {"images": ex.onnx_input(x)})
        want = predict_logits(model, x, meta["normalisation"]["mean"], meta["normalisation"]["std"]).numpy() / t
        assert got.shape == (n, len(meta["classes"]))
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_metadata_holds_classes_source_accuracy(exported) -> None:
    _, run, r = exported
    meta = read_onnx_metadata(r.path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert meta["classes"] == [str(i) for i in range(10)]
    assert meta["source"] == str(run / "model.safetensors")
    assert meta["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert meta["arch"]["name"] == "model1" and set(meta["normalisation"]) == {"mean", "std"}
    assert meta["input"]["range"] == [0.0, 1.0]


def test_onnx_and_torch_give_the_same_calibrated_probabilities(exported) -> None:
    from mnist_cnn.inference.predictors import load_predictor

    _, run, r = exported
    torch_p, onnx_p = load_predictor(run), load_predictor(r.path)
    meta = read_onnx_metadata(r.path)
    assert meta["calibration"]["in_graph"] is True
    assert meta["calibration"]["temperature"] == pytest.approx(torch_p.temperature)
    assert meta["output"]["kind"] == "logits / temperature"
    assert onnx_p.info["calibration"]["temperature"] == pytest.approx(torch_p.temperature)
    x = np.random.default_rng(2).integers(0, 256, size=(64, 28, 28), dtype=np.uint8)
    np.testing.assert_allclose(onnx_p.predict_proba(x), torch_p.predict_proba(x), atol=1e-5)


def test_a_contrast_power_travels_with_the_export_and_applies_outside_the_graph(exported, tmp_path: Path) -> None:
    import shutil

    from PIL import Image, ImageDraw

    from mnist_cnn.inference.predictors import load_predictor
    from mnist_cnn.models.files import write_calibration

    data, run, _ = exported
    model = tmp_path / "m.safetensors"
    shutil.copy(run / "model.safetensors", model)
    write_calibration(model, {**load_predictor(run).meta["calibration"], "contrast_power": 1.2})
    out = ex.export_onnx(model, tmp_path / "m.onnx", data_dir=data)
    cal = read_onnx_metadata(out.path)["calibration"]
    assert cal["contrast_power"] == 1.2 and "(255 / s) ** contrast_power" in cal["outside_graph"]
    img = Image.new("L", (200, 180), 255)
    ImageDraw.Draw(img).line([(60, 40), (140, 40), (90, 150)], fill=215, width=12)  # faint ink ...
    noise = np.kron(np.random.default_rng(0).normal(0.0, 8.0, (45, 50)), np.ones((4, 4)))  # ... on textured paper
    img = Image.fromarray(np.clip(np.rint(np.asarray(img, dtype=np.float64) + noise), 0, 255).astype(np.uint8))
    torch_p, onnx_p = load_predictor(model), load_predictor(out.path)
    assert onnx_p.contrast_power == 1.2
    (a,), (b,), (plain,) = torch_p.predict(img), onnx_p.predict(img), load_predictor(run).predict(img)
    assert a.digit == b.digit and b.probability == pytest.approx(a.probability, abs=1e-5)
    assert b.probability < plain.probability


def test_failed_parity_leaves_no_file(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, run, _ = exported
    monkeypatch.setattr(ex, "PARITY_TOLERANCE", -1.0)  # nothing can pass: the export must refuse
    out = tmp_path / "refused.onnx"
    with pytest.raises(ex.ExportError, match="differs from PyTorch"):
        ex.export_onnx(run, out, data_dir=data, max_images=20)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_export(exported, tmp_path: Path) -> None:
    data, run, _ = exported
    out = tmp_path / "cli.onnx"
    res = run_cli("export", str(run), "--out", str(out), "--data-dir", str(data), "--verify-images", "50")
    assert res.exit_code == 0, res.stderr
    assert out.exists() and "parity on 50 mnist test split" in res.stdout and "max |logit diff|" in res.stdout


@pytest.mark.parametrize("out_name, message", [("model.txt", "must end in .onnx"), ("x.onnx", "no such run folder")])
def test_cli_export_errors(tmp_path: Path, out_name: str, message: str) -> None:
    res = run_cli("export", str(tmp_path / "missing-run"), "--out", str(tmp_path / out_name))
    assert res.exit_code != 0 and message in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / out_name).exists()


def test_read_metadata_of_a_non_onnx_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(ex.ExportError):
        read_onnx_metadata(bad)


@pytest.mark.integration
@pytest.mark.slow  # trains on 3,000 real images, then checks all 10,000 test images
def test_parity_on_real_mnist_test_set(real_data: Path, tmp_path: Path) -> None:
    """A model trained briefly on real MNIST: ONNX Runtime matches PyTorch on all 10,000 test images."""
    run = tiny_run(tmp_path, real_data, epochs=1, train_subset=3000, val_size=500, batch_size=128)
    r = ex.export_onnx(run.run_dir, tmp_path / "m.onnx", data_dir=real_data)
    assert r.parity is not None and r.parity.n == 10_000
    assert r.parity.max_abs_logit_diff <= 1e-4 and r.parity.same_argmax == 1.0


def test_a_server_sessions_threads_sleep_between_requests(exported) -> None:
    """ONNX Runtime's intra-op threads spin while idle by default (fine for back-to-back batches);
    the server's session, which mostly waits for requests, turns that off."""
    from mnist_cnn.serving.server import load_predictor_for_serving

    _, _, r = exported
    key = "session.intra_op.allow_spinning"
    served = load_predictor_for_serving(str(r.path), threads=2)
    assert served.session.get_session_options().get_session_config_entry(key) == "0"
    batch = ex.onnx_session(r.path, threads=2).get_session_options()
    with pytest.raises(RuntimeError, match="does not have configuration"):  # unset: ORT's default, spinning
        batch.get_session_config_entry(key)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_exports_and_matches_onnxruntime(name: str) -> None:
    """timm-style: a newly registered architecture is checked in a second runtime for free."""
    import onnxruntime as ort
    import torch

    torch.manual_seed(0)
    model = create_model(name).eval()
    norm = {"mean": 0.1307, "std": 0.3081}
    proto = ex.build_onnx(model, norm, {"arch": {"name": name}})
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        want = model((x - norm["mean"]) / norm["std"]).numpy()
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
