"""Device choice: --device auto finds any accelerator PyTorch has; a missing one is a clear error."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from mnist_cnn.errors import ConfigError, MnistCnnError
from mnist_cnn.training.config import TrainConfig
from mnist_cnn.training.device import find_accelerator, resolve_device, use_bf16


def _none() -> str | None:
    return None


@pytest.mark.parametrize("found", ["cuda", "mps", "xpu"])
def test_auto_takes_the_accelerator_found(found: str):
    assert resolve_device("auto", find=lambda: found).type == found


def test_auto_falls_back_to_the_cpu():
    assert resolve_device("auto", find=_none) == torch.device("cpu")


@pytest.mark.parametrize(
    "name, label",
    [("cuda", "CUDA GPU"), ("cuda:1", "CUDA GPU"), ("mps", "Apple GPU (MPS)"), ("xpu", "Intel GPU (XPU)")],
)
def test_a_missing_accelerator_is_a_one_line_error(name: str, label: str):
    with pytest.raises(MnistCnnError) as err:
        resolve_device(name, available=lambda kind: False)
    assert str(err.value) == f"--device {name}: no {label} is available here; use --device cpu or auto"


def test_an_available_accelerator_is_used_as_asked():
    assert resolve_device("cuda:1", available=lambda kind: kind == "cuda") == torch.device("cuda", 1)
    assert resolve_device("cpu", available=lambda kind: False) == torch.device("cpu")


def test_this_machine():
    """On the CPU-only test machines auto is the CPU; wherever an accelerator exists it is found."""
    found = find_accelerator()
    assert resolve_device("auto") == torch.device(found or "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(MnistCnnError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "mps", "xpu", "xpu:1"])
def test_config_accepts_every_device_kind(device: str):
    TrainConfig(device=device).validate()


def test_config_refuses_an_unknown_device():
    with pytest.raises(ConfigError, match="must be auto, cpu, cuda"):
        TrainConfig(device="tpu").validate()


def test_precision_per_device():
    assert use_bf16("bf16", torch.device("cpu")) and not use_bf16("fp32", torch.device("cpu"))
    assert not use_bf16("auto", torch.device("mps"))  # fp32 on Apple GPUs
    assert use_bf16("auto", torch.device("xpu"))
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert use_bf16("auto", torch.device("cpu")) == native  # bf16 only where the CPU has it natively


def test_local_processes_of_a_multi_process_run_split_the_cores(monkeypatch):
    """Under torchrun each rank takes its share, without reading the load (its siblings would be
    it), and keeps it every epoch; a single process without --threads reads the load."""
    import mnist_cnn.cpu as cpu
    from mnist_cnn.training.device import setup_threads

    reads: list[int] = []
    monkeypatch.setattr(cpu, "process_meter", lambda: reads.append(1))  # None: fails if read
    monkeypatch.setattr(cpu, "cpu_quota", lambda: None)
    monkeypatch.setattr(cpu, "usable_cpus", lambda: {0, 1, 2, 3})
    monkeypatch.delenv(cpu.ENV_THREADS, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    before = torch.get_num_threads()
    try:
        threads = setup_threads(None)
        assert threads.choice.line == "threads: 2 of 4 (2 processes share the cores; --threads to override)"
        assert threads.recheck() is None and reads == [] and torch.get_num_threads() == 2
        assert setup_threads(3).choice.threads == 3
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
        with pytest.raises(AttributeError):  # the fake meter (None) was read
            setup_threads(None)
        assert reads == [1]
    finally:
        torch.set_num_threads(before)


ALLOC_PROBE = """
import resource, torch
from mnist_cnn.models.registry import create_model
from mnist_cnn.training.device import keep_freed_memory
print(keep_freed_memory())
torch.set_num_threads(1)
model = create_model("model1").to(memory_format=torch.channels_last)
x, y = torch.randn(32, 1, 28, 28).contiguous(memory_format=torch.channels_last), torch.randint(0, 10, (32,))
def step():  # a seed-recipe training step: a few MB of activations and gradients, all freed at its end
    torch.nn.functional.cross_entropy(model(x), y).backward()
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def _probe(env: dict[str, str]) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", ALLOC_PROBE], capture_output=True, text=True, check=True, env=env)
    allocator, faults = out.stdout.strip().splitlines()[-2:]
    return allocator, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_the_cpu_engine_keeps_freed_memory_so_steps_do_not_page_fault():
    env = {k: v for k, v in os.environ.items() if k != "MNIST_CNN_MALLOC"}
    allocator, faults = _probe(env)
    assert allocator.startswith("glibc, freed memory kept")
    # with malloc as the system sets it this process takes ~2,000 page faults per step (every step
    # touches fresh pages: docs/benchmarks.md); kept, the pages are reused
    assert faults < 100
    allocator, _ = _probe({**env, "MNIST_CNN_MALLOC": "system"})
    assert allocator == "system"
