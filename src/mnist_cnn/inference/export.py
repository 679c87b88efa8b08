"""ONNX export: a trained model with its normalisation inside the graph, checked and verified.

The exported graph's contract (what every ONNX consumer must feed it):

* input ``images``: float32 ``[N, 1, 28, 28]``, pixel values in 0..1 (``uint8 / 255``), the
  digit bright on a dark background like MNIST; ``N`` is a dynamic batch axis.
* output ``logits``: float32 ``[N, C]``, already divided by the model's calibration temperature
  (apply softmax for calibrated probabilities), class order as in the metadata's ``classes``.
* metadata_props ``mnist_cnn``: JSON of the safetensors metadata (arch, normalisation, classes,
  dataset, config, metrics, ...) plus ``source`` (the model file it came from) and ``accuracy``.

The model's own ``(x - mean) / std`` and the division by its temperature (``calibration`` in the
metadata, with ``"in_graph": true``) run inside the graph, so a consumer never needs to know them.
A calibration's ``contrast_power`` cannot: it needs the ink signal that preprocessing measures
on the photo (``PreprocessResult.signal``). mnist-cnn's ONNX predictor applies it after the graph (as
for torch models); another consumer that preprocesses photos itself divides the logits once more by
``(255 / signal) ** contrast_power`` (the metadata says so in ``calibration.outside_graph``).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.files import atomic_path
from mnist_cnn.artifacts.runs import resolve_model_path
from mnist_cnn.data.datasets import load_dataset
from mnist_cnn.errors import ExportError, MnistCnnError, first_line
from mnist_cnn.evaluation.calibration import softmax
from mnist_cnn.evaluation.metrics import predict_logits
from mnist_cnn.inference.onnx import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, onnx_input, onnx_session
from mnist_cnn.models.files import load_model, temperature_of

PARITY_TOLERANCE = 1e-4  # max |logit_torch - logit_onnxruntime| accepted by verify_parity
OPSET = 18

INPUT_DOC = (
    "input 'images': float32 [N,1,28,28], values 0..1 (uint8 pixels / 255), digit bright on dark, "
    "dynamic batch N; output 'logits': float32 [N,C], divided by the calibration temperature (softmax for "
    "calibrated probabilities); normalisation and temperature are inside the graph; "
    "metadata_props['mnist_cnn'] holds classes, source, accuracy and calibration"
)


@dataclass
class ParityReport:
    n: int  # images compared
    images: str  # where they came from ("mnist test split", "random")
    max_abs_logit_diff: float
    max_abs_prob_diff: float
    same_argmax: float  # fraction of images whose predicted class agrees

    @property
    def ok(self) -> bool:
        return self.max_abs_logit_diff <= PARITY_TOLERANCE


@dataclass
class ExportResult:
    path: Path
    source: Path
    metadata: dict[str, Any]
    parity: ParityReport | None
    size_bytes: int


def export_onnx(
    spec: str | Path,
    out: str | Path,
    verify: bool = True,
    data_dir: str | Path | None = None,
    max_images: int | None = None,
) -> ExportResult:
    """Export run folder / .safetensors / ``default`` to ``out``; with ``verify`` check that ONNX
    Runtime matches PyTorch within :data:`PARITY_TOLERANCE` on the model's test split (random
    images when the data set is not found). The file appears only if every check passed."""

    source = resolve_model_path(spec)
    model, meta = load_model(source)
    temperature = temperature_of(meta, source)
    metadata = onnx_metadata(meta, source)
    proto = build_onnx(model, meta["normalisation"], metadata, temperature)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        parity = None
        if verify:
            images, where = parity_images(meta, data_dir, max_images)
            parity = verify_parity(tmp, model, meta["normalisation"], images, where, temperature=temperature)
            if not parity.ok:
                raise ExportError(
                    f"{out}: ONNX Runtime differs from PyTorch by {parity.max_abs_logit_diff:.2e} "
                    f"(> {PARITY_TOLERANCE:g}) on {parity.images}; file not written"
                )
        size = tmp.stat().st_size
    return ExportResult(out, source, metadata, parity, size)


def onnx_metadata(meta: dict[str, Any], source: Path) -> dict[str, Any]:
    """The safetensors metadata plus where the model came from, its test accuracy and its
    calibration (marked as applied inside the graph)."""
    metrics = meta.get("metrics") or {}
    calibration = {**(meta.get("calibration") or {"method": "none", "temperature": 1.0}), "in_graph": True}
    if calibration.get("contrast_power"):
        calibration["outside_graph"] = (
            "contrast_power: for a preprocessed photo whose PreprocessResult.signal is s, divide the logits "
            "by (255 / s) ** contrast_power before the softmax (mnist-cnn's predictors do)"
        )
    return {
        **meta,
        "source": str(source),
        "accuracy": metrics.get("test_accuracy"),
        "calibration": calibration,
        "input": {"name": INPUT_NAME, "shape": ["N", 1, 28, 28], "dtype": "float32", "range": [0.0, 1.0]},
        "output": {"name": OUTPUT_NAME, "shape": ["N", len(meta["classes"])], "kind": "logits / temperature"},
    }


def build_onnx(model: Any, normalisation: dict[str, float], metadata: dict[str, Any], temperature: float = 1.0) -> Any:
    """Trace ``(x - mean) / std -> model -> / temperature`` with the dynamo exporter; returns a checked ModelProto."""
    import onnx
    import torch

    wrapped = _normalised(model, float(normalisation["mean"]), float(normalisation["std"]), temperature).eval()
    example = (torch.rand(2, 1, 28, 28),)  # batch 2: a batch of 1 could be specialised as a constant
    batch = torch.export.Dim("batch", min=1)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                wrapped,
                example,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                verbose=False,
            )
    except ImportError as exc:  # onnxscript is the dynamo exporter's dependency
        raise ExportError(f"ONNX export needs {exc.name or 'onnxscript'}: pip install 'mnist-cnn[export]'") from None
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; report one line
        first = first_line(exc)
        raise ExportError(f"torch.onnx.export failed for {metadata['arch']['name']!r}: {first}") from None
    if program is None:  # only with dynamo=False, which this exporter never uses
        raise ExportError(f"torch.onnx.export returned no program for {metadata['arch']['name']!r}")
    proto = program.model_proto
    proto.producer_name = "mnist-cnn"
    proto.doc_string = INPUT_DOC
    proto.graph.doc_string = INPUT_DOC
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=_json_default)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {first_line(exc)}") from None
    return proto


def _normalised(net: Any, mean: float, std: float, temperature: float = 1.0) -> Any:
    """Wrap ``net``: float ``[N,1,28,28]`` in 0..1 -> ``(x - mean) / std`` -> net -> logits ``[N,C]`` / temperature.

    Built inside a function so that importing this module (ONNX-only consumers) needs no torch."""
    from torch import nn

    class Normalised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):  # x: [N,1,28,28] float32 0..1
            logits = self.net((x - mean) / std)
            return logits if temperature == 1.0 else logits / temperature

    return Normalised()


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints and its 'torchvision is not installed' warnings."""
    import contextlib
    import io

    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def parity_images(meta: dict[str, Any], data_dir: Any, max_images: int | None) -> tuple[np.ndarray, str]:
    """The model's test split (uint8 ``[N,28,28]``), or seeded random images if it is not found."""

    dataset = meta.get("dataset", "mnist")
    try:
        images, where = load_dataset(dataset, data_dir).test_images, f"{dataset} test split"
    except MnistCnnError:
        rng = np.random.default_rng(0)
        images, where = rng.integers(0, 256, size=(1000, 28, 28), dtype=np.uint8), "random images (data not found)"
    if max_images is not None:
        images = images[:max_images]
    return images, f"{len(images):,} {where}"


def verify_parity(
    onnx_path: str | Path,
    model: Any,
    normalisation: dict[str, float],
    images: np.ndarray,
    where: str = "images",
    batch_size: int = 1000,
    temperature: float = 1.0,
) -> ParityReport:
    """Compare ONNX Runtime logits with PyTorch's (the project's own inference path, divided by the
    model's temperature, as the graph does) on ``images``."""

    torch_logits = predict_logits(model, images, normalisation["mean"], normalisation["std"]).numpy() / temperature
    session = onnx_session(onnx_path)
    ort_logits = np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: onnx_input(images[i : i + batch_size])})[0]
            for i in range(0, len(images), batch_size)
        ]
    )
    return ParityReport(
        n=len(images),
        images=where,
        max_abs_logit_diff=float(np.abs(torch_logits - ort_logits).max()),
        max_abs_prob_diff=float(np.abs(softmax(torch_logits) - softmax(ort_logits)).max()),
        same_argmax=float((torch_logits.argmax(1) == ort_logits.argmax(1)).mean()),
    )
