"""Predictors: one interface over every kind of saved model.

:func:`load_predictor` gives one interface over three kinds of model file:

* a run folder / ``.safetensors`` / ``default``: PyTorch (:class:`TorchPredictor`);
* an ensemble folder (``ensemble.json``): the members' mean probabilities, PyTorch;
* an ``.onnx`` file from ``mnist-cnn export``: ONNX Runtime (:class:`OnnxPredictor`), which
  never imports torch (torch is imported lazily by the other two only).

``Predictor.predict`` is the public entry: NumPy arrays, PIL images or file paths in (see
:mod:`mnist_cnn.inference.inputs`), one :class:`Prediction` per image out. ``predict_proba`` is the
low-level path: uint8 ``[N, 28, 28]`` MNIST-like images in, float32 probabilities ``[N, C]`` out.

Probabilities are calibrated: the model's logits are divided by the temperature fitted on its
validation split (``calibration`` in its metadata or manifest; 1 for models without one; baked into
the graph of an exported ONNX file). A photo's probabilities are softened further for faint ink
(``calibration.contrast_power``, :meth:`Predictor.for_photos`), outside any graph: the ink's signal is
measured by preprocessing. An answer whose probability is below ``min_confidence``
(default :data:`DEFAULT_MIN_CONFIDENCE`) is marked ``unsure``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.runs import MANIFEST, is_ensemble, model_id, read_metrics, resolve_model_path
from mnist_cnn.errors import CheckpointError, ImageError, first_line
from mnist_cnn.evaluation.calibration import contrast_factors, contrast_power, soften, softmax
from mnist_cnn.inference.inputs import Preprocess, as_batch_with_contrast
from mnist_cnn.inference.onnx import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, onnx_input, onnx_session
from mnist_cnn.inference.unsure import DEFAULT_MIN_CONFIDENCE, is_unsure  # noqa: F401 (re-exported)


def check_images(images: Any) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` (a single ``[28, 28]`` becomes N=1), or :class:`ImageError`."""
    a = np.asarray(images)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        raise ImageError(f"images have shape {list(a.shape)}; expected [N, 28, 28] (run preprocess first)")
    if a.dtype != np.uint8:
        raise ImageError(f"images are {a.dtype}; expected uint8 0..255 (run preprocess first)")
    return np.ascontiguousarray(a)


def check_probe(predictor: Predictor, source: Any) -> None:
    """Run the model once on two fixed images at load time: NaN or inf probabilities (broken weights or
    normalisation) are a :class:`CheckpointError` now, not ``nan%`` or ``null`` answers later."""
    probe = np.zeros((2, 28, 28), np.uint8)
    probe[1, 6:22, 12:16] = 255  # a bar: a "1"
    probs = predictor.predict_proba(probe)
    if probs.shape != (2, len(predictor.classes)):
        raise CheckpointError(
            f"{source}: the model outputs {probs.shape[1] if probs.ndim == 2 else list(probs.shape)} classes "
            f"but its metadata names {len(predictor.classes)}; re-train or re-export it"
        )
    if not np.isfinite(probs).all():
        raise CheckpointError(
            f"{source}: the model gives non-finite probabilities (NaN or inf) on a test image; its weights "
            "or normalisation are broken; re-train or re-export it"
        )


def class_names(classes: Any, source: Any) -> list[str]:
    """A model's ``classes`` metadata: a non-empty list of strings (torch-free, for ONNX files)."""
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        shown = repr(classes)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise CheckpointError(
            f"{source}: metadata field 'classes' must be a non-empty list of class names (strings), "
            f"not {shown}; re-export the model"
        )
    return list(classes)


