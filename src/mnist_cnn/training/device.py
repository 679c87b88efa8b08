"""Devices, threads, precision and process groups for the training engine."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from mnist_cnn.errors import MnistCnnError

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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """bf16 autocast: on CUDA, and on CPUs whose oneDNN has native bf16 (AVX512-BF16/AMX), where it
    runs the seed's model about 2x faster; weights, optimiser state and the loss stay float32."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Timer:
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
