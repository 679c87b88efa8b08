"""Every command that prints results accepts --json and prints one parseable JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli, tiny_run, tiny_train_argv


def _json(*args: str) -> object:
    r = run_cli(*args, "--json")
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)


def test_listing_commands(tiny_data: Path):
    assert {m["name"] for m in _json("models")} >= {"model1", "model2", "bncnn"}
    assert {r["name"] for r in _json("recipes")} == {"seed", "fast99", "fast995", "best"}
    info = _json("data", "info", "--data-dir", str(tiny_data))
    assert info["splits"]["train"]["images"] == 600 and sum(info["splits"]["test"]["per_class"]) == 200
    rows = _json("data", "verify", "--data-dir", str(tiny_data))
    assert len(rows) == 4 and all(r["official"] is False for r in rows)


def test_train_evaluate_ensemble(tiny_data: Path, tmp_path: Path):
    out = tmp_path / "run"
    m = _json(*tiny_train_argv(tiny_data, out, "--quiet"))
    assert m["run"] == str(out) and 0 <= m["test_accuracy"] <= 1 and m["epochs_run"] == 1
    e = _json("evaluate", str(out), "--data-dir", str(tiny_data))
    assert e["accuracy"] == pytest.approx(m["test_accuracy"])
    second = tiny_run(tmp_path, tiny_data, "second", epochs=1, seed=1)
    ens = _json("ensemble", str(out), str(second.run_dir), "--out", str(tmp_path / "ens"), "--data-dir", str(tiny_data))
    assert ens["members"] == 2


def test_report_commands(tiny_data: Path, tmp_path: Path):
    run = tiny_run(tmp_path, tiny_data, epochs=1)
    ex = _json("explore", "--data-dir", str(tiny_data), "--val-size", "100", "--out", str(tmp_path / "ex"))
    assert ex["report"].endswith("explore.html") and "train_vs_test" in ex
    ep = _json(
        "explain",
        str(run.run_dir),
        "--data-dir",
        str(tiny_data),
        "--random",
        "2",
        "--ig-steps",
        "4",
        "--out",
        str(tmp_path / "ep"),
    )
    assert ep["n_test"] == 200
    cmp = _json(
        "compare",
        str(run.run_dir),
        str(tiny_run(tmp_path, tiny_data, "b", epochs=1, seed=1).run_dir),
        "--out",
        str(tmp_path / "cmp"),
    )
    assert cmp["report"].endswith("compare.html") and cmp["pairs"]


def test_export_json(tmp_path: Path):
    pytest.importorskip("onnxscript")
    r = _json("export", "default", "--out", str(tmp_path / "m.onnx"), "--no-verify")
    assert r["file"].endswith("m.onnx") and r["size_bytes"] > 0 and r["parity"] is None


def test_predict_json_lines(tmp_path: Path):
    from tests.helpers import digit_image

    for i in range(2):
        digit_image(i).save(tmp_path / f"{i}.png")
    r = run_cli("predict", str(tmp_path), "--json")
    assert r.exit_code == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 2 and all("digit" in row for row in rows)
