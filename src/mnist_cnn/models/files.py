"""Model files: safetensors weights with everything needed to rebuild the model in the header.

``save_model`` writes, ``load_model`` rebuilds the registered architecture named in the metadata and
checks every tensor against it before loading; nothing is ever unpickled.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from mnist_cnn.artifacts.files import load_tensors, save_tensors
from mnist_cnn.artifacts.runs import resolve_model_path
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.models.registry import count_params, create_model, is_registered, list_models

FORMAT = "mnist-cnn/1"  # the metadata layout this version writes and reads


def save_model(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    """Write weights as safetensors with everything needed to rebuild the model in its header:
    ``arch`` (registry name + kwargs), ``normalisation``, ``classes``, ``dataset`` and ``meta``."""
    full = {"format": FORMAT, "arch": model.arch, "params": count_params(model), **meta}
    save_tensors(path, dict(model.state_dict()), full)


def check_metadata(meta: dict[str, Any], source: Any) -> None:
    """The fields every model file needs, and a format this version understands."""
    fmt = meta.get("format", FORMAT)  # files from before the field existed are format 1
    if fmt != FORMAT:
        raise CheckpointError(
            f"{source}: model file format {fmt!r} is not {FORMAT!r}, the one this mnist-cnn "
            "reads; upgrade mnist-cnn or re-export the model"
        )
    for key in ("normalisation", "classes"):
        if key not in meta:
            raise CheckpointError(f"{source}: metadata lacks {key!r}; it was not written by mnist-cnn")


def build_from_meta(meta: dict[str, Any], source: Any = "model") -> nn.Module:
    """The registered architecture named in a model file's metadata, freshly initialised."""
    arch = meta.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{source}: metadata has no architecture ('arch'); it was not written by mnist-cnn")
    if not is_registered(arch["name"]):
        raise CheckpointError(
            f"{source}: unknown architecture {arch['name']!r}; this mnist-cnn knows: "
            f"{', '.join(list_models())} (upgrade mnist-cnn?)"
        )
    try:
        return create_model(arch["name"], **(arch.get("kwargs") or {}))
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a .safetensors file, a run folder holding model.safetensors, or ``default``.

    Returns ``(model in eval mode, metadata)``. Shape/dtype mismatches, unknown architectures and
    files that are not ours raise :class:`CheckpointError`; nothing is ever unpickled.
    """
    p = resolve_model_path(path)
    tensors, meta = load_tensors(p)
    check_metadata(meta, p)
    model = build_from_meta(meta, p)
    problems = _misfits(tensors, model.state_dict())
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{p}: weights do not fit architecture {meta['arch']['name']!r}: {'; '.join(problems[:3])}{more}"
        )
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


def _misfits(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Every way the file's tensors differ from what the architecture needs (names, shapes, dtypes)."""
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"{k}: {tuple(v.shape)} {v.dtype} in file, model needs {tuple(expected[k].shape)} {expected[k].dtype}"
        for k, v in tensors.items()
        if k in expected and (v.shape != expected[k].shape or v.dtype != expected[k].dtype)
    ]
    return problems
