"""``predict`` on files: find the images, preprocess them in a pool of processes, run the model in large batches."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from functools import partial
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
    prepared: list[Prepared] | None = None,
    reader: Any = None,
) -> list[dict[str, Any]]:
    """One record per file: ``file``, ``digit`` (class index), ``label``, ``probability``, ``unsure``
    (probability below ``min_confidence``), ``top_k`` and the preprocessing diagnostics; with ``multi``
    the number(s) read by ``reader`` (a :class:`~mnist_cnn.inference.reader.NumberReader`, the
    bundled one if None; see :func:`read_files`); ``file`` and ``error`` for a file that failed.
    ``prepared``: the files already preprocessed by :func:`prepare_files` (else they are, here, in this
    process). The images go through the model in batches of :data:`MODEL_BATCH`."""
    if prepared is None:
        prepared = prepare_files(files, multi)
    if multi:
        return read_files(prepared, reader, save_dir, min_confidence)
    images = [r.image for item in prepared if isinstance(item, tuple) for r in item[1]]
    contrast = [r.signal for item in prepared if isinstance(item, tuple) for r in item[1]]
    probs = np.zeros((0, len(predictor.classes)))
    if images:
        stack = np.stack(images)  # uint8 [N, 28, 28]
        probs = np.concatenate(
            [predictor.predict_proba(stack[i : i + MODEL_BATCH]) for i in range(0, len(stack), MODEL_BATCH)]
        )
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
            names.save(f, None, results[0].image)
        records.append({"file": str(f), **answers[0]})
    return records


def read_files(
    prepared: list[Prepared], reader: Any = None, save_dir: Path | None = None, min_confidence: float = 0.5
) -> list[dict[str, Any]]:
    """``predict --multi``: one record per file, the file's :class:`~mnist_cnn.inference.reader.Reading`
    as a dict (``number``, ``probability`` of the whole string, ``unsure``, ``reason``, ``digits`` with
    boxes, ``rows``); each row's crop (the reader's input) saved to ``save_dir`` as ``<name>-row<k>.png``."""
    from mnist_cnn.inference.preprocessing.rows import as_uint8
    from mnist_cnn.inference.reader import NumberReader

    reader = reader or NumberReader()
    names = _SaveNames(save_dir)
    records = []
    for item in prepared:
        if isinstance(item, dict):
            records.append(item)
            continue
        f, crops = item
        records.append({"file": str(f), **reader.read_rows(crops, min_confidence).to_dict()})
        if save_dir is not None:
            for k, c in enumerate(crops):
                names.save(f, f"row{k}", as_uint8(c.image))
    return records


# A file preprocessed: (path, its digits' results), or the record of a file that failed
Prepared = tuple[Path, list[Any]] | dict[str, Any]
MODEL_BATCH = 4096  # images per forward pass: large enough to keep the CPU busy, 13 MB of float input
POOL_MIN_FILES = 64  # fewer files than this are preprocessed in this process: a pool would cost more


def prepare_files(
    files: list[Path], multi: bool = False, workers: int = 1, progress: Callable[[int], None] | None = None
) -> list[Prepared]:
    """Decode and preprocess ``files``, in order, in ``workers`` processes (the image pipeline runs in
    Python and NumPy, one core each); ``progress(n)`` after each ``n`` files.

    The pool is forked, so its workers start in milliseconds with everything imported; call this
    before the model first runs (an OpenMP runtime that has run does not survive a fork; the pipeline
    keeps OpenCV single-threaded for the same reason)."""
    one = partial(_prepare_one, multi=multi)
    with ExitStack() as stack:
        if workers <= 1 or len(files) < POOL_MIN_FILES or "fork" not in mp.get_all_start_methods():
            items: Iterable[Prepared] = map(one, files)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")))
            items = pool.map(one, files, chunksize=max(1, min(64, len(files) // (8 * workers))))
        out = []
        for item in items:
            out.append(item)
            if progress:
                progress(1)
        return out


def _prepare_one(f: Path, multi: bool) -> Prepared:
    from mnist_cnn.inference.preprocessing import preprocess, preprocess_rows

    try:
        return (f, preprocess_rows(f) if multi else [preprocess(f)])
    except MnistCnnError as exc:
        return {"file": str(f), "error": str(exc)}


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


class _SaveNames:
    """Writes preprocessed images to ``DIR/<image name>[-k].png`` (k: ``row0``... for --multi's row crops),
    never overwriting a file: one written in the same run (two 'a.jpg' in different folders: a.png,
    a-2.png), an earlier run's, or an input (DIR may be the input folder: a.png stays, a-2.png is written)."""

    def __init__(self, folder: Path | None):
        self.folder = folder
        self.used: set[str] = set()

    def save(self, f: Path, k: int | str | None, image: np.ndarray) -> None:
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
