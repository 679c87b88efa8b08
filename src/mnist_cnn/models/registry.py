"""Model registry: one decorated function per architecture (timm style).

``create_model(name, **overrides)`` builds a registered model; ``list_models()`` lists names.
Every model takes normalised images ``[B, 1, 28, 28]`` float and returns logits ``[B, classes]``.
The name and the keyword arguments used are kept on the module (``model.arch``) and saved in
the weights' metadata, so any later command can rebuild the model from the file alone.

Most architectures are points in one configurable family, :class:`ConvNet`; the architecture
search builds its candidates through the same ``convnet`` entry.
"""

from __future__ import annotations

import inspect
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from mnist_cnn.errors import ConfigError, first_line
from mnist_cnn.models.convnet import ConvNet
from mnist_cnn.models.hvc import HVCNet


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: register ``fn`` under its name; its docstring's first line describes it."""
    doc = (fn.__doc__ or "").strip().splitlines()
    _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, doc[0] if doc else "")
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; valid models: {', '.join(list_models())}") from None


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build registered model ``name``; ``overrides`` go to its function (e.g. ``dropout=0.1``)."""
    entry = model_entry(name)
    params = inspect.signature(entry.fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(overrides) - set(params)) if not takes_any else []
    if unknown:
        listed = ", ".join(k[:40] for k in unknown[:5]) + (f" (+{len(unknown) - 5} more)" if len(unknown) > 5 else "")
        raise ConfigError(f"model {name!r} has no option(s) {listed}; it takes: {', '.join(params)}")
    try:
        model = entry.fn(**overrides)
    except NotImplementedError:  # e.g. an operation a meta-device build does not support: the caller decides
        raise
    except (TypeError, ValueError, ArithmeticError, RuntimeError) as exc:
        # RuntimeError: torch's own checks (negative sizes, ...); ArithmeticError: overflow, division by zero
        shown = reprlib.repr(overrides)
        raise ConfigError(f"model {name!r}: invalid options {shown}: {first_line(exc)}") from None
    # kept on the module so save_model can write it; nn.Module.__setattr__ is typed for tensors/modules only
    model.arch = {"name": name, "kwargs": dict(overrides)}  # type: ignore[assignment]
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@register_model
def convnet(**kwargs: Any) -> nn.Module:
    """Configurable CNN family (conv blocks, pooling, BatchNorm, dense head): used by search."""
    return ConvNet(**kwargs)


@register_model
def model1(dropout: float = 0.3, num_classes: int = 10, init: str = "keras") -> nn.Module:
    """The seed's Model 1: conv 32/64/128 (3x3, pool each) -> dense 128 -> 10 (110,474 params).

    ``init="keras"`` (default): the seed's Keras initialisation (glorot-uniform weights, zero biases),
    with which the seed recipe reaches 98.89 +- 0.07% (3 seeds) against 98.59 +- 0.28% from torch's
    default init (``init="torch"``); docs/benchmarks.md."""
    return ConvNet((32, 64, 128), head=(128,), dropout=dropout, num_classes=num_classes, init=init)


@register_model
def model2(dropout: float = 0.3, num_classes: int = 10, init: str = "keras") -> nn.Module:
    """The seed's Model 2: same convs -> dense 128/64/32 -> 10 (119,850 params); Keras init as model1."""
    return ConvNet((32, 64, 128), head=(128, 64, 32), dropout=dropout, num_classes=num_classes, init=init)


@register_model
def fastnet(width: int = 16, blocks: int = 3, num_classes: int = 10, pool_first: bool = False) -> nn.Module:
    """Speed-recipe net: BN conv blocks of width*2^i channels (3x3 same, pool each) -> linear."""
    # blocks=3, width=16: [B,1,28,28] -> [B,16,14,14] -> [B,32,7,7] -> [B,64,3,3] -> 576 -> 10
    #   (29,178 params, ~1.9 MMAC per image);
    # blocks=4 adds [B,128,1,1]: a cheap, wide last block at 3x3 resolution (98,682 params).
    channels = tuple(width * 2**i for i in range(blocks))
    # pool_first=True: conv -> pool -> BN -> ReLU, a third less time per fp32 CPU step (convnet.py)
    return ConvNet(
        channels, padding="same", batchnorm=True, head=(), dropout=0.0, num_classes=num_classes, pool_first=pool_first
    )


@register_model
def smallcnn(width: int = 16, hidden: int = 256, num_classes: int = 10) -> nn.Module:
    """The published 1-epoch small CNN's shape (conv5 -> pool -> conv3 -> pool -> dense) with BatchNorm
    after each pool; width=16 is the fast99 net (212,730 params, ~0.9 MMAC per image)."""
    # [B,1,28,28] -conv5-> [B,w,24,24] -pool-> [B,w,12,12] -conv3-> [B,2w,10,10] -pool-> [B,2w,5,5]
    #   -> 50w -> hidden -> 10.  Measured on one fp32/AVX2 thread (docs/benchmarks.md): a 16-channel first
    #   conv instead of the published 24 cut fast99's epoch from 7.5 to 6.0 s at the same validation
    #   accuracy, and dropping the dense layer cost 0.3 points for little time.
    return ConvNet(
        (width, 2 * width), kernel_size=(5, 3), batchnorm=True, pool_first=True,
        head=(hidden,), dropout=0.0, num_classes=num_classes,
    )  # fmt: skip


# --------------------------------------------------------------------------- accuracy models (issue 4)


@register_model
def bncnn(width: int = 32, dropout: float = 0.4, num_classes: int = 10) -> nn.Module:
    """Kaggle-famous BatchNorm CNN (Deotte): conv3,conv3,conv5/2 at w then 2w, conv4 4w (325,994 params)."""
    # learnable (strided) downsampling instead of max-pooling, dropout after each block:
    # [B,1,28,28] -3-> 26 -3-> 24 -5/2-> [B,w,12,12] -3-> 10 -3-> 8 -5/2-> [B,2w,4,4] -4-> [B,4w,1,1] -> 10
    w, d = width, dropout
    return ConvNet(
        (w, w, w, 2 * w, 2 * w, 2 * w, 4 * w),
        kernel_size=(3, 3, 5, 3, 3, 5, 4),
        stride=(1, 1, 2, 1, 1, 2, 1),
        padding=("valid", "valid", "same") * 2 + ("valid",),
        pool=False,
        batchnorm=True,
        conv_dropout=(0, 0, d, 0, 0, d, d),
        head=(),
        dropout=0.0,
        num_classes=num_classes,
    )


@register_model
def hvcnet(
    width: int = 16, layers: int = 9, capsule_dim: int = 8, dropout: float = 0.0, num_classes: int = 10
) -> nn.Module:
    """Byerly-style net: 3x3 convs without pooling, BN, homogeneous vector capsule branches (1.5M params)."""
    # width 16 (the paper's channels 32..160): [B,1,28,28] -> 3 convs -> [B,64,22,22] -HVC-> 10
    #   -> 3 convs -> [B,112,16,16] -HVC-> 10 -> 3 convs -> [B,160,10,10] -HVC-> 10; logits summed
    return HVCNet(width=width, layers=layers, capsule_dim=capsule_dim, dropout=dropout, num_classes=num_classes)
