"""Helpers shared by tests: run the CLI in-process and train tiny runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner


def run_cli(*args: str, **kw: Any):
    """Invoke ``mnist-cnn ARGS`` in-process through click's runner; returns the Result
    (``.exit_code``, ``.stdout``, ``.stderr``). Errors go through the real ``main`` wrapper."""
    from mnist_cnn.cli import main

    runner = CliRunner()
    return runner.invoke(_Main(main), list(args), catch_exceptions=False, **kw)


class _Main:
    """Adapter so CliRunner can drive ``main(argv)`` (which calls sys.exit) like a click command."""

    def __init__(self, fn):
        self.fn = fn
        self.name = "mnist-cnn"

    def main(self, args=None, prog_name=None, **_: Any):
        self.fn(list(args or []))
        raise SystemExit(0)


def tiny_run(tmp_path: Path, data_dir: Path, name: str = "run", **overrides: Any):
    """Train a tiny model1 run (2 epochs on the synthetic set) and return its TrainResult."""
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.training import train

    fields = {"data_dir": str(data_dir), "epochs": 2, "batch_size": 64, "val_size": 100, **overrides}
    cfg = TrainConfig(**fields)
    return train(cfg, tmp_path / name, quiet=True)
