"""``predict`` on files: find image files, preprocess them, one batch through a predictor, records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.errors import MnistCnnError
from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE, Predictor, is_unsure

IMAGE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".gif",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".pgm",
    ".ppm",
    ".pbm",
    ".pnm",
    ".jfif",
}


def image_files(paths: list[Path]) -> list[Path]:
    """Files named on the command line (any name: a bad one is reported later) plus the image
    files (by suffix, hidden ones skipped) found by walking the named folders, sorted."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(
                sorted(
                    f
                    for f in p.rglob("*")
                    if f.is_file()
                    and f.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)
                )
            )
        else:
            out.append(p)
    return out


def predict_files(
    predictor: Predictor,
    files: list[Path],
    top_k: int = 3,
    multi: bool = False,
    save_dir: Path | None = None,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
) -> list[dict[str, Any]]:
    """One record per file: ``file``, ``digit`` (class index), ``label``, ``probability``, ``unsure``
    (probability below ``min_confidence``), ``top_k`` and the preprocessing diagnostics; with ``multi``
    the digits of a row (``digits``, ``items``, each with its own ``unsure``; the row is unsure when
    one of them is); ``file`` and ``error`` for a file that failed. All images go through the model
    in one batch."""
    from mnist_cnn.inference.preprocessing import preprocess, preprocess_multi

    prepared: list[tuple[Path, list[Any]] | dict[str, Any]] = []
    for f in files:
        try:
            prepared.append((f, preprocess_multi(f) if multi else [preprocess(f)]))
        except MnistCnnError as exc:
            prepared.append({"file": str(f), "error": str(exc)})
    images = [r.image for item in prepared if isinstance(item, tuple) for r in item[1]]
    contrast = [r.signal for item in prepared if isinstance(item, tuple) for r in item[1]]
    probs = predictor.predict_proba(np.stack(images)) if images else np.zeros((0, len(predictor.classes)))
    probs = predictor.for_photos(probs, contrast)
    names = _SaveNames(save_dir)
    records, i = [], 0
    for item in prepared:
        if isinstance(item, dict):
            records.append(item)
            continue
        f, results = item
        answers = [_answer(predictor, probs[i + j], top_k, r, min_confidence) for j, r in enumerate(results)]
        i += len(results)
        if save_dir is not None:
            for j, r in enumerate(results):
                names.save(f, j if multi else None, r.image)
        records.append(_multi_record(f, answers) if multi else {"file": str(f), **answers[0]})
    return records


def _answer(predictor: Predictor, p: np.ndarray, top_k: int, pre: Any, min_confidence: float) -> dict[str, Any]:
    k = int(np.argmax(p))
    top = predictor.top_k(p[None], top_k)[0]
    return {
        "digit": k,
        "label": predictor.classes[k],
        "probability": float(p[k]),
        "unsure": is_unsure(float(p[k]), min_confidence),
        "top_k": [{"label": c, "digit": predictor.classes.index(c), "probability": q} for c, q in top],
        "preprocessing": pre.summary(),
    }


def _multi_record(f: Path, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """A row of digits: the string read, the probability that every digit is right (product)."""
    return {
        "file": str(f),
        "digits": "".join(a["label"] for a in answers),
        "probability": float(np.prod([a["probability"] for a in answers])),
        "unsure": any(a["unsure"] for a in answers),
        "items": answers,
    }


class _SaveNames:
    """Writes preprocessed 28x28 PNGs to ``DIR/<image name>[-k].png`` (k: digit of a --multi row),
    never overwriting a file: one written in the same run (two 'a.jpg' in different folders: a.png,
    a-2.png), an earlier run's, or an input (DIR may be the input folder: a.png stays, a-2.png is written)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.used: set[str] = set()

    def save(self, f: Path, k: int | None, image: np.ndarray) -> None:
        import io

        from PIL import Image

        from mnist_cnn.artifacts.files import atomic_write_bytes

        assert self.folder is not None
        base = (f.stem or "image") + (f"-{k}" if k is not None else "")
        name, n = base, 1
        while name in self.used or (self.folder / f"{name}.png").exists():  # never overwrite any file
            n += 1
            name = f"{base}-{n}"
        self.used.add(name)
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG")
        atomic_write_bytes(self.folder / f"{name}.png", buf.getvalue())
