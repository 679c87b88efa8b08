"""Shared helpers for the benchmark scripts: machine description, FLOP counting, matmul ceiling,
synthetic digits (also the test suite's tiny data sets: tests/conftest.py imports them from here)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def matmul_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype=torch.float32) -> float:
    """Measured dense matmul rate (the machine's practical compute ceiling), GFLOP/s."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def train_flops_per_image(model: torch.nn.Module) -> float:
    """FLOPs of one forward + backward pass per 28x28 image (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.train()
    x = torch.randn(8, 1, 28, 28)
    with FlopCounterMode(display=False) as fc:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops() / 8


def textbook_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                  bf16: bool, device_type: str = "cpu") -> None:  # fmt: skip
    """One optimiser step as a PyTorch user writes it: the baseline the engine is compared with."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mnist_tensor(
    images: np.ndarray, device: Any = "cpu", fmt: torch.memory_format = torch.contiguous_format
) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] normalised with MNIST's usual mean/std (0.1307, 0.3081)."""
    x = torch.from_numpy(images.copy()).to(device).float().div_(255).sub_(0.1307).div_(0.3081)
    return x.unsqueeze(1).contiguous(memory_format=fmt)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
        "n": len(values),
    }


def write_json(path: str | None, obj: Any) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2) + "\n")
        print(f"wrote {path}")


def synthetic_digits(n: int, seed: int = 0, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k is a bright bar at a class-specific position plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        r = 4 + 2 * int(k)
        images[i, r : r + 2, 4:24] = 255
        images[i, 4:24, r : r + 2] = 200
    return images, labels.astype(np.uint8)
