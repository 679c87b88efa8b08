"""What a run records: its environment (config.json, at the start) and, at the end, the final
validation and test evaluation, the model file, metrics, plots and report."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_cnn.artifacts.files import atomic_write_json
from mnist_cnn.artifacts.runs import METRICS, MODEL
from mnist_cnn.cpu import AdaptiveThreads, cpu_kind
from mnist_cnn.data.datasets import Dataset
from mnist_cnn.evaluation.metrics import EvalResult, evaluate_model, fit_calibration
from mnist_cnn.models.files import save_model
from mnist_cnn.models.registry import count_params
from mnist_cnn.reports.figures import plot_history
from mnist_cnn.reports.run import write_eval_artifacts, write_run_report
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.device import keep_freed_memory, use_bf16
from mnist_cnn.training.device_data import DeviceData
from mnist_cnn.training.loop import Say
from mnist_cnn.training.state import TrainState
from mnist_cnn.version import __version__


@dataclass
class TrainResult:
    run_dir: Path | None
    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    return {
        "mnist_cnn": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_kind(),
        "git_commit": git_commit(),
        "command": sys.argv,
    }


def finish(
    *,
    cfg: TrainConfig,
    out: Path | None,
    model: nn.Module,
    dd: DeviceData,
    state: TrainState,
    data_seconds: float,
    compile_seconds: float,
    evaluate_test: bool,
    say: Say,
    threads: AdaptiveThreads | None = None,
) -> TrainResult:
    """Final validation and test evaluation, then the run folder's model, metrics, plots and report."""
    p, ds = state.progress, dd.dataset
    metrics: dict[str, Any] = {
        "model": cfg.model,
        "recipe": cfg.recipe,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "params": count_params(model),
        "epochs_run": p.epoch,
        "best_epoch": p.best_epoch,
        "train_seconds": p.train_seconds,
        # what actually ran (auto settings resolve per machine): recorded with every figure
        "precision_used": "bf16" if use_bf16(cfg.precision, next(model.parameters()).device) else "fp32",
        "allocator": keep_freed_memory() if next(model.parameters()).device.type == "cpu" else "device",
        # the CPU threads of the last epoch and why (each epoch's count is in the history)
        "threads": threads.choice.as_dict() if threads is not None else None,
        "data_seconds": data_seconds,
        "compile_seconds": compile_seconds,
        "tta": cfg.tta,  # the val/test figures below are test-time-augmented (test_eval_seconds: its cost)
    }
    if p.history and "val_accuracy" in p.history[-1]:
        vr = evaluate_model(model, dd.val_x, dd.val_y, dd.normalisation, cfg.eval_batch_size, tta=cfg.tta)
        metrics.update(val_accuracy=vr.accuracy, val_loss=vr.loss)
    test: EvalResult | None = None
    t_ev = time.perf_counter()
    if evaluate_test:
        test = evaluate_model(model, ds.test_images, ds.test_labels, dd.normalisation, cfg.eval_batch_size, tta=cfg.tta)
        metrics.update(test_accuracy=test.accuracy, test_loss=test.loss, per_class=test.per_class(ds.classes))
        metrics["test_eval_seconds"] = time.perf_counter() - t_ev
    metrics["eval_seconds"] = p.eval_seconds + time.perf_counter() - t_ev
    meta: dict[str, Any] = {
        "normalisation": dd.normalisation,
        "classes": list(ds.classes),
        "dataset": cfg.dataset,
        "config": cfg.to_dict(),
        "metrics": {k: metrics.get(k) for k in ("test_accuracy", "val_accuracy")},
        "data_checksums": ds.checksums,
        "calibration": fit_calibration(model, dd.val_x, dd.val_y, dd.normalisation, cfg.eval_batch_size),
    }
    if dd.teachers:  # a distilled model names the exact weights it learnt from
        meta["teachers"] = dd.teachers
    if out is not None:
        _write_run(out, cfg=cfg, model=model, meta=meta, metrics=metrics, test=test, dataset=ds, history=p.history)
    if test is not None:
        say(
            f"test accuracy {100 * test.accuracy:.2f}%  test loss {test.loss:.4f}  "
            f"(train {p.train_seconds:.1f}s)" + (f"  -> {out}" if out else "")
        )
    return TrainResult(out, model, metrics, p.history, meta)


def _write_run(
    out: Path,
    *,
    cfg: TrainConfig,
    model: nn.Module,
    meta: dict[str, Any],
    metrics: dict[str, Any],
    test: EvalResult | None,
    dataset: Dataset,
    history: list[dict[str, float]],
) -> None:
    cpu_model = model.to("cpu").to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    save_model(out / MODEL, cpu_model, meta)
    if test is not None:
        write_eval_artifacts(out, test, dataset.classes, metrics, split="test")
    else:
        atomic_write_json(out / METRICS, metrics)
    plot_history(out / "history.png", history, title=f"{cfg.model} ({cfg.dataset})")
    write_run_report(out, test, dataset)
