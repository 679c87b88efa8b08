"""Devices, threads, precision and process groups for the training engine."""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mnist_cnn.cpu import AdaptiveThreads
from mnist_cnn.errors import MnistCnnError

# --------------------------------------------------------------------------- device + setup


ACCELERATORS = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)", "xpu": "Intel GPU (XPU)"}
DEVICE_KINDS = ("auto", "cpu", *ACCELERATORS)


def accelerator_available(kind: str) -> bool:
    """Whether this PyTorch build and machine can run on ``kind`` (cuda, mps or xpu)."""
    if kind == "cuda":
        return torch.cuda.is_available()
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    if kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        return bool(xpu is not None and xpu.is_available())
    return False


def find_accelerator() -> str | None:
    """The accelerator PyTorch would use here: ``torch.accelerator`` where this PyTorch has it,
    else the first of CUDA, MPS, XPU that is available; None on a CPU-only machine."""
    api = getattr(torch, "accelerator", None)
    if api is not None and api.is_available():
        current = api.current_accelerator()
        if current is not None and current.type in ACCELERATORS:
            return str(current.type)
    return next((kind for kind in ACCELERATORS if accelerator_available(kind)), None)


def resolve_device(
    name: str,
    *,
    find: Callable[[], str | None] = find_accelerator,
    available: Callable[[str], bool] = accelerator_available,
) -> torch.device:
    """``auto``: the machine's accelerator, else the CPU; ``cpu``, ``cuda[:N]``, ``mps``, ``xpu[:N]`` as
    asked, or a one-line error when it is not here. (``find``/``available`` are for tests.)"""
    if name == "auto":
        return torch.device(find() or "cpu")
    kind = name.split(":", 1)[0]
    if kind in ACCELERATORS and not available(kind):
        raise MnistCnnError(f"--device {name}: no {ACCELERATORS[kind]} is available here; use --device cpu or auto")
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


def setup_threads(threads: int | None) -> AdaptiveThreads:
    """The training process's intra-op threads (applied): ``threads`` when given, else the cores
    other processes leave free, chosen again between epochs (:mod:`mnist_cnn.cpu`); the local
    ranks of a multi-process run split the cores evenly."""
    return AdaptiveThreads(threads, processes=int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


# glibc's mallopt parameters (malloc.h) and the values the CPU engine sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value
TRIM_THRESHOLD = 1 << 30
_allocator: str | None = None


def keep_freed_memory() -> str:
    """Let glibc's malloc keep freed memory in the process instead of handing it back to the kernel.

    Why: by default an allocation over 128 KiB is its own mmap and is unmapped when freed, and a heap
    whose free top passes a (dynamically adjusted) threshold is trimmed. A training step frees and
    re-allocates the same few MB of activations and gradients every step, so the next step touches
    fresh pages: ~2,000 page faults per model1 step (batch 32), 5.8 -> 8.8 ms per fp32 step, the
    slowdown coming and going with the process's allocation history (docs/benchmarks.md). This is
    what PyTorch's CPU tuning guide fixes by preloading jemalloc or tcmalloc; mallopt does it in
    process. Set ``MNIST_CNN_MALLOC=system`` to leave malloc alone. Returns what is in effect.
    """
    global _allocator
    if _allocator is not None:
        return _allocator
    _allocator = "system"
    if os.environ.get("MNIST_CNN_MALLOC", "") != "system" and sys.platform.startswith("linux"):
        try:
            mallopt = ctypes.CDLL("libc.so.6").mallopt  # glibc; musl and others have no such library name
        except (OSError, AttributeError):
            return _allocator
        if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1:
            _allocator = f"glibc, freed memory kept (mmap threshold {MMAP_THRESHOLD >> 20} MiB)"
    return _allocator


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (accelerators run asynchronously), for honest timing."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type == "xpu":
        torch.xpu.synchronize(device)


def wrap_ddp(model: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    """DistributedDataParallel averages gradients across ranks after each backward."""
    if d.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(d: Dist, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    if d.world > 1:
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)
    return tensors


def barrier(d: Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast (weights, optimiser state and the loss stay float32). ``auto``: on CUDA GPUs
    with bf16, on Intel XPUs, and on CPUs whose oneDNN has native bf16 (AVX512-BF16/AMX), where it
    runs the seed's model about 2x faster; not on Apple MPS, nor on AVX2-only CPUs (emulated bf16 is
    slower than fp32 there)."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "xpu":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Timer:
    """Wall time of a region: CUDA events on a GPU (asynchronous kernels), perf_counter on CPU."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            self.t0, self.t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.t0.record()
        else:
            sync(self.device)
            self.t = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self.t1.record()
            self.t1.synchronize()
            return self.t0.elapsed_time(self.t1) / 1000
        sync(self.device)  # MPS/XPU: queued kernels count too
        return time.perf_counter() - self.t
