"""Train the runs a comparison needs (``mnist-cnn compare --models A B --seeds N``), reusing finished ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mnist_cnn.artifacts.runs import has_checkpoint, is_finished, read_run_config
from mnist_cnn.data.datasets import Dataset, load_dataset
from mnist_cnn.errors import ConfigError
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.engine import train

# config keys that do not change what a run learns: a run that differs only in these is reused
NEUTRAL_KEYS = {
    "data_dir",
    "threads",
    "device",
    "compile",
    "eval_batch_size",
    "tensorboard",
    "precision",
    "channels_last",
}


def run_name(model: str, seed: int) -> str:
    """The folder name of one model and seed of a comparison: ``<model>-seed<k>``."""
    return f"{model}-seed{seed}"


def check_reusable(run: Path, cfg: TrainConfig) -> None:
    """Refuse to reuse a run trained with different settings (it would silently answer another question)."""
    saved = read_run_config(run)
    want = cfg.to_dict()
    diff = sorted(k for k in want if k not in NEUTRAL_KEYS and k in saved and saved[k] != want[k])
    if diff:
        k = diff[0]
        raise ConfigError(
            f"{run}: existing run was trained with {k}={saved[k]!r}, this comparison asks for "
            f"{k}={want[k]!r}; use another --out or delete that run folder"
        )


def train_missing(
    models: Sequence[str],
    seeds: Sequence[int],
    make_cfg: Callable[[str, int], TrainConfig],
    out: Path,
    tensorboard: str | None = None,
    quiet: bool = False,
    say: Callable[[str], None] = print,
) -> list[Path]:
    """Train ``model x seed`` into ``out/runs/<model>-seed<k>``; finished runs are reused (after a
    config check), interrupted ones resumed, so a killed comparison continues where it stopped."""
    paths = []
    data: Dataset | None = None
    for model in models:
        for seed in seeds:
            cfg = make_cfg(model, seed)
            run = out / "runs" / run_name(model, seed)
            paths.append(run)
            if is_finished(run):
                check_reusable(run, cfg)
                say(f"reusing {run}")
                continue
            if tensorboard:
                cfg = cfg.merged({"tensorboard": str(Path(tensorboard) / run_name(model, seed))})
            data = data or load_dataset(cfg.dataset, cfg.data_dir)
            resume = has_checkpoint(run)
            if resume:
                check_reusable(run, cfg)
            say(f"{'resuming' if resume else 'training'} {run}")
            train(cfg, run, resume=resume, force=not resume, quiet=quiet, data=data)
    return paths
