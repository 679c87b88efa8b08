"""The training engine: ``train(cfg, out_dir)`` runs one training job end to end and writes a run
folder (the files are listed in :mod:`mnist_cnn.artifacts.runs`).

Design (airbench / nanoGPT): the whole training split lives on the device as one uint8 tensor
(:mod:`~mnist_cnn.training.device_data`); each step indexes a batch from a seeded ``randperm``,
converts it to float, normalises and augments it as one tensor op (:mod:`~mnist_cnn.training.loop`).
No DataLoader, no worker processes. The learning rate is a pure function of the step
(:mod:`~mnist_cnn.training.steps`), so resuming needs no scheduler state. Every epoch ends with an
atomic checkpoint of the typed :class:`~mnist_cnn.training.state.TrainState` (model, optimiser, EMA,
best weights, RNG states, progress), so ``--resume`` continues bit-for-bit where the run stopped
(on CPU, with the same thread count). The end of a run, its evaluation and files, is
:mod:`~mnist_cnn.training.outputs`.

Order of work, so that a mistake costs nothing: validate the config, load the data, build the
model; only then touch the run folder.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mnist_cnn.artifacts.files import atomic_write_json, read_json
from mnist_cnn.artifacts.runs import (
    CHECKPOINT,
    CONFIG,
    RunLock,
    check_run_dir,
    has_checkpoint,
    prepare_run_dir,
    recover_run_dir,
    restore_replaced,
)
from mnist_cnn.cpu import AdaptiveThreads
from mnist_cnn.data.datasets import Dataset
from mnist_cnn.errors import Interrupted
from mnist_cnn.models.registry import count_params, create_model
from mnist_cnn.reports.words import plural
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.device import (
    Dist,
    barrier,
    init_distributed,
    keep_freed_memory,
    resolve_device,
    setup_threads,
    use_bf16,
)
from mnist_cnn.training.device_data import DeviceData, prepare_data
from mnist_cnn.training.distill import describe
from mnist_cnn.training.loop import EpochLoop, Say, compute_line
from mnist_cnn.training.outputs import TrainResult, environment, finish
from mnist_cnn.training.state import TrainState, checkpoint_config
from mnist_cnn.training.steps import make_optimizer

__all__ = ["TrainResult", "new_state", "train"]


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    resume_epochs: int | None = None,
    force: bool = False,
    quiet: bool = False,
    data: Dataset | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train per ``cfg``; write the run folder when ``out_dir`` is given. See the module doc.

    ``resume`` continues the run in ``out_dir`` from its checkpoint with its saved config and plan
    (``resume_epochs`` changes how many epochs it runs to, ``cfg.threads``, when set, the CPU
    threads); a run killed before its first checkpoint starts afresh. ``force`` replaces an
    existing run (only a run folder's own files).
    ``on_epoch(epoch, row)`` is called after each epoch's validation (search uses it to prune).
    """
    out = Path(out_dir) if out_dir is not None else None
    dist = init_distributed(cfg.device)
    writer = out if dist.main else None  # only rank 0 writes artifacts (and locks the folder)
    if writer is not None:
        recover_run_dir(writer)  # a replacement killed before its first checkpoint: the old run is back
    planned = None
    if resume and out is not None and has_checkpoint(out):
        saved = checkpoint_config(out / CHECKPOINT)
        planned = int(saved.get("epochs", cfg.epochs))
        # the saved plan, except the machine's thread count when the caller sets one (a run resumed
        # on another box, or beside another job)
        here = {"threads": cfg.threads} if cfg.threads is not None else {}
        cfg = TrainConfig.from_dict({**saved, "epochs": resume_epochs or planned, **here}, source=str(out / CHECKPOINT))
    cfg.validate()
    if writer is not None:
        check_run_dir(writer, resume=resume, force=force)  # fail before any work; nothing is touched yet
    device, threads = _training_device(cfg, dist)
    quiet = quiet or not dist.main
    say = _sayer(quiet)
    t0 = time.perf_counter()
    dd = prepare_data(cfg, device, data)  # a bad data folder or val_size fails here, before the folder is touched
    data_seconds = time.perf_counter() - t0
    state = new_state(cfg, device, dist)
    lock = _open_run(writer, cfg, dd, state, resume=resume, force=force, say=say, planned=planned)
    barrier(dist)  # rank 0 has prepared (and locked) the folder
    if writer is None and out is not None and planned is not None:
        state.restore(out / CHECKPOINT, device)  # the other ranks of a resumed multi-process run
    try:
        return _run(
            cfg,
            out,
            writer,
            dd,
            state,
            dist,
            device,
            say,
            threads=threads,
            quiet=quiet,
            data_seconds=data_seconds,
            on_epoch=on_epoch,
            evaluate_test=evaluate_test,
        )
    except BaseException:
        if writer is not None and not has_checkpoint(writer):
            restore_replaced(writer)  # the new run stopped before it had anything: the old one comes back
        raise
    finally:
        if lock is not None:
            lock.release()


