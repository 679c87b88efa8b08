"""The training engine: data resident on the device, batches by index, whole-batch tensor ops.

``train(cfg, out_dir)`` runs one training job end to end and writes a run folder (the files are
listed in :mod:`mnist_cnn.artifacts.runs`).

Design (airbench / nanoGPT): the whole training split lives on the device as one uint8 tensor
``[N, 1, 28, 28]`` (47 MB for MNIST); each step indexes a batch from a seeded ``randperm``,
converts it to float, normalises and augments it as one tensor op. No DataLoader, no worker
processes. The learning rate is a pure function of the step, so resuming needs no scheduler
state. Every epoch ends with an atomic checkpoint of the typed :class:`~mnist_cnn.training.state.TrainState`
(model, optimiser, EMA, best weights, RNG states, progress), so ``--resume`` continues bit-for-bit
where the run stopped (on CPU).

Order of work, so that a mistake costs nothing: validate the config, load the data, build the
model; only then touch the run folder.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_cnn.artifacts.files import atomic_write_json, read_json
from mnist_cnn.artifacts.runs import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    MODEL,
    RunLock,
    SplitSpec,
    check_run_dir,
    discard_replaced,
    has_checkpoint,
    prepare_run_dir,
    recover_run_dir,
    restore_replaced,
    write_history,
)
from mnist_cnn.data.datasets import Dataset, load_dataset, normalisation, train_val_split
from mnist_cnn.errors import ConfigError, Interrupted
from mnist_cnn.evaluation.metrics import EvalResult, evaluate_model, fit_calibration
from mnist_cnn.models.files import save_model
from mnist_cnn.models.registry import count_params, create_model
from mnist_cnn.reports.figures import plot_history
from mnist_cnn.reports.run import log_scalars, tensorboard_writer, write_eval_artifacts, write_run_report
from mnist_cnn.training.augment import AugmentConfig, augment_batch, parse_augment
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.device import (
    Dist,
    Timer,
    all_reduce_sum,
    barrier,
    init_distributed,
    keep_freed_memory,
    resolve_device,
    setup_threads,
    sync,
    use_bf16,
    wrap_ddp,
)
from mnist_cnn.training.distill import describe, distill_loss, teacher_targets
from mnist_cnn.training.state import TrainState, checkpoint_config
from mnist_cnn.version import __version__

Say = Callable[[str], None]
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainResult:
    run_dir: Path | None
    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- pure pieces


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total`` (pure function: resumable)."""
    if schedule == "constant":
        return 1.0
    w = int(total * (warmup or (0.25 if schedule == "onecycle" else 0.0)))
    if step < w:
        start = 0.04 if schedule == "onecycle" else 0.0
        return start + (1 - start) * (step + 1) / w
    t = (step - w) / max(1, total - w)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    return max(0.0, 1.0 - t)  # onecycle and linear: linear decay to zero


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    # no weight decay on biases and norm parameters (1-D tensors)
    decay = [p for p in model.parameters() if p.dim() > 1]
    other = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    impl = optimizer_impl(cfg.optimizer_impl, next(model.parameters()).device.type)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, **impl)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, **impl)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov", **impl)


def optimizer_impl(choice: str, device_type: str = "cpu") -> dict[str, bool]:
    """Keyword arguments selecting the optimiser's kernels.

    ``auto``: fused kernels (one pass over each parameter) where torch has them for every optimiser
    here, CPU and CUDA; torch's own choice elsewhere (MPS, XPU). Measured: fused saves ~8% of the
    seed recipe's fp32 CPU step (11.7 vs 12.7 ms for torch's per-parameter loop). A run resumed from
    a checkpoint continues bit for bit with any of them (tests/test_training.py).
    """
    if choice == "loop":
        return {"foreach": False}
    if choice == "foreach":
        return {"foreach": True}
    if choice == "fused" or device_type in ("cpu", "cuda"):
        return {"fused": True}
    return {}


# --------------------------------------------------------------------------- data on the device


@dataclass
class DeviceData:
    """Splits as uint8 tensors on the training device plus the normalisation to apply."""

    train_x: torch.Tensor  # [N, 1, 28, 28] uint8
    train_y: torch.Tensor  # [N] int64
    val_x: np.ndarray  # [V, 28, 28] uint8 (evaluated in batches, on the device, by evaluate_model)
    val_y: np.ndarray
    mean: float
    std: float
    dataset: Dataset
    soft_y: torch.Tensor | None = None  # [N, C] a teacher's softened probabilities (train --teacher)
    teachers: list[dict[str, str]] = field(default_factory=list)  # their files and sha256 (provenance)

    @property
    def normalisation(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}


