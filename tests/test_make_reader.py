"""tools/make_reader.py --combine: readers and ensembles' members go into one ensemble file."""

from __future__ import annotations

import argparse
import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_cnn.inference.reader import TUNED
from mnist_cnn.models.reader import create_reader, load_readers, save_reader, save_readers

REPO = Path(__file__).resolve().parents[1]


def _tool():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("make_reader_tool", REPO / "tools" / "make_reader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_combine_takes_an_ensemble_s_members_with_their_own_metadata(tmp_path: Path, monkeypatch) -> None:
    """Before: ``--combine`` read each file with load_reader, which refuses an ensemble, so the bundled
    pair could not be grown by a third member without their original single files."""
    torch.manual_seed(0)
    a, b, c = (create_reader(width=8, hidden=8) for _ in range(3))
    save_readers(
        tmp_path / "ab.safetensors",
        [(a, {"temperature": 1.1, "training": {"seed": 21}}), (b, {"temperature": 1.2, "training": {"seed": 31}})],
        {"calibration": {"a": 1.0, "b": 0.0}},
    )
    save_reader(tmp_path / "c.safetensors", c, {"temperature": 1.3, "training": {"seed": 41}, "made": "x"})
    tool = _tool()
    seen: list = []
    monkeypatch.setattr(tool, "calibrate_end_to_end", lambda members, *_: seen.append(members) or {"a": 2.0})
    args = argparse.Namespace(
        combine=[tmp_path / "ab.safetensors", tmp_path / "c.safetensors"],
        out=tmp_path / "abc.safetensors",
        plain=False,
    )
    tool.combine(args, ["--combine", "ab", "c"], "abc123", np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.int64))

    models, meta = load_readers(tmp_path / "abc.safetensors")
    assert len(seen[0]) == 3 and meta["calibration"] == {"a": 2.0}
    assert [m["training"]["seed"] for m in meta["members"]] == [21, 31, 41]
    assert [t for _, t in models] == pytest.approx([1.1, 1.2, 1.3])
    assert "made" not in meta["members"][2]  # only the member's own description is kept
    assert meta["decoding"] == TUNED.to_meta()  # the decoding it was calibrated with
    for (got, _), want in zip(models, (a, b, c), strict=True):
        for k, v in want.state_dict().items():
            assert torch.equal(got.state_dict()[k], v), k


def test_init_takes_the_named_member_with_its_record(tmp_path: Path) -> None:
    """``--init FILE:K`` goes on training member K of an ensemble file: its weights, and a record of
    what it was (file sha256, member, its own training) for the new file's provenance."""
    torch.manual_seed(0)
    a, b = (create_reader(width=8, hidden=8) for _ in range(2))
    path = tmp_path / "ab.safetensors"
    save_readers(
        path,
        [(a, {"temperature": 1.1, "training": {"seed": 21}}), (b, {"temperature": 1.2, "training": {"seed": 31}})],
        {},
    )
    model, earlier = _tool().initial_reader(f"{path}:1")
    assert model.training  # ready to train on
    for k, v in b.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    assert earlier["member"] == 1 and earlier["training"] == {"seed": 31} and len(earlier["sha256"]) == 64
    assert _tool().initial_reader(None) == (None, None)


@pytest.mark.parametrize(
    ("suffix", "message"),
    [(":2", "holds 2 reader(s)"), (":x", "K must be a member number"), ("-missing", "cannot read")],
)
def test_init_refuses_a_member_or_file_that_is_not_there(tmp_path: Path, suffix: str, message: str) -> None:
    path = tmp_path / "ab.safetensors"
    save_readers(path, [(create_reader(width=8, hidden=8), {}), (create_reader(width=8, hidden=8), {})], {})
    with pytest.raises(SystemExit, match=re.escape(message)):
        _tool().initial_reader(f"{path}{suffix}")
