"""The training engine: data resident on the device, batches by index, whole-batch tensor ops.

``train(cfg, out_dir)`` runs one training job end to end and writes a run folder:

    config.json  history.csv  checkpoint.safetensors  model.safetensors  metrics.json
    classification_report.txt  confusion_matrix.{csv,png}  history.png

Design (airbench / nanoGPT): the whole training split lives on the device as one uint8 tensor
``[N, 1, 28, 28]`` (47 MB for MNIST); each step indexes a batch from a seeded ``randperm``,
converts it to float, normalises and augments it as one tensor op. No DataLoader, no worker
processes. The learning rate is a pure function of the step, so resuming needs no scheduler
state. Every epoch ends with an atomic checkpoint holding model, optimiser, EMA and RNG states,
so ``--resume`` continues bit-for-bit where the run stopped (on CPU).
"""

from __future__ import annotations

import math
import os
import platform
import shutil
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

from . import __version__
from .augment import augment_batch, parse_augment
from .config import TrainConfig
from .data import Dataset, load_dataset, normalisation, train_val_split
from .errors import CheckpointError, MnistCnnError, RunExistsError
from .evaluation import EvalResult, evaluate_model, normalise
from .files import atomic_write_json, atomic_write_text, load_tensors, save_tensors
from .models import count_params, create_model, save_model

CHECKPOINT = "checkpoint.safetensors"


class Interrupted(MnistCnnError):
    exit_code = 130


@dataclass
class TrainResult:
    run_dir: Path | None
    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- device + setup


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MnistCnnError("--device cuda: no CUDA GPU is available here; use --device cpu or auto")
    return torch.device(name)


@dataclass(frozen=True)
class Dist:
    """Process-group facts; world 1 (no torch.distributed) for ordinary single-process runs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the process group torchrun set up (env WORLD_SIZE/RANK/LOCAL_RANK): gloo on CPU,
    nccl on GPUs, one GPU per local rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(d.local_rank)
    return d


def setup_threads(threads: int | None) -> None:
    """Use every core for intra-op parallelism; several local ranks share the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads or max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


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
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.optimizer == "nesterov")


# --------------------------------------------------------------------------- data on device


@dataclass
class DeviceData:
    """Splits as uint8 tensors on the training device plus the normalisation to apply."""

    train_x: torch.Tensor  # [N, 1, 28, 28] uint8
    train_y: torch.Tensor  # [N] int64
    val_x: np.ndarray
    val_y: np.ndarray
    mean: float
    std: float
    dataset: Dataset


def prepare_data(cfg: TrainConfig, device: torch.device, data: Dataset | None = None) -> DeviceData:
    ds = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    if cfg.val_size >= len(ds.train_labels):
        from .errors import ConfigError

        raise ConfigError(f"val_size={cfg.val_size} must be smaller than the training set ({len(ds.train_labels):,} images)")
    tr, va = train_val_split(ds.train_labels, cfg.val_size, cfg.seed)
    if cfg.train_subset:
        tr = tr[: cfg.train_subset]
    x, y = ds.train_images[tr], ds.train_labels[tr]
    mean, std = normalisation(x)
    return DeviceData(
        train_x=torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1).to(device),
        train_y=torch.from_numpy(y).to(device),
        val_x=ds.train_images[va], val_y=ds.train_labels[va],
        mean=mean, std=std, dataset=ds,
    )


# --------------------------------------------------------------------------- checkpoints


def _optim_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = v
    for key, v in meta["scalars"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """One atomic file: model/EMA/best weights, optimiser state, RNG states + JSON progress."""
    tensors = {f"model.{k}": v for k, v in state["model"].state_dict().items()}
    if state.get("ema") is not None:
        tensors.update({f"ema.{k}": v for k, v in state["ema"].state_dict().items()})
    if state.get("best") is not None:
        tensors.update({f"best.{k}": v for k, v in state["best"].items()})
    opt_t, opt_meta = _optim_to_tensors(state["optimizer"])
    tensors.update(opt_t)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.gen"] = state["gen"].get_state()
    tensors["rng.aug"] = state["aug_gen"].get_state()
    meta = {k: state[k] for k in ("epoch", "step", "history", "best_epoch", "best_score", "bad_epochs",
                                  "train_seconds", "eval_seconds", "config")}
    meta["optimizer"] = opt_meta
    save_tensors(path, tensors, meta)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if not path.exists():
        raise CheckpointError(f"{path}: no checkpoint to resume from; start the run without --resume")
    tensors, meta = load_tensors(path)
    missing = [k for k in ("epoch", "step", "history", "config", "optimizer") if k not in meta]
    if missing or "rng.torch" not in tensors:
        raise CheckpointError(f"{path}: not a training checkpoint (no {', '.join(missing) or 'RNG state'}); "
                              "start the run again with --force")
    return tensors, meta


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------- the run folder


def prepare_run_dir(out: Path | None, resume: bool, force: bool) -> None:
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"{out}: exists and is not a folder; choose another --out")
    if resume:
        if not (out / CHECKPOINT).exists():
            raise CheckpointError(f"{out}: no {CHECKPOINT} to resume from; start it without --resume")
        return
    if out.exists() and any(out.iterdir()):
        if not force:
            raise RunExistsError(f"{out}: run folder already exists; pass --resume to continue it, "
                                 "--force to overwrite it, or choose another --out")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from .files import OutputError

        raise OutputError(f"{out}: cannot create run folder ({exc.strerror}); choose a writable --out") from None


