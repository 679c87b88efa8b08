"""The ConvNet family: conv blocks (conv -> [BN] -> ReLU -> [pool] -> [dropout]) and a dense head.

Every registered architecture is a point in this family (see :mod:`mnist_cnn.models.registry`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

# --------------------------------------------------------------------------- the ConvNet family

MAX_LAYERS = 256  # conv layers, and dense layers, at most: far beyond any 28x28 net, and cheap to build


def _per_layer(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries for {n} conv layers")
        return list(value)
    return [value] * n


def _sizes(values: Any, what: str, allow_empty: bool = False) -> list[int]:
    """A list of layer sizes: positive ints (not bools), at most MAX_LAYERS of them."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{what} must be a list of positive integers, not {type(values).__name__}")
    if not values and not allow_empty:
        raise ValueError(f"{what} must list at least one conv layer")
    if len(values) > MAX_LAYERS:
        raise ValueError(f"{what} lists {len(values)} layers; at most {MAX_LAYERS}")
    for v in values:
        if not _is_positive_int(v):
            raise ValueError(f"{what} must be positive integers, not {v!r}")
    return list(values)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and int(value) >= 1


def _positive_int(value: Any, what: str) -> int:
    if not _is_positive_int(value):
        raise ValueError(f"{what} must be a positive integer, not {value!r}")
    return int(value)


class ConvNet(nn.Module):
    """Conv layers (each: conv -> [BatchNorm] -> ReLU -> [MaxPool2] -> [Dropout2d]) then a dense head.

    ``kernel_size``, ``stride``, ``padding``, ``pool`` and ``conv_dropout`` take one value or one per layer.

    Shapes for the seed's model1: [B,1,28,28] -conv3-> [B,32,26,26] -pool-> [B,32,13,13]
    -conv3-> [B,64,11,11] -pool-> [B,64,5,5] -conv3-> [B,128,3,3] -pool-> [B,128,1,1]
    -flatten-> [B,128] -dense-> [B,128] -dense-> [B,10].
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int | Sequence[int] = 3,
        pool: bool | Sequence[bool] = True,
        padding: str | Sequence[str] = "valid",
        batchnorm: bool = False,
        head: Sequence[int] = (128,),
        dropout: float = 0.3,
        conv_dropout: float | Sequence[float] = 0.0,
        global_pool: bool = False,
        num_classes: int = 10,
        in_channels: int = 1,
        stride: int | Sequence[int] = 1,
        init: str = "torch",
        pool_first: bool = False,
    ):
        super().__init__()
        if init not in ("torch", "keras"):
            raise ValueError("init must be 'torch' or 'keras'")
        channels = _sizes(channels, "channels")
        head = _sizes(head, "head", allow_empty=True)
        _positive_int(num_classes, "num_classes")
        _positive_int(in_channels, "in_channels")
        n = len(channels)
        pads = _per_layer(padding, n, "padding")
        strides = [_positive_int(s, "stride") for s in _per_layer(stride, n, "stride")]
        cdrops = _per_layer(conv_dropout, n, "conv_dropout")
        if any(pd not in ("valid", "same") for pd in pads):
            raise ValueError("padding must be 'valid' or 'same'")
        if not 0.0 <= dropout < 1.0 or not all(0.0 <= d < 1.0 for d in cdrops):
            raise ValueError("dropout must be in [0, 1)")
        kernels = [_positive_int(k, "kernel_size") for k in _per_layer(kernel_size, n, "kernel_size")]
        pools = _per_layer(pool, n, "pool")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, k, p, pd, s, drop in zip(channels, kernels, pools, pads, strides, cdrops):
            # torch refuses padding="same" with stride > 1: pad k//2 (output ceil(in / s))
            pad = k // 2 if pd == "same" and s > 1 else pd
            # bias is redundant before BatchNorm (its shift absorbs it)
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=pad, bias=not batchnorm))
            layers += _norm_act_pool(c_out, batchnorm=batchnorm, pool=bool(p), pool_first=pool_first)
            if drop:
                layers.append(nn.Dropout2d(drop))
            c_in = c_out
        if global_pool:
            layers.append(nn.AdaptiveAvgPool2d(1))
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        flat = _flat_size(layers, in_channels, channels[-1])
        if flat == 0:
            raise ValueError("the conv/pool stack shrinks a 28x28 image to nothing")
        dense: list[nn.Module] = []
        d_in = flat
        for width in head:
            dense += [nn.Linear(d_in, width), nn.ReLU(inplace=True)]
            if dropout:
                dense.append(nn.Dropout(dropout))
            d_in = width
        dense.append(nn.Linear(d_in, num_classes))
        self.classifier = nn.Sequential(*dense)
        if init == "keras":  # the seed tutorial's Keras defaults: glorot-uniform weights, zero biases
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _flat_size(layers: list[nn.Module], in_channels: int, last: int) -> int:
    """The flattened size of ``layers``' output for a 28x28 image, from a dry run of their shapes
    alone: each conv as a one-channel conv of the same geometry, on the CPU whatever device the
    model is built on (a dry run on the meta device loads torch's compiler stack: ~1.5 s of every
    model load), channel-wise layers (BatchNorm, ReLU, dropout) skipped. 0 when nothing is left."""
    probe: list[nn.Module] = []
    with torch.device("cpu"):
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                k, st, pad = layer.kernel_size, layer.stride, layer.padding
                probe.append(nn.Conv2d(1, 1, k, stride=st, padding=pad, bias=False))  # type: ignore[arg-type]
            elif isinstance(layer, (nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)):
                probe.append(layer)
        try:
            with torch.no_grad():
                h_w = nn.Sequential(*probe)(torch.zeros(1, 1, 28, 28)).numel()
        except RuntimeError:
            return 0
    return h_w * last


def _norm_act_pool(channels: int, *, batchnorm: bool, pool: bool, pool_first: bool) -> list[nn.Module]:
    """What follows a conv: [BatchNorm] -> ReLU -> [MaxPool2], cheapest order first.

    Without BatchNorm the pool goes before the ReLU: max-pooling commutes with any monotone map, so
    relu(max(a, b)) == max(relu(a), relu(b)) -- the same function and gradients, with the ReLU (and its
    backward) on a quarter of the values. With BatchNorm, ``pool_first`` moves the pool before it too
    (conv -> pool -> BN -> ReLU): not identical (BN's scale may be negative, and its statistics are of
    pooled values) but it trains as well and the elementwise work, half an fp32 CPU step, drops 4x.
    The module order (not the parameter names) is all that changes for nets without BatchNorm.
    """
    pool_layer: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
    if not batchnorm:
        return [*pool_layer, nn.ReLU(inplace=True)]
    norm_act: list[nn.Module] = [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
    return [*pool_layer, *norm_act] if pool_first else [*norm_act, *pool_layer]
