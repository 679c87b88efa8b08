"""The public Python API (mnist_cnn.__all__) as a Keras or PyTorch user meets it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mnist_cnn
from mnist_cnn.errors import CheckpointError, ImageError
from mnist_cnn.inference.inputs import as_batch, split_items
from tests.conftest import synthetic_digits
from tests.helpers import digit_image, tiny_run


def test_all_names_resolve_and_nothing_else_is_promised():
    for name in mnist_cnn.__all__:
        assert getattr(mnist_cnn, name) is not None, name
    assert set(mnist_cnn.__all__) >= {
        "create_model",
        "load_model",
        "load_predictor",
        "train",
        "evaluate",
        "TrainConfig",
        "list_models",
        "__version__",
    }
    with pytest.raises(AttributeError):
        mnist_cnn.no_such_name  # noqa: B018
    assert mnist_cnn.__version__ == "0.2.0"


def test_load_model_default_is_the_bundled_model():
    model, meta = mnist_cnn.load_model("default")
    assert not model.training and meta["arch"]["name"] and len(meta["classes"]) == 10


def test_load_model_refuses_a_model_file_format_from_the_future(tmp_path: Path):
    from safetensors.torch import load_file

    from mnist_cnn.artifacts.files import load_tensors, save_tensors
    from mnist_cnn.artifacts.runs import DEFAULT_MODEL

    _, meta = load_tensors(DEFAULT_MODEL)
    future = tmp_path / "future.safetensors"
    save_tensors(future, load_file(DEFAULT_MODEL), {**meta, "format": "mnist-cnn/99"})
    with pytest.raises(CheckpointError, match=r"format 'mnist-cnn/99' is not 'mnist-cnn/1'.*upgrade mnist-cnn"):
        mnist_cnn.load_model(future)
    del meta["format"]  # files from before the field existed still load
    old = tmp_path / "old.safetensors"
    save_tensors(old, load_file(DEFAULT_MODEL), meta)
    assert mnist_cnn.load_model(old)[1]["arch"] == meta["arch"]


def test_predict_on_keras_style_arrays_matches_predict_proba(tiny_data: Path, tmp_path: Path):
    run = tiny_run(tmp_path, tiny_data)
    predictor = mnist_cnn.load_predictor(run.run_dir)
    x, _ = synthetic_digits(6, seed=5)
    probs = predictor.predict_proba(x)
    for batch in (x, x.astype(np.float32) / 255.0, [x[i] for i in range(6)]):
        preds = predictor.predict(batch, top_k=2)
        assert [p.digit for p in preds] == probs.argmax(1).tolist()
        assert np.allclose([p.probability for p in preds], probs.max(1), atol=1e-3)
        assert all(len(p.top_k) == 2 and p.top_k[0][0] == p.label for p in preds)
    one = predictor.predict(x[0])[0]
    assert one.to_dict()["digit"] == one.digit and json.dumps(one.to_dict())


def test_predict_on_photos_pil_images_and_paths():
    predictor = mnist_cnn.load_predictor("default")
    img = digit_image(3)  # a drawn digit on a large canvas
    path = Path(__import__("tempfile").mkdtemp()) / "d.png"
    img.save(path)
    by_pil, by_path, by_array = (predictor.predict(v)[0] for v in (img, path, np.asarray(img.convert("RGB"))))
    assert by_pil.digit == by_path.digit == by_array.digit
    assert 0.0 < by_pil.probability <= 1.0


def test_input_shapes_are_read_as_documented():
    assert len(split_items(np.zeros((5, 28, 28), np.uint8))) == 5  # a batch of MNIST images
    assert len(split_items(np.zeros((28, 28, 3), np.uint8))) == 1  # one colour image
    assert len(split_items(np.zeros((2, 40, 30, 3), np.uint8))) == 2  # a batch of colour photos
    assert as_batch(np.full((28, 28), 1.0, np.float32)).max() == 255  # float 0..1 is scaled
    assert as_batch([]).shape == (0, 28, 28)
    with pytest.raises(ImageError, match="expected"):
        as_batch(np.zeros((2, 2, 28, 28, 1)))
    with pytest.raises(ImageError, match="cannot read"):
        as_batch([object()])
    with pytest.raises(ImageError, match="28x28"):
        as_batch(np.zeros((40, 40), np.uint8), preprocess=False)


def test_evaluate_is_the_cli_evaluate(tiny_data: Path, tmp_path: Path):
    run = tiny_run(tmp_path, tiny_data)
    m = mnist_cnn.evaluate(run.run_dir, data_dir=tiny_data)
    assert m["accuracy"] == pytest.approx(run.metrics["test_accuracy"]) and m["n"] == 200


def test_create_model_and_list_models():
    names = mnist_cnn.list_models()
    assert "model1" in names and "bncnn" in names
    model = mnist_cnn.create_model("model1", init="keras")
    assert sum(p.numel() for p in model.parameters()) == 110_474


def test_pil_image_of_the_wrong_kind_is_an_image_error():
    predictor = mnist_cnn.load_predictor("default")
    with pytest.raises(ImageError):
        predictor.predict(Image.new("L", (64, 64), 255))  # blank page: no digit