def git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment() -> dict[str, Any]:
    return {
        "mnist_cnn": __version__, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "git_commit": git_commit(), "command": sys.argv,
    }


# --------------------------------------------------------------------------- the loop


class _Progress:
    """A per-epoch progress bar on stderr (rich), only when stderr is a terminal and not quiet."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=Console(stderr=True), transient=True)

    def start(self, desc: str, total: int) -> None:
        if self.bar:
            self.bar.start()
            self.task = self.bar.add_task(desc, total=total)

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.advance(self.task, n)

    def stop(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar.remove_task(self.task)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.lerp_(p, 1 - decay)
            else:
                e.copy_(p)


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    data: Dataset | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    evaluate_test: bool = True,
) -> TrainResult:
    """Train per ``cfg``; write the run folder when ``out_dir`` is given. See the module doc.

    ``on_epoch(epoch, row)`` is called after each epoch's validation (search uses it to prune).
    """
    out = Path(out_dir) if out_dir is not None else None
    dist_ = init_distributed(cfg.device)
    if resume and out is not None and (out / CHECKPOINT).exists():
        saved_cfg = load_checkpoint(out / CHECKPOINT)[1]["config"]
        cfg = TrainConfig.from_dict({**saved_cfg, "epochs": cfg.epochs}, source=str(out / CHECKPOINT))
    cfg.validate()
    if dist_.main:
        prepare_run_dir(out, resume, force)
    _barrier(dist_)
    device = resolve_device(cfg.device)
    if dist_.world > 1 and device.type == "cuda":
        device = torch.device("cuda", dist_.local_rank)
    if device.type == "cpu":
        setup_threads(cfg.threads)
    torch.manual_seed(cfg.seed + dist_.rank)  # dropout masks differ per rank, as with one big batch
    # two generators: `gen` orders the data (identical on every rank, so the ranks split one
    # global batch), `aug_gen` draws augmentations (per rank: each augments its own shard)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device)
    aug_gen.manual_seed(cfg.seed + 7919 * (dist_.rank + 1))
    quiet = quiet or not dist_.main
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    writer = out if dist_.main else None  # only rank 0 writes artifacts

    t0 = time.perf_counter()
    dd = prepare_data(cfg, device, data)
    data_seconds = time.perf_counter() - t0
    aug = parse_augment(cfg.augment)

    model = create_model(cfg.model, **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp_model = _wrap_ddp(model, dist_, device)  # broadcasts rank 0's initial weights to all ranks
    opt = make_optimizer(cfg, model)
    ema = None
    if cfg.ema:
        ema = create_model(cfg.model, **cfg.model_kwargs).to(device)
        ema.load_state_dict(model.state_dict())
        ema.eval()
    n = len(dd.train_y)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    state: dict[str, Any] = {
        "model": model, "ema": ema, "optimizer": opt, "gen": gen, "aug_gen": aug_gen, "epoch": 0, "step": 0, "history": [],
        "best": None, "best_epoch": None, "best_score": None, "bad_epochs": 0,
        "train_seconds": 0.0, "eval_seconds": 0.0, "config": cfg.to_dict(),
    }
    if resume and out is not None:
        try:
            _restore(state, out / CHECKPOINT, device)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # weights/optimiser of another model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{out / CHECKPOINT}: does not fit this run ({first}); "
                                  "start the run again with --force") from None
        say(f"resuming {out} after epoch {state['epoch']}")
    elif writer is not None:
        atomic_write_json(writer / "config.json", {"train": cfg.to_dict(), "environment": environment(),
                                                "normalisation": {"mean": dd.mean, "std": dd.std}})
    say(f"training {cfg.model} ({count_params(model):,} params) on {cfg.dataset}: {n:,} train / "
        f"{len(dd.val_y):,} val images, {cfg.epochs} epochs, batch {cfg.batch_size}, device {device}")

    step_fn, forward = _make_step(ddp_model, opt, cfg, device)
    scale, shift = 1.0 / (255.0 * dd.std), dd.mean / dd.std
    compile_seconds = 0.0
    if cfg.compile:
        x0 = dd.train_x[: cfg.batch_size].float().mul_(scale).sub_(shift)
        compile_seconds = _warm_up(forward, model, x0.contiguous(memory_format=torch.channels_last),
                                   use_bf16(cfg.precision, device), device)
    timer = _Timer(device)
    progress = _Progress(not quiet)
    eval_model = ema if ema is not None else model
    from .reports import log_scalars, tensorboard_writer

    tb = tensorboard_writer(cfg.tensorboard) if cfg.tensorboard and writer is not None else None
    try:
        for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
            model.train()
            progress.start(f"epoch {epoch}/{cfg.epochs}", steps_per_epoch)
            timer.start()
            perm = torch.randperm(n, generator=gen, device=device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for i in range(steps_per_epoch):
                # this rank's shard of the global batch: every world-th index
                idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size][dist_.rank :: dist_.world]
                # [B,1,28,28] uint8 -> normalised float, augmented as one batch
                x = dd.train_x[idx].float().mul_(scale).sub_(shift)
                x = augment_batch(x, aug, aug_gen)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = dd.train_y[idx]
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(state["step"], total_steps, cfg.schedule, cfg.warmup)
                loss, logits = step_fn(x, y)
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                state["step"] += 1
                if ema is not None:
                    _ema_update(ema, model, cfg.ema)
                progress.advance()
            ep_seconds = timer.stop()
            progress.stop()
            state["train_seconds"] += ep_seconds
            t_ev = time.perf_counter()
            loss_sum, correct = _all_reduce_sum(dist_, loss_sum, correct)
            row = {"epoch": epoch, "train_loss": float(loss_sum) / n, "train_accuracy": float(correct) / n}
            if len(dd.val_y):
                vr = evaluate_model(eval_model, dd.val_x, dd.val_y, {"mean": dd.mean, "std": dd.std}, cfg.eval_batch_size)
                row.update(val_loss=vr.loss, val_accuracy=vr.accuracy)
            state["eval_seconds"] += time.perf_counter() - t_ev
            row.update(lr=opt.param_groups[0]["lr"], seconds=ep_seconds)
            state["history"].append(row)
            state["epoch"] = epoch
            if tb is not None:
                log_scalars(tb, row)
            stop = _early_stopping(state, row, cfg, eval_model)
            if writer is not None:
                save_checkpoint(writer / CHECKPOINT, state)
                write_history(writer, state["history"])
            say(_epoch_line(row, cfg.epochs))
            if on_epoch is not None:
                on_epoch(epoch, row)
            if stop:
                say(f"early stopping: {cfg.early_stopping_monitor} has not improved for "
                    f"{cfg.early_stopping_patience} epochs; restoring epoch {state['best_epoch']}")
                break
    except KeyboardInterrupt:
        progress.stop()
        where = f"; continue with `mnist-cnn train --out {out} --resume`" if out is not None else ""
        raise Interrupted(f"interrupted; the last completed epoch ({state['epoch']}) is saved{where}") from None

    if state["best"] is not None:
        eval_model.load_state_dict(state["best"])
    result = _finish(cfg, writer, eval_model, dd, state, data_seconds, compile_seconds,
                     evaluate_test and dist_.main, say)
    _barrier(dist_)
    return result


def _wrap_ddp(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DistributedDataParallel averages gradients across ranks after each backward."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _all_reduce_sum(d: Dist, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if d.world > 1:
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)
    return tensors


def _barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: on CUDA, and on CPUs whose oneDNN has native bf16 (AVX512-BF16/AMX), where it
    runs the seed's model about 2x faster; weights, optimiser state and the loss stay float32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _make_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig, device: torch.device):
    bf16 = use_bf16(cfg.precision, device)
    forward = torch.compile(model) if cfg.compile else model

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss, logits

    return step, forward


def _warm_up(forward: nn.Module, model: nn.Module, x: torch.Tensor, bf16: bool, device: torch.device) -> float:
    """Run torch.compile's one-off compilation outside the timed loop (forward + backward on a
    batch, then restore the weights/BN statistics so training is unaffected). Returns seconds."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    _sync(device)
    t = time.perf_counter()
    for _ in range(2):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            forward(x).float().sum().backward()
    _sync(device)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return time.perf_counter() - t


