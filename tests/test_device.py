"""Device choice: --device auto finds any accelerator PyTorch has; a missing one is a clear error."""

from __future__ import annotations

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