def model_info(meta: dict[str, Any], backend: str, path: Path) -> dict[str, Any]:
    """What ``GET /api/model`` and ``predict --json`` report about a model, from its metadata."""
    arch = meta.get("arch") or {}
    metrics = meta.get("metrics") or {}
    cfg = meta.get("config") or {}
    provenance = {
        "file": str(path),
        "source": meta.get("source"),
        "recipe": cfg.get("recipe"),
        "seed": cfg.get("seed"),
        "epochs": cfg.get("epochs"),
        "data_checksums": meta.get("data_checksums"),
    }
    return {
        "name": arch.get("name"),
        "arch": arch,
        "params": meta.get("params"),
        "accuracy": metrics.get("test_accuracy", meta.get("accuracy")),
        "val_accuracy": metrics.get("val_accuracy"),
        "dataset": meta.get("dataset"),
        "classes": [str(c) for c in meta.get("classes", [])],
        "normalisation": meta.get("normalisation"),
        "calibration": meta.get("calibration"),
        "backend": backend,
        "model_id": model_id(path),
        "provenance": {k: v for k, v in provenance.items() if v is not None},
    }


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the class index, its name, its (calibrated) probability, the ``k`` best
    classes, and whether it is below the confidence threshold (``unsure``: read the top two instead)."""

    digit: int  # class index (for MNIST the digit itself)
    label: str  # class name ("7"; "Sneaker" for Fashion-MNIST)
    probability: float
    top_k: list[tuple[str, float]]  # (label, probability), most probable first
    unsure: bool = False
    # the class index of each top_k entry (to_dict's "digit", as in `predict --json`); labels alone
    # cannot give it for named classes ("Sneaker")
    top_k_digits: tuple[int, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The answer as `mnist-cnn predict --json` writes it (without the file and preprocessing fields)."""
        return {
            "digit": self.digit,
            "label": self.label,
            "probability": self.probability,
            "unsure": self.unsure,
            "top_k": [
                {"label": c, "digit": self._top_digit(i, c), "probability": p} for i, (c, p) in enumerate(self.top_k)
            ],
        }

    def _top_digit(self, i: int, label: str) -> int | None:
        if i < len(self.top_k_digits):
            return self.top_k_digits[i]
        if label == self.label:
            return self.digit
        return int(label) if label.isdecimal() else None  # a Prediction made by hand, without top_k_digits