class _Timer:
    """Wall time of a region: CUDA events on a GPU (asynchronous kernels), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.t0, self.t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.t0.record()
        else:
            self.t = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.t1.record()
            self.t1.synchronize()
            return self.t0.elapsed_time(self.t1) / 1000
        return time.perf_counter() - self.t


def _restore(state: dict[str, Any], path: Path, device: torch.device) -> None:
    tensors, meta = load_checkpoint(path)
    state["model"].load_state_dict(_prefixed(tensors, "model."))
    if state["ema"] is not None:
        state["ema"].load_state_dict(_prefixed(tensors, "ema."))
    best = _prefixed(tensors, "best.")
    state["best"] = {k: v.to(device) for k, v in best.items()} or None
    _optim_from_tensors(state["optimizer"], {k: v.to(device) for k, v in tensors.items()}, meta["optimizer"])
    torch.set_rng_state(tensors["rng.torch"])
    state["gen"].set_state(tensors["rng.gen"])
    state["aug_gen"].set_state(tensors["rng.aug"])
    for k in ("epoch", "step", "history", "best_epoch", "best_score", "bad_epochs", "train_seconds", "eval_seconds"):
        state[k] = meta[k]


def _early_stopping(state: dict[str, Any], row: dict[str, float], cfg: TrainConfig, model: nn.Module) -> bool:
    if cfg.early_stopping_patience is None:
        return False
    score = row[cfg.early_stopping_monitor]
    better = (state["best_score"] is None
              or (score < state["best_score"] if cfg.early_stopping_monitor == "val_loss" else score > state["best_score"]))
    if better:
        state.update(best_score=score, best_epoch=row["epoch"], bad_epochs=0,
                     best={k: v.detach().clone() for k, v in model.state_dict().items()})
        return False
    state["bad_epochs"] += 1
    return state["bad_epochs"] >= cfg.early_stopping_patience


def _epoch_line(row: dict[str, float], epochs: int) -> str:
    line = (f"epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%")
    if "val_loss" in row:
        line += f"  val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
    return line + f"  {row['seconds']:.1f}s"


HISTORY_FIELDS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


def write_history(out: Path, history: list[dict[str, float]]) -> None:
    lines = [",".join(HISTORY_FIELDS)]
    for row in history:
        lines.append(",".join("" if row.get(k) is None else f"{row[k]:.6g}" for k in HISTORY_FIELDS))
    atomic_write_text(out / "history.csv", "\n".join(lines) + "\n")


def _finish(cfg, out, model, dd, state, data_seconds, compile_seconds, evaluate_test, say) -> TrainResult:
    norm = {"mean": dd.mean, "std": dd.std}
    ds = dd.dataset
    metrics: dict[str, Any] = {
        "model": cfg.model, "recipe": cfg.recipe, "dataset": cfg.dataset, "seed": cfg.seed,
        "params": count_params(model), "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
        "train_seconds": state["train_seconds"], "data_seconds": data_seconds,
        "compile_seconds": compile_seconds,
    }
    hist = state["history"]
    if hist and "val_accuracy" in hist[-1]:
        vr = evaluate_model(model, dd.val_x, dd.val_y, norm, cfg.eval_batch_size)
        metrics.update(val_accuracy=vr.accuracy, val_loss=vr.loss)
    test: EvalResult | None = None
    t_ev = time.perf_counter()
    if evaluate_test:
        test = evaluate_model(model, ds.test_images, ds.test_labels, norm, cfg.eval_batch_size)
        metrics.update(test_accuracy=test.accuracy, test_loss=test.loss)
    metrics["eval_seconds"] = state["eval_seconds"] + time.perf_counter() - t_ev
    if test is not None:
        metrics["per_class"] = test.per_class(ds.classes)
    meta = {"normalisation": norm, "classes": list(ds.classes), "dataset": cfg.dataset,
            "config": cfg.to_dict(), "metrics": {k: metrics.get(k) for k in ("test_accuracy", "val_accuracy")},
            "data_checksums": ds.checksums}
    if out is not None:
        model_cpu = model.to("cpu").to(memory_format=torch.contiguous_format)
        save_model(out / "model.safetensors", model_cpu, meta)
        if test is not None:
            from .reports import write_eval_artifacts

            write_eval_artifacts(out, test, ds.classes, metrics, split="test")
        else:
            atomic_write_json(out / "metrics.json", metrics)
        from .reports import plot_history

        plot_history(out / "history.png", state["history"], title=f"{cfg.model} ({cfg.dataset})")
        from .reports import write_run_report

        write_run_report(out, test, ds)
    if test is not None:
        say(f"test accuracy {100 * test.accuracy:.2f}%  test loss {test.loss:.4f}  "
            f"(train {state['train_seconds']:.1f}s)" + (f"  -> {out}" if out else ""))
    return TrainResult(out, model, metrics, state["history"], meta)
