"""The loaded model plus the request -> answer logic, with no HTTP in it (easy to test and reuse).

The model is loaded once (by :func:`~mnist_cnn.serving.server.load_app`). Decoding and
preprocessing run in a pool of ``Limits.workers`` threads (one per core but one by default), which
is also the bound on images decoded at once; the model runs in one thread of its own that batches
concurrent requests (:class:`~mnist_cnn.serving.batcher.Batcher`), so the event loop keeps serving
other clients. :class:`Service` also admits a bounded number of requests at once and words each
image's answer. :func:`status_of` is the HTTP status of a refused request or image;
:func:`public_info` describes the model without this machine's file system.

The number reader (``/api/read``, :func:`load_reader_for_serving`) is loaded once too, when there
is one: its rows are found in the pool and read by the CRNN in a thread of its own, one image at a
time (:meth:`Service.read_source`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.artifacts.runs import card_for, model_id
from mnist_cnn.errors import ImageError, MnistCnnError, RequestError
from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE, is_unsure
from mnist_cnn.inference.reader import DEFAULT_READER
from mnist_cnn.serving.batcher import Batcher
from mnist_cnn.serving.images import Source, decode_bounded, png_data_url, untrusted
from mnist_cnn.serving.limits import DEFAULT_LIMITS, Limits, malloc_trim


def status_of(exc: MnistCnnError) -> int:
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, ImageError):  # undecodable, too many pixels, no digit: the content is the problem
        return 422
    return 400


NO_READER = "this server reads no numbers: it was started without a number reader (mnist-cnn serve --reader FILE)"


def load_reader_for_serving(spec: str | os.PathLike[str] | None) -> tuple[Any, str | None]:
    """The number reader ``serve --reader`` names, loaded once: ``(reader, None)``, or ``(None, why)``
    when there is none: ``None`` or ``"none"``, or ``"default"`` while the bundled reader is not
    installed. A file that is named but missing or not a reader is a
    :class:`~mnist_cnn.errors.CheckpointError` (before any port is bound). Loading it imports torch."""
    if spec is None or str(spec).lower() == "none":
        return None, NO_READER
    path = Path(spec)
    if str(spec) == "default":
        if not DEFAULT_READER.is_file():
            return None, (
                f"this server reads no numbers: the bundled number reader ({DEFAULT_READER.name}) is not "
                "installed; start it with --reader FILE"
            )
        path = DEFAULT_READER
    from mnist_cnn.inference.reader import NumberReader

    return NumberReader(path), None


class Service:
    """The loaded model plus the request -> answer logic (no HTTP here: easy to test and reuse).

    ``reader``: a :class:`~mnist_cnn.inference.reader.NumberReader` for ``/api/read``, or None
    (``no_reader`` then says why, in the 503 that ``/api/read`` answers)."""

    def __init__(
        self, predictor: Any, limits: Limits = DEFAULT_LIMITS, reader: Any = None, no_reader: str | None = None
    ):
        self.predictor = predictor
        self.limits = limits
        self.reader = reader
        self.no_reader = no_reader or NO_READER
        self.reader_id = _reader_id(reader)
        self.classes = [str(c) for c in predictor.classes]
        self.model_id = str(predictor.info.get("model_id", "unknown"))
        self.card = card_for((predictor.info.get("provenance") or {}).get("file"))  # the default model's card
        self.inflight = 0  # requests to /api/predict* in progress
        self._used_since_trim = 0  # pixels decoded + body bytes read since memory was last handed back
        self._last_trim = 0.0
        self.open()

    def open(self) -> None:
        """Start the model thread and the pool (again, after :meth:`close`: an app's lifespan may run
        more than once, e.g. one test client after another)."""
        if getattr(self, "closed", True):
            self.batcher = Batcher(self.predictor.predict_proba)
            # decoding + preprocessing: a few threads (Limits.pool_size), so images decoded at once stay
            # bounded and the threads do not fight over the cores (and the GIL) with the event loop
            self.pool = ThreadPoolExecutor(self.limits.pool_size(), thread_name_prefix="mnist-cnn-prep")
            # the number reader's CRNN: one thread of its own, like the batcher's (no oversubscription)
            self.reader_thread = ThreadPoolExecutor(1, thread_name_prefix="mnist-cnn-reader")
            self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.batcher.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.reader_thread.shutdown(wait=False, cancel_futures=True)

    def model_info(self) -> dict[str, Any]:
        info = public_info(_jsonable(self.predictor.info))
        return {**info, "classes": self.classes, "model_id": self.model_id, **self.card}

    async def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the preprocessing pool, awaited without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # ---- admission: a bounded number of requests in progress

    def admit(self) -> bool:
        if self.inflight >= self.limits.max_concurrent:
            return False
        self.inflight += 1
        return True

    def used(self, amount: int) -> None:
        """Count decoded pixels or body bytes: after enough, an idle server trims its heap."""
        self._used_since_trim += amount

    def release(self) -> None:
        self.inflight -= 1
        now = time.monotonic()
        # after a burst of large images or bodies, hand the freed memory back to the OS (at most once a second)
        if self.inflight == 0 and self._used_since_trim > 4 * 1024 * 1024 and now - self._last_trim > 1.0:
            self._used_since_trim, self._last_trim = 0, now
            try:
                self.pool.submit(malloc_trim)
            except RuntimeError:  # the pool is shut down: the server is stopping
                pass

    # ---- decoding and preprocessing (in the pool)

    def decode(self, data: bytes, budget: int | None = None) -> tuple[Any, int]:
        """Encoded bytes -> (PIL image, its pixel count), within the limits; see :func:`decode_bounded`."""
        img, pixels = decode_bounded(data, self.limits, budget)
        self.used(pixels)
        return img, pixels

    def prepare(self, sources: list[Source]) -> list[tuple[np.ndarray, str, float] | dict[str, Any]]:
        """Each source -> ``(uint8 [28, 28], preview PNG data URL, ink signal)`` or ``{"error", "status"}``.

        One image at a time, so a request holds at most one decoded image; the pixels of its images
        count against ``max_request_pixels`` in order. Runs in the pool."""
        budget = self.limits.max_request_pixels
        out: list[tuple[np.ndarray, str, float] | dict[str, Any]] = []
        for src in sources:
            try:
                image, contrast, pixels = self.prepare_one(src, budget)
                budget -= pixels
                out.append((image, png_data_url(image), contrast))
            except MnistCnnError as exc:
                out.append({"error": str(exc), "status": status_of(exc)})
        return out

    def prepare_one(self, src: Source, budget: int) -> tuple[np.ndarray, float, int]:
        """One source -> (uint8 [28, 28], ink signal, pixels decoded); the decoded image is gone on return."""
        from PIL import Image

        from mnist_cnn.inference.preprocessing import preprocess

        if isinstance(src, MnistCnnError):
            raise src
        if isinstance(src, np.ndarray):
            img, pixels = Image.fromarray(src, mode="L"), 0
        else:
            img, pixels = self.decode(src, budget)
        result = untrusted(preprocess, img, max_pixels=self.limits.max_pixels)
        return result.image, result.signal, pixels

    async def predict_sources(
        self, sources: list[Source], min_confidence: float = DEFAULT_MIN_CONFIDENCE
    ) -> list[dict[str, Any]]:
        """One answer per source: decoding and preprocessing in the pool, the model in the batcher's thread."""
        prepared = await self.run(self.prepare, sources)
        ready = [(i, p) for i, p in enumerate(prepared) if isinstance(p, tuple)]
        answers: list[dict[str, Any]] = [p if isinstance(p, dict) else {} for p in prepared]
        if ready:
            probs = await self.batcher.predict(np.stack([im for _, (im, _, _) in ready]))  # [n, C] float32
            probs = self.predictor.for_photos(probs, [c for _, (_, _, c) in ready])
            for (i, (_, preview, _)), p in zip(ready, probs):
                answers[i] = self.answer(p, preview, min_confidence)
        return answers

    def answer(self, probs: np.ndarray, preview: str, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> dict[str, Any]:
        k = int(np.argmax(probs))
        return {
            "digit": k,
            "label": self.classes[k],
            "probability": float(probs[k]),
            "unsure": is_unsure(float(probs[k]), min_confidence),
            "probabilities": [round(float(p), 6) for p in probs],
            "classes": self.classes,
            "model_id": self.model_id,
            "preprocessed": preview,
        }

    # ---- reading numbers (/api/read)

    async def read_source(self, src: Source, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> dict[str, Any]:
        """One image's reading (:meth:`~mnist_cnn.inference.reader.Reading.to_dict`, boxes within the
        image, and the reader's ``model_id``): rows found in the pool, read by the CRNN in the reader's
        thread. A refused image raises its :class:`~mnist_cnn.errors.MnistCnnError`."""
        if self.reader is None:
            raise RuntimeError("read_source needs a number reader; check Service.reader first")
        crops = await self.run(self.prepare_rows, src)
        loop = asyncio.get_running_loop()
        reading = await loop.run_in_executor(self.reader_thread, self.reader.read_rows, crops, min_confidence)
        return reading_answer(reading.to_dict(), self.reader_id)

    def prepare_rows(self, src: Source) -> list[Any]:
        """One source -> the rows of handwriting in it (reader crops, boxes in the file's pixels). Runs in the pool."""
        from PIL import Image

        from mnist_cnn.inference.preprocessing import preprocess_rows

        if isinstance(src, MnistCnnError):
            raise src
        if isinstance(src, np.ndarray):
            img = Image.fromarray(src, mode="L")
        else:
            img, _ = self.decode(src, self.limits.max_request_pixels)
        crops = untrusted(preprocess_rows, img, max_pixels=self.limits.max_pixels)
        if not crops:
            raise ImageError("no digit found: the image shows no row of handwriting; send a photo of a number")
        return list(crops)


def reading_answer(reading: dict[str, Any], reader_id: str | None) -> dict[str, Any]:
    """A reading's dict with every box clamped to the image (rounding may put an edge a pixel out)."""
    w, h = reading["size"]

    def inside(box: list[int]) -> list[int]:
        x0, y0, x1, y1 = (int(v) for v in box)
        x0, y0 = min(max(x0, 0), w), min(max(y0, 0), h)
        return [x0, y0, min(max(x1, x0), w), min(max(y1, y0), h)]

    for row in reading["rows"]:
        row["bbox"] = inside(row["bbox"])
        for d in row["digits"]:  # the same dicts as the top-level "digits"
            d["bbox"] = inside(d["bbox"])
    return {**reading, "model_id": reader_id or "unknown"}


def _reader_id(reader: Any) -> str | None:
    """``<file stem>-<sha256 prefix>`` of the reader's file, like a model's id (None: no reader)."""
    if reader is None:
        return None
    path = getattr(reader, "path", None)
    if path is None:
        return "reader"
    try:
        return model_id(path)
    except OSError:
        return Path(path).stem


def public_info(info: dict[str, Any]) -> dict[str, Any]:
    """The model description without this machine's file system: paths become file names."""

    def name(p: Any) -> Any:
        return Path(p).name if isinstance(p, str) and p else p

    out = dict(info)
    prov = dict(out.get("provenance") or {})
    for key in ("file", "source"):
        if key in prov:
            prov[key] = name(prov[key])
    if "provenance" in out:
        out["provenance"] = prov
    if isinstance(out.get("members"), list):
        out["members"] = [name(m) for m in out["members"]]
    return out


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))
