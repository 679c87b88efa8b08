"""Model files: safetensors weights with everything needed to rebuild the model in the header.

``save_model`` writes, ``load_model`` checks the metadata (format, classes, normalisation, architecture)
and every tensor's name, shape and dtype against the architecture built on the meta device, then its
values (finite), and only then builds the model and loads the weights; nothing is ever unpickled.
"""

from __future__ import annotations

import math
import os
import reprlib
from typing import Any

import torch
from torch import nn

from mnist_cnn.artifacts.files import load_tensors, save_tensors
from mnist_cnn.artifacts.runs import resolve_model_path
from mnist_cnn.errors import CheckpointError, ConfigError, first_line
from mnist_cnn.models.registry import count_params, create_model, is_registered, list_models

FORMAT = "mnist-cnn/1"  # the metadata layout this version writes and reads


def save_model(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    """Write weights as safetensors with everything needed to rebuild the model in its header:
    ``arch`` (registry name + kwargs), ``normalisation``, ``classes``, ``dataset`` and ``meta``."""
    full = {"format": FORMAT, "arch": model.arch, "params": count_params(model), **meta}
    save_tensors(path, dict(model.state_dict()), full)


def check_metadata(meta: dict[str, Any], source: Any) -> None:
    """The fields every model file needs, each of the right type, and a format this version understands."""
    fmt = meta.get("format", FORMAT)  # files from before the field existed are format 1
    if fmt != FORMAT:
        raise CheckpointError(
            f"{source}: model file format {_short(fmt)} is not {FORMAT!r}, the one this mnist-cnn "
            "reads; upgrade mnist-cnn or re-export the model"
        )
    for key in ("normalisation", "classes"):
        if key not in meta:
            raise CheckpointError(f"{source}: metadata lacks {key!r}; it was not written by mnist-cnn")
    check_classes(meta["classes"], source)
    check_normalisation(meta["normalisation"], source)
    if "dataset" in meta and not isinstance(meta["dataset"], str):
        raise CheckpointError(f"{source}: metadata field 'dataset' must be a string, not {_short(meta['dataset'])}")


def check_classes(classes: Any, source: Any, width: int | None = None) -> list[str]:
    """``classes``: a non-empty list of strings, ``width`` of them when the model's output width is known."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(
            f"{source}: metadata field 'classes' must be a non-empty list of class names (strings), "
            f"not {_short(classes)}; re-train or re-export the model"
        )
    if width is not None and len(classes) != width:
        raise CheckpointError(
            f"{source}: metadata field 'classes' names {len(classes)} classes but the model outputs {width}; "
            "re-train or re-export the model"
        )
    return classes


def check_normalisation(norm: Any, source: Any) -> tuple[float, float]:
    """``normalisation``: ``{"mean": finite number, "std": finite number > 0}`` -> ``(mean, std)``."""
    if not isinstance(norm, dict):
        raise CheckpointError(
            f"{source}: metadata field 'normalisation' must be an object with 'mean' and 'std', not {_short(norm)}"
        )
    for key in ("mean", "std"):
        v = norm.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise CheckpointError(
                f"{source}: metadata field 'normalisation.{key}' must be a finite number, not {_short(v)}; "
                "re-train or re-export the model"
            )
    if norm["std"] <= 0:
        raise CheckpointError(
            f"{source}: metadata field 'normalisation.std' must be > 0, not {norm['std']!r}; "
            "re-train or re-export the model"
        )
    return float(norm["mean"]), float(norm["std"])


def _short(value: Any) -> str:
    """A value for a one-line message: its repr, cut to 60 characters."""
    text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _arch(meta: dict[str, Any], source: Any) -> tuple[str, dict[str, Any]]:
    arch = meta.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str):
        raise CheckpointError(f"{source}: metadata has no architecture ('arch'); it was not written by mnist-cnn")
    if not is_registered(arch["name"]):
        raise CheckpointError(
            f"{source}: unknown architecture {_short(arch['name'])}; this mnist-cnn knows: "
            f"{', '.join(list_models())} (upgrade mnist-cnn?)"
        )
    kwargs = arch.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{source}: metadata field 'arch.kwargs' must be an object of model options, not {_short(kwargs)}"
        )
    return arch["name"], kwargs


def build_from_meta(meta: dict[str, Any], source: Any = "model", device: str | torch.device | None = None) -> nn.Module:
    """The registered architecture named in a model file's metadata, freshly initialised
    (on ``device``; ``"meta"`` builds it without allocating its weights)."""
    name, kwargs = _arch(meta, source)
    try:
        if device is None:
            return create_model(name, **kwargs)
        with torch.device(device):
            return create_model(name, **kwargs)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: {exc}") from None


def expected_tensors(meta: dict[str, Any], source: Any = "model") -> tuple[dict[str, torch.Tensor], int | None]:
    """What the file's architecture needs, without allocating it: ``(state_dict of meta tensors
    (names, shapes, dtypes), output width)``. The width is None when it cannot be worked out."""
    try:
        model = build_from_meta(meta, source, device="meta")
    except NotImplementedError:  # an architecture that cannot be built on the meta device: build it for real
        model = build_from_meta(meta, source)
    device = next((t.device for t in model.state_dict().values()), torch.device("cpu"))
    try:
        with torch.inference_mode():
            out = model.eval()(torch.zeros(1, 1, 28, 28, device=device))
    except NotImplementedError:
        return dict(model.state_dict()), None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{source}: architecture {_name_of(meta)!r} does not take [N, 1, 28, 28] images "
            f"({first_line(exc)[:120]}); re-train the model"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CheckpointError(
            f"{source}: architecture {_name_of(meta)!r} outputs {shape}, not [N, classes]; re-train the model"
        )
    return dict(model.state_dict()), int(out.shape[1])


def _name_of(meta: dict[str, Any]) -> str:
    return str((meta.get("arch") or {}).get("name"))


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a .safetensors file, a run folder holding model.safetensors, or ``default``.

    Returns ``(model in eval mode, metadata)``. Shape/dtype mismatches, unknown architectures,
    malformed metadata, non-finite weights and files that are not ours raise
    :class:`CheckpointError`; nothing is ever unpickled. Every tensor is checked against the
    architecture built on the meta device (no memory) before the model is built for real, so a
    small file that names a huge architecture is refused before anything large is allocated.
    """
    p = resolve_model_path(path)
    tensors, meta = load_tensors(p)
    check_metadata(meta, p)
    expected, width = expected_tensors(meta, p)
    problems = _misfits(tensors, expected)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{p}: weights do not fit architecture {_name_of(meta)!r}: {'; '.join(problems[:3])}{more}"
        )
    check_classes(meta["classes"], p, width)
    check_finite(tensors, p)
    model = build_from_meta(meta, p)
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


def check_finite(tensors: dict[str, torch.Tensor], source: Any) -> None:
    """Every floating-point tensor finite (no NaN/inf), every BatchNorm running variance >= 0:
    either would make every prediction NaN."""
    for k, v in tensors.items():
        if not v.is_floating_point():
            continue
        if not bool(torch.isfinite(v).all()):
            raise CheckpointError(
                f"{source}: tensor {k} holds non-finite values (NaN or inf); the model diverged or the "
                "file was altered; re-train it"
            )
        if k.endswith("running_var") and bool((v < 0).any()):
            raise CheckpointError(f"{source}: tensor {k} holds negative variances; the file was altered; re-train it")


def _misfits(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """Every way the file's tensors differ from what the architecture needs (names, shapes, dtypes)."""
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k[:80]}" for k in tensors if k not in expected]
    problems += [
        f"{k}: {tuple(v.shape)} {v.dtype} in file, model needs {tuple(expected[k].shape)} {expected[k].dtype}"
        for k, v in tensors.items()
        if k in expected and (v.shape != expected[k].shape or v.dtype != expected[k].dtype)
    ]
    return problems