class Predictor:
    """uint8 ``[N, 28, 28]`` -> probabilities ``[N, C]``; ``classes`` and ``info`` describe the model."""

    classes: list[str]
    info: dict[str, Any]
    contrast_power: float = 0.0  # calibration.contrast_power: how much faint ink raises a photo's temperature

    def predict_proba(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def for_photos(self, probs: np.ndarray, contrast: Any) -> np.ndarray:
        """``probs`` [N, C] (from :meth:`predict_proba`) of preprocessed images, each with its temperature
        multiplied by ``(255 / signal) ** contrast_power`` (``contrast``: each image's
        ``PreprocessResult.signal``, NaN for one that was not preprocessed). float32."""
        if self.contrast_power == 0.0:
            return np.asarray(probs, dtype=np.float32)
        return soften(probs, contrast_factors(contrast, self.contrast_power))

    def predict(
        self,
        images: Any,
        top_k: int = 3,
        preprocess: Preprocess = "auto",
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    ) -> list[Prediction]:
        """One :class:`Prediction` per image: ``images`` is a NumPy array ((N, 28, 28) MNIST-format, or
        photos (N, H, W[, C])), a PIL image, a file path, image bytes, an open binary file (``open(path, "rb")``,
        ``io.BytesIO``, FastAPI's ``UploadFile.file``), or a list of these (:mod:`~mnist_cnn.inference.inputs`).
        Answers less probable than ``min_confidence`` are marked ``unsure``."""
        batch, contrast = as_batch_with_contrast(images, preprocess)
        probs = self.for_photos(self.predict_proba(batch), contrast)
        k = max(1, min(top_k, len(self.classes)))
        best = probs.argmax(1)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # the order top_k uses
        return [
            Prediction(
                int(i),
                self.classes[int(i)],
                float(p[i]),
                top,
                is_unsure(float(p[i]), min_confidence),
                tuple(int(j) for j in row),
            )
            for i, p, top, row in zip(best, probs, self.top_k(probs, k), order)
        ]

    def read_number(
        self, image: Any, min_confidence: float = DEFAULT_MIN_CONFIDENCE, reader: str | os.PathLike[str] | None = None
    ) -> Any:
        """The handwritten number(s) in a photo, read whole by the number reader (the bundled one, or
        ``reader``): a :class:`~mnist_cnn.inference.reader.Reading` (``.number``, ``.probability``,
        ``.unsure``, ``.rows``, ``.to_dict()``); ``min_confidence`` applies to each whole number."""
        from mnist_cnn.inference.reader import read_number

        return read_number(image, reader, min_confidence)

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per row of ``probs`` [N, C]: the ``k`` most probable (class, probability), best first."""
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row] for row, p in zip(order, probs)]


class TorchPredictor(Predictor):
    def __init__(self, path: Path):
        from mnist_cnn.models.files import load_model, temperature_of

        self.model, self.meta = load_model(path)
        self.temperature = temperature_of(self.meta, path)
        self.contrast_power = contrast_power(self.meta.get("calibration"), path)
        self.path = path
        self.classes = [str(c) for c in self.meta["classes"]]
        self.info = model_info(self.meta, "torch", path)
        check_probe(self, path)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from mnist_cnn.evaluation.metrics import predict_probs

        return predict_probs(self.model, check_images(images), self.meta["normalisation"], self.temperature)


class EnsemblePredictor(Predictor):
    def __init__(self, folder: Path):
        from mnist_cnn.inference.ensemble import load_ensemble, manifest_temperature

        self.members, manifest = load_ensemble(folder)
        self.tta = bool(manifest.get("tta"))
        self.temperature = manifest_temperature(manifest, folder / MANIFEST)
        self.contrast_power = contrast_power(manifest.get("calibration"), folder / MANIFEST)
        meta = self.members[0].meta
        self.classes = [str(c) for c in meta["classes"]]
        metrics = read_metrics(folder)
        self.info = {
            **model_info(meta, "torch", folder / MANIFEST),
            "name": f"ensemble of {len(self.members)}",
            "params": sum(int(m.meta.get("params") or 0) for m in self.members),
            "accuracy": metrics.get("test_accuracy"),
            "calibration": manifest.get("calibration"),
            "members": [str(m.path) for m in self.members],
        }
        check_probe(self, folder / MANIFEST)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from mnist_cnn.evaluation.calibration import rescale_probs
        from mnist_cnn.inference.ensemble import ensemble_probs

        probs = ensemble_probs(self.members, check_images(images), tta=self.tta)[0]
        return rescale_probs(probs, self.temperature)


class OnnxPredictor(Predictor):
    """ONNX Runtime on a file written by ``mnist-cnn export`` (input ``images`` float32
    [N,1,28,28] in 0..1, output ``logits`` [N,C], metadata_props ``mnist_cnn``). No torch. The
    graph already divides the logits by the model's temperature, so softmax gives calibrated probabilities."""

    def __init__(self, path: Path, threads: int | None = None, spin: bool = True):
        try:
            self.session = onnx_session(path, threads, spin)
        except ImportError:
            raise CheckpointError("ONNX models need onnxruntime: pip install 'mnist-cnn[export]'") from None
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = first_line(exc)[:160]
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first}); re-export it") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path}: has no mnist_cnn metadata; export it with `mnist-cnn export`")
        try:
            self.meta = json.loads(raw)
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: its mnist_cnn metadata is not valid JSON; re-export it") from None
        if not isinstance(self.meta, dict):
            raise CheckpointError(f"{path}: its mnist_cnn metadata must be a JSON object; re-export it")
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs or "classes" not in self.meta:
            raise CheckpointError(
                f"{path}: expected input {INPUT_NAME!r}, output {OUTPUT_NAME!r} and classes in "
                f"its metadata (has {inputs} -> {outputs}); re-export it"
            )
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        self.contrast_power = contrast_power(self.meta.get("calibration"), path)
        self.path = path
        self.classes = class_names(self.meta["classes"], path)
        self.info = model_info(self.meta, "onnxruntime", path)
        try:
            check_probe(self, path)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for graphs that do not run
            first = first_line(exc)[:160]
            raise CheckpointError(
                f"{path}: the model does not run on [N, 1, 28, 28] images ({first}); re-export it"
            ) from None

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        x = check_images(images)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        logits = self.session.run([self.output_name], {self.input_name: onnx_input(x)})[0]  # [N, C]
        return softmax(np.asarray(logits, dtype=np.float32)).astype(np.float32)


def load_predictor(spec: str | os.PathLike[str]) -> Predictor:
    """A run folder, .safetensors file, ``default``, ensemble folder or .onnx file -> :class:`Predictor`."""
    p = Path(spec)
    if p.suffix.lower() == ".onnx":
        if not p.is_file():
            raise CheckpointError(f"{spec}: no such ONNX file; export one with `mnist-cnn export RUN --out {p.name}`")
        return OnnxPredictor(p)
    if p.is_dir() and is_ensemble(p):
        return EnsemblePredictor(p)
    return TorchPredictor(resolve_model_path(spec))
