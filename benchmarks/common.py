"""Shared helpers for the benchmark scripts: the machine, loading a model, undoing its calibration,
timing, atomic JSON results, FLOP counting, the matmul ceiling and synthetic digits (also the test
suite's tiny data sets: tests/helpers.py imports them from here).

Only the standard library and NumPy are imported at module level, and nothing here imports
``mnist_cnn`` at import time: ``keras_reference.py`` uses this module under TensorFlow's own
virtualenv, where neither torch nor mnist_cnn is installed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

T = TypeVar("T")

# The committed raw results the docs quote; pass --out benchmarks/results/NAME.json to add one.
RESULTS = Path(__file__).resolve().parent / "results"


# -- the machine ------------------------------------------------------------------------------------


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (what decides the kernels oneDNN and ONNX Runtime use)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU, cores, torch version and threads (and the GPU, if any) for a results file."""
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# -- models and their calibration -------------------------------------------------------------------


def load_torch_model(spec: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A run folder, ``.safetensors`` file or ``default`` -> (the model in eval mode, its metadata),
    resolved and loaded exactly as ``mnist-cnn`` does (never unpickled)."""
    from mnist_cnn.artifacts.runs import resolve_model_path
    from mnist_cnn.models.files import load_model

    model, meta = load_model(resolve_model_path(spec))
    return model.eval(), meta


def temperature_of(predictor: Any) -> float:
    """The temperature the predictor divides by (an ONNX file records it in its metadata)."""
    t = getattr(predictor, "temperature", None)
    return float(t if t is not None else (predictor.info.get("calibration") or {}).get("temperature", 1.0))


def metadata_of(predictor: Any) -> dict[str, Any]:
    """The model's metadata (an ensemble's: its first member's; the members share the split)."""
    meta = getattr(predictor, "meta", None)
    return meta if meta is not None else predictor.members[0].meta


def uncalibrated_scores(probs: np.ndarray, temperature: float, factors: np.ndarray | None = None) -> np.ndarray:
    """Calibrated probabilities [N, C] -> scores whose softmax is the model's uncalibrated
    probabilities: ``T * f * log p``, ``f`` each image's contrast factor [N] (1 for tensors).
    Benchmarks that refit or judge a calibration start from these, whatever the backend."""
    from mnist_cnn.evaluation.calibration import log_probs

    scores = log_probs(probs) * temperature
    return scores if factors is None else scores * np.asarray(factors, dtype=np.float64).reshape(-1, 1)


# -- timing -------------------------------------------------------------------------------------------


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """``fn(*args, **kwargs)``'s result and its wall seconds."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def time_calls(fn: Callable[[], Any], calls: int, warmup: int = 0) -> list[float]:
    """Wall seconds of each of ``calls`` calls of ``fn``, after ``warmup`` untimed ones
    (allocators, lazy kernels and caches settle in those)."""
    for _ in range(warmup):
        fn()
    return [timed(fn)[1] for _ in range(calls)]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
        "n": len(values),
    }


# -- results ------------------------------------------------------------------------------------------


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # NumPy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike[str] | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (a temporary file in the same folder,
    fsync, rename), so an interrupted benchmark never leaves half a results file; ``None``: nothing.
    Standard library only, for the reason in the module docstring."""
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {target}")


# -- compute --------------------------------------------------------------------------------------------


def matmul_gflops(n: int = 2048, repeats: int = 5, device: str = "cpu", dtype: Any = None) -> float:
    """Measured dense matmul rate (the machine's practical compute ceiling), GFLOP/s; fp32 by default."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)

    def product() -> None:
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()

    return 2 * n**3 / min(time_calls(product, repeats, warmup=1)) / 1e9


def train_flops_per_image(model: torch.nn.Module) -> float:
    """FLOPs of one forward + backward pass per 28x28 image (torch's FlopCounterMode)."""
    import torch
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
    import torch

    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
        loss = torch.nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def mnist_tensor(images: np.ndarray, device: Any = "cpu", fmt: torch.memory_format | None = None) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] normalised with MNIST's usual mean/std (0.1307, 0.3081)."""
    import torch

    x = torch.from_numpy(images.copy()).to(device).float().div_(255).sub_(0.1307).div_(0.3081)
    return x.unsqueeze(1).contiguous(memory_format=fmt or torch.contiguous_format)


# -- data -------------------------------------------------------------------------------------------------


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
