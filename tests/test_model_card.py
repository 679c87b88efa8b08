"""The default model's card (src/mnist_cnn/pretrained/README.md): generated from default.json and the
results files by tools/model_card.py (so it cannot go stale), parseable metadata, packaged, served
at /api/model and printed by `mnist-cnn models --default`."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

from mnist_cnn.artifacts.runs import DEFAULT_MODEL, MODEL_CARD, card_for, model_card
from mnist_cnn.errors import CheckpointError
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = REPO / "src" / "mnist_cnn" / "pretrained"

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no default model bundled")


def _tool():
    spec = importlib.util.spec_from_file_location("model_card_tool", REPO / "tools" / "model_card.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prov() -> dict:
    return json.loads((PRETRAINED / "default.json").read_text())


def test_the_committed_card_is_what_the_generator_writes():
    """Retraining, re-calibrating or re-running a benchmark without `python tools/model_card.py` fails here."""
    assert MODEL_CARD.read_text(encoding="utf-8") == _tool().current(), "run: python tools/model_card.py"


def test_card_metadata_parses_and_its_figures_are_default_json_s():
    prov, card = _prov(), model_card()
    meta = card["card_metadata"]
    assert meta["license"] == "mit" and meta["datasets"] == ["mnist"] and meta["library_name"] == "mnist-cnn"
    assert {"image-classification", "mnist"} <= set(meta["tags"]) and "accuracy" in meta["metrics"]
    (entry,) = meta["model-index"]
    by_split = {r["dataset"]["split"]: {m["type"]: m["value"] for m in r["metrics"]} for r in entry["results"]}
    assert by_split["test"]["accuracy"] == prov["test_accuracy"]
    assert by_split["validation"]["accuracy"] == prov["val_accuracy"]
    assert meta["mnist_cnn"]["sha256"] == prov["sha256"]
    assert meta["mnist_cnn"]["temperature"] == prov["calibration"]["temperature"]
    # the text shows the same figures, and every section the card promises
    text = card["card"]
    assert f"**{100 * prov['test_accuracy']:.2f}%**" in text and f"T = {prov['calibration']['temperature']:.3f}" in text
    for section in ("Intended use", "Metrics", "Calibration", "Photo conditions", "Limitations"):
        assert f"## {section}" in text or f"### {section}" in text, section
    for section in ("Training data and provenance", "Licence", "How to reproduce"):
        assert f"## {section}" in text, section
    assert "unsure" in text and "--min-confidence" in text and "2.8%" in text and prov["command"] in text


def test_the_metadata_is_yaml_too():
    """Hugging Face reads the front matter as YAML: the JSON written there must mean the same in YAML."""
    yaml = pytest.importorskip("yaml")
    head = MODEL_CARD.read_text(encoding="utf-8").split("\n---\n", 1)[0].removeprefix("---\n")
    assert yaml.safe_load(head) == model_card()["card_metadata"]


def test_wilson_interval_and_stale_results_are_left_out():
    tool = _tool()
    lo, hi = tool.wilson(9972, 10_000)
    assert lo == pytest.approx(0.99603, abs=1e-4) and hi == pytest.approx(0.99806, abs=1e-4)
    assert tool.wilson(10, 10)[1] == pytest.approx(1.0) and tool.wilson(0, 10)[0] == pytest.approx(0.0)
    # after retraining, results measured on the old weights are not shown as the new model's
    prov = copy.deepcopy(_prov())
    prov["sha256"] = "0" * 64
    prov["calibration"]["temperature"] = 0.75
    calibration = json.loads((REPO / "benchmarks" / "results" / "calibration-default.json").read_text())
    photos = json.loads((REPO / "benchmarks" / "results" / "photo-testset-default.json").read_text())
    text = tool.render(prov, calibration, photos)
    assert "Filled in when the photo benchmark lands" in text and "not measured for these weights yet" in text
    assert "| `thin_pen` |" not in text and "UCI optical digits as" not in text


def test_card_for_only_the_default_model(tmp_path: Path):
    assert card_for(DEFAULT_MODEL) == model_card() and card_for(None) == {"card": None, "card_metadata": None}
    assert card_for(tmp_path / "model.safetensors")["card"] is None
    bad = tmp_path / "README.md"
    bad.write_text("# no metadata\n")
    with pytest.raises(CheckpointError, match=r"README.md: the card does not open with '---' metadata; regenerate"):
        model_card(bad)
    bad.write_text("---\n{not json\n---\n# card\n")
    fix = r"regenerate it \(tools/model_card.py\)"
    with pytest.raises(CheckpointError, match=r"metadata is not valid JSON \(.*, line 2\); " + fix):
        model_card(bad)


def test_models_default_prints_the_card_and_its_json():
    text = run_cli("models", "--default")
    assert text.exit_code == 0, text.stderr
    assert text.stdout.strip() == model_card()["card"].strip() and not text.stdout.startswith("---")
    as_json = run_cli("models", "--default", "--json")
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout) == model_card()


def test_api_model_serves_the_card():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mnist_cnn.serving.server import load_app

    m = TestClient(load_app("default")).get("/api/model").json()
    assert m["card"] == model_card()["card"] and m["card_metadata"] == model_card()["card_metadata"]
    assert re.search(r"MNIST test .*\*\*99\.\d\d%\*\*", m["card"])


def test_the_card_is_packaged():
    """pyproject's package-data ships pretrained/* (the card included) in the wheel."""
    package_data = re.search(r"^mnist_cnn = \[(.*)\]$", (REPO / "pyproject.toml").read_text(), re.M)
    assert package_data and '"pretrained/*"' in package_data.group(1)
    assert MODEL_CARD.parent == DEFAULT_MODEL.parent and MODEL_CARD.name == "README.md"


def test_the_reader_section_describes_each_member_of_an_ensemble(tmp_path: Path):
    from mnist_cnn.models.reader import Crnn, save_reader, save_readers

    def member(seed: int) -> dict:
        return {"temperature": 1.1 + seed / 100, "training": {"rows": 1000 + seed, "seed": seed, "best_epoch": 3}}

    save_reader(tmp_path / "reader.safetensors", Crnn(width=4, hidden=8), member(21))
    one = _tool().reader_section(tmp_path, None)
    assert "a CRNN:" in one and "It was trained on 1,021 rows" in one and "Member" not in one
    members = [(Crnn(width=4, hidden=8), member(21)), (Crnn(width=4, hidden=8), member(31))]
    save_readers(tmp_path / "reader.safetensors", members, {"calibration": {"photos": 15}})
    two = _tool().reader_section(tmp_path, None)
    assert "an ensemble of 2 CRNNs" in two and "geometric mean" in two
    assert "Member 1 was trained on 1,021 rows" in two and "Member 2 was trained on 1,031 rows" in two
    assert "(1.310)" in two and "calibrated end to end on 15 validation photos" in two
    assert "shifted by half a strip" not in two
    save_readers(tmp_path / "reader.safetensors", members, {"decoding": {"shifted_view": True}})
    assert "shifted by half a strip" in _tool().reader_section(tmp_path, None)
