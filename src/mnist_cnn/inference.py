"""Inference: load a model from a run folder / model file, evaluate it, predict images.

:func:`load_predictor` gives one interface over three kinds of model file:

* a run folder / ``.safetensors`` / ``default``: PyTorch (:class:`TorchPredictor`);
* an ensemble folder (``ensemble.json``): the members' mean probabilities, PyTorch;
* an ``.onnx`` file from ``mnist-cnn export``: ONNX Runtime (:class:`OnnxPredictor`), which
  never imports torch (torch is imported lazily by the other two only).

Every predictor takes uint8 ``[N, 28, 28]`` MNIST-like images (see
:mod:`mnist_cnn.preprocessing`) and returns float32 probabilities ``[N, C]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, ImageError


def resolve_model_path(spec: str | Path) -> Path:
    """A run folder, a .safetensors file, or ``default`` (the model bundled with the package)."""
    if str(spec) == "default":
        path = Path(__file__).parent / "pretrained" / "default.safetensors"
        if not path.exists():
            raise CheckpointError("no default model is bundled with this install; pass --model RUN_DIR")
        return path
    p = Path(spec)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.exists():
        raise CheckpointError(f"{spec}: no such run folder or model file; train one first (mnist-cnn train)")
    return p


def evaluate_run(run: str | Path, split: str = "test", tta: bool = False, data_dir: Any = None) -> dict[str, Any]:
    """Accuracy and loss of a saved model on the test split, or on the validation split it was
    trained with (rebuilt from the seed and size in its stored config)."""
    from .ensemble import evaluate_ensemble, is_ensemble

    if is_ensemble(run):  # a folder saved by `mnist-cnn ensemble` / `train --ensemble N`
        return evaluate_ensemble(run, split, tta, data_dir)
    from .data import load_dataset, train_val_split
    from .evaluation import evaluate_model
    from .models import load_model

    model, meta = load_model(resolve_model_path(run))
    ds = load_dataset(meta.get("dataset", "mnist"), data_dir)
    if split == "test":
        x, y = ds.test_images, ds.test_labels
    else:
        cfg = meta.get("config") or {}
        _, va = train_val_split(ds.train_labels, int(cfg.get("val_size", 5000)), int(cfg.get("seed", 0)))
        if len(va) == 0:
            raise CheckpointError(f"{run}: this model was trained without a validation split (val_size 0)")
        x, y = ds.train_images[va], ds.train_labels[va]
    r = evaluate_model(model, x, y, meta["normalisation"], tta=tta)
    return {"split": split, "accuracy": r.accuracy, "loss": r.loss, "n": len(y), "tta": tta,
            "per_class": r.per_class(ds.classes)}


# --------------------------------------------------------------------------- predictors


def model_id(path: str | Path) -> str:
    """``<file stem>-<first 12 hex of the file's sha256>``: names exactly these weights."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"{Path(path).stem}-{h.hexdigest()[:12]}"


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


def model_info(meta: dict[str, Any], backend: str, path: Path) -> dict[str, Any]:
    """What ``GET /api/model`` and ``predict --json`` report about a model, from its metadata."""
    arch = meta.get("arch") or {}
    metrics = meta.get("metrics") or {}
    cfg = meta.get("config") or {}
    provenance = {"file": str(path), "source": meta.get("source"), "recipe": cfg.get("recipe"),
                  "seed": cfg.get("seed"), "epochs": cfg.get("epochs"), "data_checksums": meta.get("data_checksums")}
    return {"name": arch.get("name"), "arch": arch, "params": meta.get("params"),
            "accuracy": metrics.get("test_accuracy", meta.get("accuracy")),
            "val_accuracy": metrics.get("val_accuracy"), "dataset": meta.get("dataset"),
            "classes": [str(c) for c in meta.get("classes", [])], "normalisation": meta.get("normalisation"),
            "backend": backend, "model_id": model_id(path),
            "provenance": {k: v for k, v in provenance.items() if v is not None}}


class Predictor:
    """uint8 ``[N, 28, 28]`` -> probabilities ``[N, C]``; ``classes`` and ``info`` describe the model."""

    classes: list[str]
    info: dict[str, Any]

    def predict_proba(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def top_k(self, probs: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """Per row of ``probs`` [N, C]: the ``k`` most probable (class, probability), best first."""
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row] for row, p in zip(order, probs)]


class TorchPredictor(Predictor):
    def __init__(self, path: Path):
        from .models import load_model

        self.model, self.meta = load_model(path)
        self.path = path
        self.classes = [str(c) for c in self.meta["classes"]]
        self.info = model_info(self.meta, "torch", path)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from .evaluation import predict_logits

        x = check_images(images)
        n = self.meta["normalisation"]
        return predict_logits(self.model, x, n["mean"], n["std"]).softmax(1).numpy().astype(np.float32)


class EnsemblePredictor(Predictor):
    def __init__(self, folder: Path):
        from .ensemble import MANIFEST, load_ensemble

        self.members, manifest = load_ensemble(folder)
        self.tta = bool(manifest.get("tta"))
        meta = self.members[0].meta
        self.classes = [str(c) for c in meta["classes"]]
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        self.info = {**model_info(meta, "torch", folder / MANIFEST), "name": f"ensemble of {len(self.members)}",
                     "params": sum(int(m.meta.get("params") or 0) for m in self.members),
                     "accuracy": metrics.get("test_accuracy"),
                     "members": [str(m.path) for m in self.members]}

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from .ensemble import ensemble_probs

        return ensemble_probs(self.members, check_images(images), tta=self.tta)[0].astype(np.float32)


