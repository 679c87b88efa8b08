"""The number reader's benchmark (benchmarks/number_reading.py, number_scoring.py): how a wrong reading is classified,
which row is judged, the calibration error, and the whole command on a tiny untrained reader and a
tiny fake MNIST (its figures are meaningless; the JSON must hold them all)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks import number_reading as nr
from benchmarks import number_scoring as ns

APART = [[0, 0, 10, 20], [14, 0, 24, 20], [28, 0, 38, 20], [42, 0, 52, 20]]  # ink boxes with gaps
FIRST_TWO_TOUCH = [[0, 0, 12, 20], [10, 0, 24, 20], [28, 0, 38, 20], [42, 0, 52, 20]]  # digits 0 and 1 overlap


@pytest.mark.parametrize(
    ("true", "read", "boxes", "kind"),
    [
        ("1928", "1928", APART, None),
        ("1928", "128", APART, "missing"),  # the 9 dropped
        ("1928", "19288", APART, "extra"),  # an 8 inserted
        ("1928", "1828", APART, "misread"),  # 9 read as 8
        ("1928", "1837", APART, "misread"),
        ("4711", "911", APART, "merged"),  # 4 and 7 read as one 9: deletion next to a substitution
        ("4711", "411", FIRST_TWO_TOUCH, "merged"),  # the touching 4 and 7 read as one 4
        ("4711", "411", APART, "missing"),  # the same strings, the digits apart: the 7 was dropped
        ("4711", "411", None, "missing"),  # no boxes: strings alone
        ("1928", None, APART, "no_digit"),
        ("0712", "712", APART, "missing"),  # a leading zero dropped is a digit missing
        ("1928", "1", APART, "missing"),  # several dropped, none next to a substitution or touching
        ("1928", "9281", APART, "missing"),  # a deletion and an insertion: classified as missing first
    ],
)
def test_failure_kinds(true: str, read: str | None, boxes: list | None, kind: str | None) -> None:
    assert ns.classify(true, read, boxes)["kind"] == kind


def test_matches_and_edits_come_from_the_alignment() -> None:
    out = ns.classify("1928", "128", APART)
    assert out["matches"] == 3 and out["edits"] == {
        "substitutions": 0,
        "deletions": 1,
        "insertions": 0,
        "merged_pairs": 0,
    }
    out = ns.classify("4711", "911", APART)
    assert out["matches"] == 2 and out["edits"]["merged_pairs"] == 1
    assert ns.classify("1928", "19288", APART)["matches"] == 4
    assert ns.classify("1928", None, APART) == {
        "kind": "no_digit",
        "matches": 0,
        "edits": {"substitutions": 0, "deletions": 4, "insertions": 0, "merged_pairs": 0},
    }
    assert [op for op, _, _ in ns.align("1928", "128")] == ["=", "del", "=", "="]
    assert [op for op, _, _ in ns.align("12", "")] == ["del", "del"]
    assert [op for op, _, _ in ns.align("", "7")] == ["ins"]


def test_the_row_over_the_true_digits_is_judged() -> None:
    rows = [
        SimpleNamespace(bbox=(0, 0, 50, 10)),
        SimpleNamespace(bbox=(0, 30, 60, 60)),
        SimpleNamespace(bbox=(0, 70, 9, 80)),
    ]
    assert nr.pick_row(rows, [[5, 32, 20, 58], [25, 32, 40, 58]]) == 1
    assert nr.pick_row(rows, [[100, 100, 110, 110]]) == 0  # nothing overlaps: the top row


def test_ece_and_the_summary() -> None:
    assert ns.ece(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.0
    assert ns.ece(np.array([0.9, 0.9, 0.9, 0.9]), np.array([1.0, 0.0, 1.0, 0.0])) == pytest.approx(0.4)

    def rec(true: str, read: str | None, p: float, unsure: bool, rows: int = 1) -> dict:
        return {
            "true": true,
            "read": read,
            "probability": p,
            "unsure": unsure,
            "rows": rows,
            "seconds": 0.1,
            "condition": "spaced",
            **ns.classify(true, read),
        }

    s = ns.summarise(
        [
            rec("12", "12", 0.95, False),
            rec("34", "34", 0.95, False, rows=2),
            rec("567", "57", 0.3, True),
            rec("89", None, 0.0, True),
        ]
    )
    assert s["n"] == 4 and s["exact"] == 0.5 and s["exact_strict"] == 0.25 and s["extra_rows"] == 1
    assert s["digits"] == pytest.approx(6 / 9)
    assert s["failures"] == {"no_digit": 1, "merged": 0, "missing": 1, "extra": 0, "misread": 0}
    c = s["calibration"]
    assert c["accuracy_at_90"] == 1.0 and c["coverage_at_90"] == 0.5 and c["n_at_90"] == 2
    assert c["accuracy_not_unsure"] == 1.0 and c["share_not_unsure"] == 0.5
    assert s["by_length"][2] == {"n": 3, "exact": pytest.approx(2 / 3)}


def test_targets_are_judged() -> None:
    figures = {
        "exact": 0.98,
        "digits": 0.99,
        "touching_exact": None,
        "min_condition_exact": 0.95,
        "accuracy_at_90": 0.97,
        "ece": 0.05,
        "big_p50_s": 0.1,
    }
    met = {t["key"]: t["met"] for t in ns.judge(figures)}
    assert met == {
        "exact": True,
        "digits": False,
        "touching_exact": None,
        "min_condition_exact": True,
        "accuracy_at_90": True,
        "ece": False,
        "big_p50_s": True,
    }


def test_main_writes_every_figure_as_json(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The whole command on an untrained reader: 2 numbers in each of 2 conditions, the figure, a small
    'big' photo; the JSON holds each condition's figures, the pooled ones, the targets and the machine."""
    from mnist_cnn.models.reader import Crnn, save_reader

    torch.manual_seed(0)
    reader = tmp_path / "reader.safetensors"
    save_reader(reader, Crnn(width=4, hidden=8), {"temperature": 1.0})
    out, png = tmp_path / "numbers.json", tmp_path / "examples.png"
    nr.main(
        [
            "--reader",
            str(reader),
            "--data-dir",
            str(tiny_data),
            "--n",
            "2",
            "--conditions",
            "touching",
            "jpeg",
            "--out",
            str(out),
            "--examples",
            str(png),
            "--big",
            "--big-size",
            "400x300",
            "--big-repeats",
            "2",
        ]
    )
    d = json.loads(out.read_text())
    assert list(d["conditions"]) == ["touching", "jpeg"]
    assert len(d["reader"]["temperature"]) == len(d["reader"]["args"]) == 1  # one per member
    for s in [*d["conditions"].values(), d["combined"], d["touching"]]:
        assert {
            "n",
            "exact",
            "exact_strict",
            "digits",
            "failures",
            "edits",
            "extra_rows",
            "calibration",
            "speed",
            "by_length",
        } <= set(s)
        assert set(s["failures"]) == set(ns.KINDS) and 0.0 <= s["exact"] <= 1.0 and 0.0 <= s["digits"] <= 1.0
        assert {"ece", "accuracy_at_90", "coverage_at_90", "accuracy_not_unsure"} <= set(s["calibration"])
        assert s["speed"]["median_s"] > 0 and s["speed"]["p95_s"] >= s["speed"]["median_s"]
    assert d["combined"]["n"] == 4 and d["touching"]["n"] == 2
    assert d["combined"]["n"] - round(d["combined"]["n"] * d["combined"]["exact"]) == sum(
        d["combined"]["failures"].values()
    )
    assert d["big"]["size"] == [400, 300] and d["big"]["repeats"] == 2 and d["big"]["p50_s"] > 0
    assert [t["key"] for t in d["targets"]] == [key for _, key, _, _ in ns.TARGETS]
    assert len(d["reader"]["sha256"]) == 64 and d["split"] == "test" and d["seed"] == 2 and d["threads"] == 1
    assert "--n" in d["command"] and d["machine"]["cpu"] and isinstance(d["machine"]["isa"], list)
    assert png.stat().st_size > 0
    printed = capsys.readouterr().out
    assert "combined" in printed and "targets:" in printed and ("met" in printed or "missed" in printed)


def test_the_numbers_are_seeded_and_cover_the_lengths() -> None:
    images = np.zeros((50, 28, 28), np.uint8)
    images[:, 8:20, 12:16] = 255  # a bar: enough ink for every digit
    labels = np.arange(50) % 10
    a = nr.render_numbers(images, labels, "spaced", 12, seed=3)
    b = nr.render_numbers(images, labels, "spaced", 12, seed=3)
    assert [x[0] for x in a] == [x[0] for x in b]
    assert all(2 <= len(info["text"]) <= 8 for _, info in a)
    assert len({len(info["text"]) for _, info in a}) > 2
    assert all(len(info["boxes"]) == len(info["text"]) for _, info in a)
