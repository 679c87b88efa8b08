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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import ConfigError


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
        raise ConfigError(f"model {name!r} has no option(s) {', '.join(unknown)}; it takes: {', '.join(params)}")
    try:
        model = entry.fn(**overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: invalid options {overrides}: {exc}") from None
    model.arch = {"name": name, "kwargs": dict(overrides)}
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- the ConvNet family


def _per_layer(value: Any, n: int, what: str) -> list[Any]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries for {n} conv layers")
        return list(value)
    return [value] * n


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
    ):
        super().__init__()
        if init not in ("torch", "keras"):
            raise ValueError("init must be 'torch' or 'keras'")
        n = len(channels)
        if n == 0:
            raise ValueError("channels must list at least one conv layer")
        pads = _per_layer(padding, n, "padding")
        strides = _per_layer(stride, n, "stride")
        cdrops = _per_layer(conv_dropout, n, "conv_dropout")
        if any(pd not in ("valid", "same") for pd in pads):
            raise ValueError("padding must be 'valid' or 'same'")
        if not 0.0 <= dropout < 1.0 or not all(0.0 <= d < 1.0 for d in cdrops):
            raise ValueError("dropout must be in [0, 1)")
        kernels = _per_layer(kernel_size, n, "kernel_size")
        pools = _per_layer(pool, n, "pool")
        layers: list[nn.Module] = []
        c_in = in_channels
        for c_out, k, p, pd, s, conv_dropout in zip(channels, kernels, pools, pads, strides, cdrops):
            # torch refuses padding="same" with stride > 1: pad k//2 (output ceil(in / s))
            pad = k // 2 if pd == "same" and s > 1 else pd
            # bias is redundant before BatchNorm (its shift absorbs it)
            layers.append(nn.Conv2d(c_in, c_out, k, stride=s, padding=pad, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if p:
                layers.append(nn.MaxPool2d(2))
            if conv_dropout:
                layers.append(nn.Dropout2d(conv_dropout))
            c_in = c_out
        if global_pool:
            layers.append(nn.AdaptiveAvgPool2d(1))
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        try:  # infer the flattened size with a dry run on two 28x28 images (BatchNorm needs >1 value)
            with torch.no_grad():
                flat = self.features(torch.zeros(2, in_channels, 28, 28)).shape[1]
        except RuntimeError:
            flat = 0
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


@register_model
def convnet(**kwargs: Any) -> nn.Module:
    """Configurable CNN family (conv blocks, pooling, BatchNorm, dense head): used by search."""
    return ConvNet(**kwargs)


@register_model
def model1(dropout: float = 0.3, num_classes: int = 10, init: str = "torch") -> nn.Module:
    """The seed's Model 1: conv 32/64/128 (3x3, pool each) -> dense 128 -> 10 (110,474 params)."""
    return ConvNet((32, 64, 128), head=(128,), dropout=dropout, num_classes=num_classes, init=init)


@register_model
def model2(dropout: float = 0.3, num_classes: int = 10, init: str = "torch") -> nn.Module:
    """The seed's Model 2: same convs -> dense 128/64/32 -> 10 (119,850 params)."""
    return ConvNet((32, 64, 128), head=(128, 64, 32), dropout=dropout, num_classes=num_classes, init=init)



@register_model
def fastnet(width: int = 16, blocks: int = 3, num_classes: int = 10) -> nn.Module:
    """Speed-recipe net: BN conv blocks of width*2^i channels (3x3 same, pool each) -> linear."""
    # blocks=3, width=16: [B,1,28,28] -> [B,16,14,14] -> [B,32,7,7] -> [B,64,3,3] -> 576 -> 10
    #   (29,178 params, ~1.9 MMAC per image);
    # blocks=4 adds [B,128,1,1]: a cheap, wide last block at 3x3 resolution (98,682 params).
    channels = tuple(width * 2**i for i in range(blocks))
    return ConvNet(channels, padding="same", batchnorm=True, head=(), dropout=0.0, num_classes=num_classes)

# --------------------------------------------------------------------------- model files

FORMAT = "mnist-cnn/1"


def save_model(path: Any, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write weights as safetensors with everything needed to rebuild the model in its header:
    ``arch`` (registry name + kwargs), ``normalisation``, ``classes``, ``dataset`` and ``meta``."""
    from .files import save_tensors

    full = {"format": FORMAT, "arch": model.arch, "params": count_params(model), **meta}
    save_tensors(path, dict(model.state_dict()), full)


def build_from_meta(meta: dict[str, Any], source: Any = "model") -> nn.Module:
    from .errors import CheckpointError

    arch = meta.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{source}: metadata has no architecture ('arch'); it was not written by mnist-cnn")
    if arch["name"] not in _REGISTRY:
        raise CheckpointError(f"{source}: unknown architecture {arch['name']!r}; this mnist-cnn knows: "
                              f"{', '.join(list_models())} (upgrade mnist-cnn?)")
    try:
        return create_model(arch["name"], **(arch.get("kwargs") or {}))
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def load_model(path: Any, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a .safetensors file (or a run folder holding model.safetensors).

    Returns ``(model in eval mode, metadata)``. Shape/dtype mismatches, unknown architectures and
    files that are not ours raise :class:`CheckpointError`; nothing is ever unpickled.
    """
    from pathlib import Path

    from .errors import CheckpointError
    from .files import load_tensors

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.exists():
        raise CheckpointError(f"{p}: model file not found; train a model first (mnist-cnn train) or check the path")
    tensors, meta = load_tensors(p)
    for key in ("normalisation", "classes"):
        if key not in meta:
            raise CheckpointError(f"{p}: metadata lacks {key!r}; it was not written by mnist-cnn")
    model = build_from_meta(meta, p)
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"{k}: {tuple(v.shape)} {v.dtype} in file, model needs {tuple(expected[k].shape)} {expected[k].dtype}"
        for k, v in tensors.items()
        if k in expected and (v.shape != expected[k].shape or v.dtype != expected[k].dtype)
    ]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(f"{p}: weights do not fit architecture {meta['arch']['name']!r}: "
                              f"{'; '.join(problems[:3])}{more}")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


# --------------------------------------------------------------------------- accuracy models (issue 4)


@register_model
def bncnn(width: int = 32, dropout: float = 0.4, num_classes: int = 10) -> nn.Module:
    """Kaggle-famous BatchNorm CNN (Deotte): conv3,conv3,conv5/2 at w then 2w, conv4 4w (325,994 params)."""
    # learnable (strided) downsampling instead of max-pooling, dropout after each block:
    # [B,1,28,28] -3-> 26 -3-> 24 -5/2-> [B,w,12,12] -3-> 10 -3-> 8 -5/2-> [B,2w,4,4] -4-> [B,4w,1,1] -> 10
    w, d = width, dropout
    return ConvNet((w, w, w, 2 * w, 2 * w, 2 * w, 4 * w), kernel_size=(3, 3, 5, 3, 3, 5, 4),
                   stride=(1, 1, 2, 1, 1, 2, 1), padding=("valid", "valid", "same") * 2 + ("valid",),
                   pool=False, batchnorm=True, conv_dropout=(0, 0, d, 0, 0, d, d), head=(), dropout=0.0,
                   num_classes=num_classes)