def prepare_data(cfg: TrainConfig, device: torch.device, data: Dataset | None = None) -> DeviceData:
    ds = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.val_size >= len(ds.train_labels):
        raise ConfigError(
            f"val_size={cfg.val_size} must be smaller than the training set ({len(ds.train_labels):,} images)"
        )
    tr, va = train_val_split(ds.train_labels, cfg.val_size, cfg.val_seed)
    if cfg.train_subset:
        tr = tr[: cfg.train_subset]
    x, y = ds.train_images[tr], ds.train_labels[tr]
    mean, std = normalisation(x)
    soft: torch.Tensor | None = None
    teachers: list[dict[str, str]] = []
    if cfg.teacher:
        split = SplitSpec(cfg.val_size, cfg.val_seed)
        soft, teachers = teacher_targets(
            cfg.teacher,
            x,
            dataset=cfg.dataset,
            split=split,
            temperature=cfg.distill_temperature,
            batch_size=cfg.eval_batch_size,
        )
        soft = soft.to(device)
    return DeviceData(
        train_x=torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(device),
        train_y=torch.from_numpy(y).to(device),
        val_x=ds.train_images[va],
        val_y=ds.train_labels[va],
        mean=mean,
        std=std,
        dataset=ds,
        soft_y=soft,
        teachers=teachers,
    )


# --------------------------------------------------------------------------- the run


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
        "git_commit": git_commit(),
        "command": sys.argv,
    }


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
    device = _training_device(cfg, dist)
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
    quiet: bool,
    data_seconds: float,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    evaluate_test: bool,
) -> TrainResult:
    """The epochs, then the final evaluation and files (the run folder is ready and locked)."""
    say(
        f"training {cfg.model} ({count_params(state.model):,} params) on {cfg.dataset}: {len(dd.train_y):,} train / "
        f"{len(dd.val_y):,} val images, {cfg.epochs} epochs, batch {cfg.batch_size}, device {device}"
    )
    if cfg.teacher:
        say(f"distilling from {describe(cfg.teacher)} (alpha {cfg.distill_alpha:g}, T {cfg.distill_temperature:g})")
    loop = EpochLoop(cfg, dd, state, dist, device, writer, say, show_progress=not quiet)
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
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted while writing the final files; all {state.progress.epoch} epochs are saved in the "
            f"checkpoint{resume_hint.replace('continue', 'finish')}"
        ) from None
    barrier(dist)
    return result


def _training_device(cfg: TrainConfig, dist: Dist) -> torch.device:
    device = resolve_device(cfg.device)
    if dist.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if device.type == "cpu":
        setup_threads(cfg.threads)
        keep_freed_memory()
    return device


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


# --------------------------------------------------------------------------- the epoch loop


