"""Model files: safetensors weights with everything needed to rebuild the model in the header.

``save_model`` writes, ``load_model`` checks the metadata (format, classes, normalisation, architecture)
and every tensor's name, shape and dtype against the architecture built on the meta device, then its
values (finite), and only then builds the model and loads the weights; nothing is ever unpickled.

A model's probability calibration (``calibration``: the temperature its logits are divided by) is
stored in its metadata when training fits it, or in a sidecar JSON next to the file (``<stem>.json``:
``default.json`` for the bundled model, ``model.json`` in a run folder) when ``mnist-cnn calibrate``
fits it later, so that re-fitting never changes the weights file or its sha256. The sidecar's
calibration names the sha256 of the weights it was fitted for and wins over the metadata's.
"""

from __future__ import annotations

import math
import os
import reprlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn.artifacts.files import atomic_write_json, load_tensors, read_json, save_tensors, sha256_file
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
    temperature_of(meta, source)


def temperature_of(meta: dict[str, Any], source: Any) -> float:
    """The temperature a model's logits are divided by: its ``calibration`` metadata's, 1 without one."""
    cal = meta.get("calibration")
    return 1.0 if cal is None else check_calibration(cal, source)


def check_calibration(cal: Any, source: Any) -> float:
    """``calibration``: an object whose ``temperature`` is a positive finite number -> that number."""
    fix = "re-fit it with `mnist-cnn calibrate MODEL`"
    if not isinstance(cal, dict):
        raise CheckpointError(
            f"{source}: metadata field 'calibration' must be an object with a 'temperature', not {_short(cal)}; {fix}"
        )
    t = cal.get("temperature")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise CheckpointError(
            f"{source}: metadata field 'calibration.temperature' must be a positive finite number, not {_short(t)}; "
            f"{fix}"
        )
    return float(t)


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON next to a model file that may hold its calibration: ``default.json``, ``model.json``."""
    return Path(path).with_suffix(".json")


def sidecar_calibration(path: Path) -> dict[str, Any] | None:
    """The calibration ``mnist-cnn calibrate`` stored next to ``path``, checked to be for these weights;
    None when there is none."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    data = read_json(side, "model sidecar")
    if not isinstance(data, dict) or "calibration" not in data:
        return None
    cal = data["calibration"]
    check_calibration(cal, side)
    if cal.get("weights_sha256") != sha256_file(path):
        raise CheckpointError(
            f"{side}: field 'calibration' was fitted for other weights than {path.name} (weights_sha256 differs); "
            f"re-fit it with `mnist-cnn calibrate {path}`"
        )
    return cal


def model_calibration(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The calibration a model file (run folder, ``default``) uses: its sidecar's, else its metadata's;
    None for a model without one. Checked, without building the model."""
    p = resolve_model_path(path)
    meta = load_tensors(p)[1]
    cal = sidecar_calibration(p) or meta.get("calibration")
    if cal is not None:
        check_calibration(cal, p)
    return cal


def write_calibration(path: str | os.PathLike[str], calibration: dict[str, Any]) -> Path:
    """Store ``calibration`` (for the weights in ``path``) in the sidecar JSON, keeping its other
    fields; written atomically. Returns the sidecar's path."""
    side = sidecar_path(path)
    data = read_json(side, "model sidecar") if side.is_file() else {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{side}: is not a JSON object, so the calibration cannot be added; move it away")
    data["calibration"] = {**calibration, "weights_sha256": sha256_file(path)}
    atomic_write_json(side, data)
    return side


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


def expected_tensors(meta: dict[str, Any], source: Any = "model") -> dict[str, torch.Tensor]:
    """What the file's architecture needs, without allocating it: its state_dict of meta tensors
    (names, shapes, dtypes)."""
    try:
        model = build_from_meta(meta, source, device="meta")
    except NotImplementedError:  # an architecture that cannot be built on the meta device: build it for real
        model = build_from_meta(meta, source)
    return dict(model.state_dict())


def output_width(model: nn.Module, meta: dict[str, Any], source: Any = "model") -> int:
    """How many classes ``model`` (built for real, on the CPU) answers for a [1, 1, 28, 28] image. On the
    real model, not the meta one: the meta device's kernels load torch's compiler stack (about 1.5 s
    of every ``predict``), and the real one is built anyway once the tensors fit."""
    try:
        with torch.inference_mode():
            out = model.eval()(torch.zeros(1, 1, 28, 28))
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
    return int(out.shape[1])


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
    cal = sidecar_calibration(p)
    if cal is not None:
        meta["calibration"] = cal
    problems = _misfits(tensors, expected_tensors(meta, p))
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"{p}: weights do not fit architecture {_name_of(meta)!r}: {'; '.join(problems[:3])}{more}"
        )
    model = build_from_meta(meta, p)  # the tensors fit it: no larger than the file
    check_classes(meta["classes"], p, output_width(model, meta, p))
    check_finite(tensors, p)
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
    # in the architecture's (state_dict) order: the file's own key order is not stable between
    # processes, and the message shows only the first three
    problems += [
        f"{k}: {tuple(tensors[k].shape)} {tensors[k].dtype} in file, model needs {tuple(e.shape)} {e.dtype}"
        for k, e in expected.items()
        if k in tensors and (tensors[k].shape != e.shape or tensors[k].dtype != e.dtype)
    ]
    return problems
