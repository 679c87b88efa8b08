"""The epoch loop of one run: train, validate, checkpoint, report, stop early; the epoch's line
and progress bar.

Each step indexes its batch from the device-resident training split with a seeded ``randperm``,
normalises and augments it as one tensor op, and takes one optimiser step (training/steps.py).
Every epoch ends with an atomic checkpoint of the typed :class:`~mnist_cnn.training.state.TrainState`.
On the CPU the thread count is chosen again before each epoch (:mod:`mnist_cnn.cpu`): another
process that started or stopped meanwhile changes how many cores are free.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mnist_cnn.artifacts.runs import CHECKPOINT, discard_replaced, write_history
from mnist_cnn.cpu import AdaptiveThreads
from mnist_cnn.evaluation.metrics import evaluate_model
from mnist_cnn.reports.run import log_scalars, tensorboard_writer
from mnist_cnn.reports.words import plural
from mnist_cnn.training.augment import AugmentConfig, augment_batch, parse_augment
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.device import Dist, Timer, all_reduce_sum, sync, use_bf16, wrap_ddp
from mnist_cnn.training.device_data import DeviceData
from mnist_cnn.training.state import TrainState
from mnist_cnn.training.steps import ema_update, lr_factor, make_step

Say = Callable[[str], None]


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
        threads: AdaptiveThreads | None = None,
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
        self.threads = threads  # the CPU's thread count (None on an accelerator)

    def run(self, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        p = self.state.progress
        first = p.epoch + 1
        for epoch in range(first, self.cfg.epochs + 1):
            if epoch > first:  # the first epoch's count was chosen just before the run
                self.adapt_threads(epoch)
            row = self.train_epoch(epoch)
            if self.threads is not None:
                row["threads"] = self.threads.choice.threads
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
                    f"{plural(self.cfg.early_stopping_patience or 0, 'epoch')}; restoring epoch {p.best_epoch}"
                )
                break

    def adapt_threads(self, epoch: int) -> None:
        """Choose the CPU thread count again, from the other processes' load since the last choice:
        a neighbour that started spinning takes a core away, one that stopped gives it back."""
        changed = self.threads.recheck() if self.threads is not None else None
        if changed is not None:
            self.say(f"epoch {epoch}: {changed.line}")

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


def compute_line(threads: AdaptiveThreads | None, bf16: bool) -> str:
    """``threads: 1 of 2 (1 core busy elsewhere; --threads to override) · precision bf16``; on an
    accelerator only the precision."""
    precision = f"precision {'bf16' if bf16 else 'fp32'}"
    return f"{threads.choice.line} · {precision}" if threads is not None else precision


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