class OnnxPredictor(Predictor):
    """ONNX Runtime on a file written by ``mnist-cnn export`` (input ``images`` float32
    [N,1,28,28] in 0..1, output ``logits`` [N,C], metadata_props ``mnist_cnn``). No torch."""

    def __init__(self, path: Path, threads: int | None = None):
        from .export import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, onnx_session

        try:
            self.session = onnx_session(path, threads)
        except ImportError:
            raise CheckpointError("ONNX models need onnxruntime: pip install 'mnist-cnn[export]'") from None
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types for bad files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise CheckpointError(f"{path}: not a loadable ONNX model ({first}); re-export it") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if raw is None:
            raise CheckpointError(f"{path}: has no mnist_cnn metadata; export it with `mnist-cnn export`")
        try:
            self.meta = json.loads(raw)
        except json.JSONDecodeError:
            raise CheckpointError(f"{path}: its mnist_cnn metadata is not valid JSON; re-export it") from None
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs or "classes" not in self.meta:
            raise CheckpointError(f"{path}: expected input {INPUT_NAME!r}, output {OUTPUT_NAME!r} and classes in "
                                  f"its metadata (has {inputs} -> {outputs}); re-export it")
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        self.path = path
        self.classes = [str(c) for c in self.meta["classes"]]
        self.info = model_info(self.meta, "onnxruntime", path)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from .export import _softmax, onnx_input

        x = check_images(images)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        logits = self.session.run([self.output_name], {self.input_name: onnx_input(x)})[0]  # [N, C]
        return _softmax(np.asarray(logits, dtype=np.float32)).astype(np.float32)


def load_predictor(spec: str | Path) -> Predictor:
    """A run folder, .safetensors file, ``default``, ensemble folder or .onnx file -> :class:`Predictor`."""
    p = Path(spec)
    if p.suffix.lower() == ".onnx":
        if not p.is_file():
            raise CheckpointError(f"{spec}: no such ONNX file; export one with `mnist-cnn export RUN --out {p.name}`")
        return OnnxPredictor(p)
    if p.is_dir():
        from .ensemble import is_ensemble

        if is_ensemble(p):
            return EnsemblePredictor(p)
    return TorchPredictor(resolve_model_path(spec))


# --------------------------------------------------------------------------- predict files (the `predict` command)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm",
                  ".pnm", ".jfif"}


def image_files(paths: list[Path]) -> list[Path]:
    """Files named on the command line (any name: a bad one is reported later) plus the image
    files (by suffix, hidden ones skipped) found by walking the named folders, sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                              and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        else:
            out.append(p)
    return out


def predict_files(predictor: Predictor, files: list[Path], top_k: int = 3, multi: bool = False,
                  save_dir: Path | None = None) -> list[dict[str, Any]]:
    """One record per file: ``file``, ``digit`` (class index), ``label``, ``probability``, ``top_k``
    and the preprocessing diagnostics; with ``multi`` the digits of a row (``digits``, ``items``);
    ``file`` and ``error`` for a file that failed. All images go through the model in one batch."""
    from .errors import MnistCnnError
    from .preprocessing import preprocess, preprocess_multi

    prepared: list[tuple[Path, list[Any]] | dict[str, Any]] = []
    for f in files:
        try:
            prepared.append((f, preprocess_multi(f) if multi else [preprocess(f)]))
        except MnistCnnError as exc:
            prepared.append({"file": str(f), "error": str(exc)})
    images = [r.image for item in prepared if isinstance(item, tuple) for r in item[1]]
    probs = predictor.predict_proba(np.stack(images)) if images else np.zeros((0, len(predictor.classes)))
    names = _SaveNames(save_dir)
    records, i = [], 0
    for item in prepared:
        if isinstance(item, dict):
            records.append(item)
            continue
        f, results = item
        answers = [_answer(predictor, probs[i + j], top_k, r) for j, r in enumerate(results)]
        i += len(results)
        if save_dir is not None:
            for j, r in enumerate(results):
                names.save(f, j if multi else None, r.image)
        records.append(_multi_record(f, answers) if multi else {"file": str(f), **answers[0]})
    return records


def _answer(predictor: Predictor, p: np.ndarray, top_k: int, pre: Any) -> dict[str, Any]:
    k = int(np.argmax(p))
    top = predictor.top_k(p[None], top_k)[0]
    return {"digit": k, "label": predictor.classes[k], "probability": float(p[k]),
            "top_k": [{"label": c, "digit": predictor.classes.index(c), "probability": q} for c, q in top],
            "preprocessing": pre.summary()}


def _multi_record(f: Path, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """A row of digits: the string read, the probability that every digit is right (product)."""
    return {"file": str(f), "digits": "".join(a["label"] for a in answers),
            "probability": float(np.prod([a["probability"] for a in answers])), "items": answers}


class _SaveNames:
    """Writes preprocessed 28x28 PNGs to ``DIR/<image name>[-k].png`` (k: digit of a --multi row),
    never overwriting one written in the same run (two 'a.jpg' in different folders: a.png, a-2.png)."""

    def __init__(self, folder: Path | None):
        self.folder, self.used = folder, set()

    def save(self, f: Path, k: int | None, image: np.ndarray) -> None:
        import io

        from PIL import Image

        from .files import atomic_write_bytes

        assert self.folder is not None
        base = (f.stem or "image") + (f"-{k}" if k is not None else "")
        name, n = base, 1
        while name in self.used:
            n += 1
            name = f"{base}-{n}"
        self.used.add(name)
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG")
        atomic_write_bytes(self.folder / f"{name}.png", buf.getvalue())