class EpochLoop:
    """The epochs of one run: train, validate, checkpoint, report, stop early."""

    def __init__(
        self,
        cfg: TrainConfig,
        dd: DeviceData,
        state: TrainState,
        dist: Dist,
        device: torch.device,
        writer: Path | None,
        say: Say,
        *,
        show_progress: bool = False,
    ):
        self.cfg, self.dd, self.state, self.dist, self.device, self.writer, self.say = (
            cfg,
            dd,
            state,
            dist,
            device,
            writer,
            say,
        )
        self.aug: AugmentConfig = parse_augment(cfg.augment)
        self.steps_per_epoch = math.ceil(len(dd.train_y) / cfg.batch_size)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        # uint8 -> normalised float in one multiply-subtract: x / 255 / std - mean / std
        self.scale, self.shift = 1.0 / (255.0 * dd.std), dd.mean / dd.std
        ddp_model = wrap_ddp(state.model, dist, device)  # broadcasts rank 0's initial weights to all ranks
        bf16 = use_bf16(cfg.precision, device)
        forward = torch.compile(ddp_model) if cfg.compile else ddp_model
        distill = (cfg.distill_alpha, cfg.distill_temperature) if dd.soft_y is not None else None
        self.step = make_step(
            forward, state.optimizer, label_smoothing=cfg.label_smoothing, bf16=bf16, device=device, distill=distill
        )
        self.compile_seconds = self._warm_up(forward, bf16) if cfg.compile else 0.0
        self.timer = Timer(device)
        self.progress_bar = ProgressBar(enabled=show_progress)
        self.tb = tensorboard_writer(cfg.tensorboard) if cfg.tensorboard and writer is not None else None

    def run(self, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        p = self.state.progress
        for epoch in range(p.epoch + 1, self.cfg.epochs + 1):
            row = self.train_epoch(epoch)
            row.update(self.validate())
            p.history.append(row)
            p.epoch = epoch
            stop = self.early_stopping(row)
            self.save(row)
            if on_epoch is not None:
                on_epoch(epoch, row)
            if stop:
                self.say(
                    f"early stopping: {self.cfg.early_stopping_monitor} has not improved for "
                    f"{self.cfg.early_stopping_patience} epochs; restoring epoch {p.best_epoch}"
                )
                break

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training split; returns the epoch's train loss/accuracy, lr and seconds."""
        cfg, dd, st, n = self.cfg, self.dd, self.state, len(self.dd.train_y)
        st.model.train()
        self.progress_bar.start(f"epoch {epoch}/{cfg.epochs}", self.steps_per_epoch)
        self.timer.start()
        perm = torch.randperm(n, generator=st.gen, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for i in range(self.steps_per_epoch):
            # this rank's shard of the global batch: every world-th index
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size][self.dist.rank :: self.dist.world]
            x = self.batch(idx)  # [B, 1, 28, 28] normalised, augmented float
            y = dd.train_y[idx]  # [B]
            lr = cfg.lr * lr_factor(st.progress.step, self.total_steps, cfg.schedule, cfg.warmup)
            for g in st.optimizer.param_groups:
                g["lr"] = lr
            soft = dd.soft_y[idx] if dd.soft_y is not None else None  # [B, C] teacher targets
            loss, logits = self.step(x, y, soft)
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            st.progress.step += 1
            if st.ema is not None:
                ema_update(st.ema, st.model, cfg.ema)
            self.progress_bar.advance()
        seconds = self.timer.stop()
        self.progress_bar.stop()
        st.progress.train_seconds += seconds
        loss_sum, correct = all_reduce_sum(self.dist, loss_sum, correct)
        return {
            "epoch": epoch,
            "train_loss": float(loss_sum) / n,
            "train_accuracy": float(correct) / n,
            "lr": st.optimizer.param_groups[0]["lr"],
            "seconds": seconds,
        }

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """[B] indices -> [B, 1, 28, 28] float: normalised and augmented as one tensor op."""
        x = self.dd.train_x[idx].float().mul_(self.scale).sub_(self.shift)
        x = augment_batch(x, self.aug, self.state.aug_gen)
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def validate(self) -> dict[str, float]:
        """Validation loss and accuracy of the weights that will be kept ({} without a split)."""
        if not len(self.dd.val_y):
            return {}
        t = time.perf_counter()
        vr = evaluate_model(
            self.state.eval_model, self.dd.val_x, self.dd.val_y, self.dd.normalisation, self.cfg.eval_batch_size
        )
        self.state.progress.eval_seconds += time.perf_counter() - t
        return {"val_loss": vr.loss, "val_accuracy": vr.accuracy}

    def early_stopping(self, row: dict[str, float]) -> bool:
        """Track the best monitored score (keeping its weights); True when patience has run out."""
        cfg, st, p = self.cfg, self.state, self.state.progress
        if cfg.early_stopping_patience is None:
            return False
        score = row[cfg.early_stopping_monitor]
        lower = cfg.early_stopping_monitor == "val_loss"
        if p.best_score is None or (score < p.best_score if lower else score > p.best_score):
            p.best_score, p.best_epoch, p.bad_epochs = score, int(row["epoch"]), 0
            st.best = {k: v.detach().clone() for k, v in st.eval_model.state_dict().items()}
            return False
        p.bad_epochs += 1
        return p.bad_epochs >= cfg.early_stopping_patience

    def save(self, row: dict[str, float]) -> None:
        """Checkpoint and history (rank 0 with a run folder), TensorBoard, the epoch line."""
        if self.tb is not None:
            log_scalars(self.tb, row)
        if self.writer is not None:
            self.state.save(self.writer / CHECKPOINT, self.cfg.to_dict())
            discard_replaced(self.writer)  # the new run has a checkpoint: the run it replaced can go
            write_history(self.writer, self.state.progress.history)
        self.say(epoch_line(row, self.cfg.epochs))

    def _warm_up(self, forward: Callable[[torch.Tensor], torch.Tensor], bf16: bool) -> float:
        """Run torch.compile's one-off compilation outside the timed loop (forward + backward on a
        batch, then restore the weights/BN statistics so training is unaffected). Returns seconds."""
        model = self.state.model
        x = self.dd.train_x[: self.cfg.batch_size].float().mul_(self.scale).sub_(self.shift)
        x = x.contiguous(memory_format=torch.channels_last)
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        sync(self.device)
        t = time.perf_counter()
        for _ in range(2):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                forward(x).float().sum().backward()
        sync(self.device)
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        return time.perf_counter() - t


def make_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    opt: torch.optim.Optimizer,
    *,
    label_smoothing: float,
    bf16: bool,
    device: torch.device,
    distill: tuple[float, float] | None = None,
) -> StepFn:
    """One optimiser step on a batch: autocast forward, float32 loss, backward, update.
    ``distill=(alpha, T)``: the loss also pulls towards the teacher's targets (training/distill.py)."""

    def step(x: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)  # [B, C]
        if soft is not None and distill is not None:
            alpha, temperature = distill
            loss = distill_loss(
                logits.float(), y, soft, alpha=alpha, temperature=temperature, label_smoothing=label_smoothing
            )
        else:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss, logits

    return step


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.lerp_(p, 1 - decay)
            else:
                e.copy_(p)


def epoch_line(row: dict[str, float], epochs: int) -> str:
    line = (
        f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%"
    )
    if "val_loss" in row:
        line += f"  val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
    return line + f"  {row['seconds']:.1f}s"


class ProgressBar:
    """A per-epoch progress bar on stderr (rich), only when stderr is a terminal and not quiet."""

    def __init__(self, enabled: bool):
        self.bar: Any = None
        self.task: Any = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )

    def start(self, desc: str, total: int) -> None:
        if self.bar:
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total)

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.advance(self.task, n)

    def stop(self) -> None:
        if self.bar and self.task is not None:
            self.bar.stop()
            self.bar.remove_task(self.task)
            self.task = None


# --------------------------------------------------------------------------- the end of a run


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