def _run(
    cfg: TrainConfig,
    out: Path | None,
    writer: Path | None,
    dd: DeviceData,
    state: TrainState,
    dist: Dist,
    device: torch.device,
    say: Say,
    *,
    threads: AdaptiveThreads | None,
    quiet: bool,
    data_seconds: float,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    evaluate_test: bool,
) -> TrainResult:
    """The epochs, then the final evaluation and files (the run folder is ready and locked)."""
    say(
        f"training {cfg.model} ({count_params(state.model):,} params) on {cfg.dataset}: {len(dd.train_y):,} train / "
        f"{len(dd.val_y):,} val images, {plural(cfg.epochs, 'epoch')}, batch {cfg.batch_size}, device {device}"
    )
    say(compute_line(threads, use_bf16(cfg.precision, device)))
    if cfg.teacher:
        say(f"distilling from {describe(cfg.teacher)} (alpha {cfg.distill_alpha:g}, T {cfg.distill_temperature:g})")
    loop = EpochLoop(cfg, dd, state, dist, device, writer, say, show_progress=not quiet, threads=threads)
    resume_hint = f"; continue with `mnist-cnn train --out {out} --resume`" if out is not None else ""
    try:
        loop.run(on_epoch)
    except KeyboardInterrupt:
        loop.progress_bar.stop()
        raise Interrupted(
            f"interrupted; the last completed epoch ({state.progress.epoch}) is saved{resume_hint}"
        ) from None
    if state.best is not None:
        state.eval_model.load_state_dict(state.best)
    try:
        result = finish(
            cfg=cfg,
            out=writer,
            model=state.eval_model,
            dd=dd,
            state=state,
            data_seconds=data_seconds,
            compile_seconds=loop.compile_seconds,
            evaluate_test=evaluate_test and dist.main,
            say=say,
            threads=threads,
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while writing the final files; {plural(state.progress.epoch, 'epoch')} are saved in the "
            f"checkpoint{resume_hint.replace('continue', 'finish')}"
        ) from None
    barrier(dist)
    return result


def _training_device(cfg: TrainConfig, dist: Dist) -> tuple[torch.device, AdaptiveThreads | None]:
    """The device, and on the CPU the thread count (chosen from the cores free now) and malloc tuning."""
    device = resolve_device(cfg.device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if device.type != "cpu":
        return device, None
    threads = setup_threads(cfg.threads)
    keep_freed_memory()
    return device, threads


def _sayer(quiet: bool) -> Say:
    if quiet:
        return lambda msg: None
    return lambda msg: print(msg, file=sys.stderr, flush=True)


def new_state(cfg: TrainConfig, device: torch.device, dist: Dist) -> TrainState:
    """A fresh model, optimiser, EMA and RNGs for ``cfg`` (seeded: the same seed, the same run)."""
    torch.manual_seed(cfg.seed + dist.rank)  # dropout masks differ per rank, as with one big batch
    # two generators: `gen` orders the data (identical on every rank, so the ranks split one
    # global batch), `aug_gen` draws augmentations (per rank: each augments its own shard)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device)
    aug_gen.manual_seed(cfg.seed + 7919 * (dist.rank + 1))
    model = create_model(cfg.model, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    ema = None
    if cfg.ema:
        ema = create_model(cfg.model, **cfg.model_kwargs).to(device)
        ema.load_state_dict(model.state_dict())
        ema.eval()
    return TrainState(model=model, optimizer=make_optimizer(cfg, model), gen=gen, aug_gen=aug_gen, ema=ema)


def _open_run(
    out: Path | None,
    cfg: TrainConfig,
    dd: DeviceData,
    state: TrainState,
    *,
    resume: bool,
    force: bool,
    say: Say,
    planned: int | None,
) -> RunLock | None:
    """Prepare and lock the run folder; restore the checkpoint or write config.json."""
    if out is None:
        return None
    resuming, lock = prepare_run_dir(out, resume=resume, force=force)
    try:
        if resuming:
            state.restore(out / CHECKPOINT, dd.train_x.device)
            say(
                f"resuming {out} after epoch {state.progress.epoch} of {cfg.epochs} "
                + (
                    "(its saved plan; --epochs N changes it)"
                    if cfg.epochs == planned
                    else f"(--epochs {cfg.epochs}; its saved plan was {planned})"
                )
            )
            if cfg.epochs != planned:
                _update_config(out, cfg)
            return lock
        if resume:
            say(f"{out}: no checkpoint yet (the run stopped before its first epoch ended); starting it afresh")
        atomic_write_json(
            out / CONFIG, {"train": cfg.to_dict(), "environment": environment(), "normalisation": dd.normalisation}
        )
    except BaseException:
        lock.release()
        raise
    return lock


def _update_config(out: Path, cfg: TrainConfig) -> None:
    """config.json records what runs: a resume that changes the plan rewrites its ``train`` section."""
    path = out / CONFIG
    saved = read_json(path, "run config") if path.exists() else {}
    atomic_write_json(path, {**(saved if isinstance(saved, dict) else {}), "train": cfg.to_dict()})
