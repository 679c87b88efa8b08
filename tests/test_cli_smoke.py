import json

from tests.helpers import TINY_FLAGS, run_cli


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.exit_code == 0
    for cmd in ("train", "evaluate", "models", "data"):
        assert cmd in r.stdout


def test_train_and_evaluate_end_to_end(tiny_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        "--data-dir",
        str(tiny_data),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--val-size",
        "100",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.stdout
    for name in (
        "config.json",
        "history.csv",
        "model.safetensors",
        "metrics.json",
        "classification_report.txt",
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "history.png",
    ):
        assert (out / name).exists(), name
    r = run_cli("evaluate", str(out), "--data-dir", str(tiny_data))
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.stdout
    # ECE and NLL before -> after the run's temperature, the same figures as --json's "calibration"
    cal = json.loads(run_cli("evaluate", str(out), "--data-dir", str(tiny_data), "--json").stdout)["calibration"]
    assert f"temperature {cal['temperature']:.4f}" in r.stdout
    assert f"ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}" in r.stdout
    assert f"NLL {cal['nll_before']:.4f} -> {cal['nll_after']:.4f}" in r.stdout


def test_existing_run_dir_is_not_overwritten(tiny_data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = run_cli("train", "--data-dir", str(tiny_data), "--epochs", "1", "--out", str(out), "--quiet")
    assert r.exit_code != 0
    assert "already exists" in r.stderr and "--resume" in r.stderr
    assert (out / "keep.txt").read_text() == "precious"


def test_precision_and_compile_flags_reach_the_saved_config(tiny_data, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train",
        "--data-dir",
        str(tiny_data),
        *TINY_FLAGS,
        "--precision",
        "fp32",
        "--no-compile",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert cfg["precision"] == "fp32" and cfg["compile"] is False
    r = run_cli("train", "--data-dir", str(tiny_data), "--precision", "fp16", "--out", str(tmp_path / "x"))
    assert r.exit_code != 0 and "--precision" in r.stderr
