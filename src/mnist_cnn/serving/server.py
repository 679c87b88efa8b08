"""The drawing web app and REST API (FastAPI, run by uvicorn through `mnist-cnn serve`).

* ``GET /``: the drawing page (static files shipped in the package; no CDN).
* ``POST /api/predict``: one image as multipart field ``file``, a raw ``image/*`` body, or JSON
  ``{"pixels": 28x28 0..255}`` / ``{"image": base64 PNG/JPEG}``.
* ``POST /api/predict/batch``: several images (multipart fields ``file`` repeated, or JSON
  ``{"items": [{"pixels": ...} | {"image": ...}, ...]}``).
* ``GET /api/health``, ``GET /api/model``, ``GET /docs`` (OpenAPI, served offline when
  ``fastapi-offline`` is installed).

Probabilities are the model's calibrated ones; every answer says whether it is ``unsure``: its
probability is below ``min_confidence`` (query parameter, or multipart field, 0..1, default
:data:`~mnist_cnn.inference.predictors.DEFAULT_MIN_CONFIDENCE`).

The model is loaded once (in :func:`create_app`). Decoding and preprocessing run in a pool of
``Limits.workers`` threads (one per core but one by default), which is also the bound on images
decoded at once; the model runs in one thread of its own that batches concurrent requests
(:class:`Batcher`), so the event loop keeps serving other clients. Every bad request is a 4xx JSON
``{"error": "<one line>"}``: a :class:`~mnist_cnn.errors.MnistCnnError` carries its own status.
The OpenAPI schema states every request body the API takes and every answer it gives; the
server enforces exactly that schema (``tests/test_schemathesis.py``).

Resource bounds (:class:`Limits`): body size, pixels per image and per request, images larger than
``max_decoded_pixels`` decoded at reduced size in greyscale, requests in progress (503 beyond),
and, at the HTTP layer (:func:`uvicorn_config`), header size, read timeouts and open connections.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import logging
import math
import os
import queue
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_cnn.artifacts.runs import card_for
from mnist_cnn.errors import (
    ImageError,
    InvalidImage,
    MnistCnnError,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
    first_line,
)
from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE, is_unsure

STATIC_DIR = Path(__file__).parent / "static"
DOCS_PATHS = ("/docs", "/redoc")  # Swagger UI, ReDoc
log = logging.getLogger("mnist_cnn.server")


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Limits:
    """What one server accepts and holds at once. The defaults are `mnist-cnn serve`'s."""

    max_body_bytes: int = 5 * 1024 * 1024  # whole request (upload size cap): 413 above
    max_pixels: int = 4096 * 4096  # one image, width x height from its header (decompression bombs): 422 above
    max_batch: int = 64  # images in one batch request: 413 above
    max_request_pixels: int = 4 * 4096 * 4096  # all images of one request together: 413 in the slots beyond
    max_decoded_pixels: int = 2048 * 2048  # larger images are decoded at reduced size, in greyscale
    workers: int = 0  # images decoded and preprocessed at once (threads); 0: one per core but one
    max_concurrent: int = 64  # requests to /api/predict* in progress at once: 503 beyond
    max_header_bytes: int = 16 * 1024  # request line + headers: 431 above (HTTP layer)
    read_timeout: float = 10.0  # s: the headers must arrive within it, and the body never pause longer: 408
    body_timeout: float = 60.0  # s: the whole body must arrive within it after the headers: 408
    max_connections: int = 1000  # open connections; more are answered 503 and closed (HTTP layer)

    def pool_size(self) -> int:
        """``workers``, or one thread per core but one: that core runs the event loop and the model.
        (Preprocessing a small image is mostly Python, so more threads than that only contend for
        the GIL: on 2 cores, 2 workers answered 253 requests/s at 32 clients, 1 worker 309.)"""
        return self.workers if self.workers > 0 else max(1, cpu_count() - 1)


def status_of(exc: MnistCnnError) -> int:
    if isinstance(exc, RequestError):
        return exc.status
    if isinstance(exc, ImageError):  # undecodable, too many pixels, no digit: the content is the problem
        return 422
    return 400


# --------------------------------------------------------------------------- prediction core


class Batcher:
    """The model runs in one thread of its own; images of requests that arrive while it is busy go
    through it together in the next call (no waiting when idle, so no added latency).

    One thread means no oversubscription of the model's own threads by many concurrent requests,
    and batch-N inference costs far less per image than N batch-1 calls."""

    def __init__(self, predict: Any, max_images: int = 256):
        self.predict_fn, self.max_images = predict, max_images
        self.queue: queue.SimpleQueue[tuple[np.ndarray, Future] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="mnist-cnn-batcher", daemon=True)
        self.thread.start()

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``[n, 28, 28]`` -> probabilities ``[n, C]``, awaited without blocking the event loop."""
        fut: Future = Future()
        self.queue.put((images, fut))
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            jobs, n = [first], len(first[0])
            while n < self.max_images:  # take whatever else is already waiting
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.queue.put(None)  # close after this batch
                    break
                jobs.append(job)
                n += len(job[0])
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[tuple[np.ndarray, Future]]) -> None:
        try:
            probs = self.predict_fn(np.concatenate([images for images, _ in jobs]))  # [sum n, C]
        except BaseException as exc:  # noqa: BLE001 - hand the failure to every waiting request
            for _, fut in jobs:
                fut.set_exception(exc)
            return
        start = 0
        for images, fut in jobs:
            fut.set_result(probs[start : start + len(images)])
            start += len(images)


# A request's images before decoding: encoded bytes, a uint8 [28, 28] pixel array, or the error
# that stands for an item already refused (a batch answers it in its slot).
Source = bytes | np.ndarray | MnistCnnError


class Service:
    """The loaded model plus the request -> answer logic (no HTTP here: easy to test and reuse)."""

    def __init__(self, predictor: Any, limits: Limits = Limits()):
        self.predictor = predictor
        self.limits = limits
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
            self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.batcher.close()
            self.pool.shutdown(wait=False, cancel_futures=True)

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


def untrusted(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a decode/preprocess step on client data: an unexpected failure is the image's fault (422),
    logged with its traceback, never a 500. Our own errors pass through with their status."""
    try:
        return fn(*args, **kwargs)
    except MnistCnnError:
        raise
    except MemoryError:
        raise InvalidImage("the image is too large to process; send a smaller one") from None
    except Exception as exc:
        log.warning("image rejected by %s", getattr(fn, "__name__", fn), exc_info=True)
        raise InvalidImage(
            f"cannot process this image ({type(exc).__name__}); send a PNG or JPEG of one digit"
        ) from None


# --------------------------------------------------------------------------- bounded decoding


def decode_bounded(data: bytes, limits: Limits, budget: int | None = None) -> tuple[Any, int]:
    """Encoded image bytes -> (PIL image, width x height of the file), decoding at most what the limits allow.

    * empty, unreadable or over ``max_pixels`` (from the header, before decoding): the library's
      :func:`~mnist_cnn.inference.preprocessing.decode_image` error (422);
    * more than ``budget`` pixels (what is left of the request's ``max_request_pixels``): 413;
    * up to ``max_decoded_pixels``: exactly the library's ``decode_image`` (colour kept, so the
      answer equals ``mnist-cnn predict``'s);
    * larger: decoded at reduced size in greyscale (:func:`decode_reduced`), so that preprocessing
      works on at most ``max_decoded_pixels`` one-byte pixels whatever was uploaded."""
    from PIL import Image

    from mnist_cnn.inference.preprocessing import decode_image

    if not data:
        raise InvalidImage("the image is empty (0 bytes); send a PNG or JPEG")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Exception:  # noqa: BLE001 - decode_image words every kind of bad header; let it
        img, w, h = None, 0, 0
    if img is None or w < 1 or h < 1 or w * h > limits.max_pixels:
        decoded = untrusted(decode_image, data, max_pixels=limits.max_pixels)  # raises its message
        return decoded, decoded.width * decoded.height
    if budget is not None and w * h > budget:
        raise PayloadTooLarge(
            f"the images of this request have more than {limits.max_request_pixels:,} pixels in total "
            "(--max-request-pixels); send fewer or smaller images"
        )
    if w * h <= limits.max_decoded_pixels:
        return untrusted(decode_image, data, max_pixels=limits.max_pixels), w * h
    return untrusted(decode_reduced, img, limits.max_decoded_pixels), w * h


# EXIF orientation -> the transpose that makes the image upright (as PIL.ImageOps.exif_transpose)
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270"}
_UPRIGHT |= {7: "TRANSVERSE", 8: "ROTATE_90"}


def decode_reduced(img: Any, max_pixels: int) -> Any:
    """An opened (not yet decoded) PIL image -> upright greyscale ``L`` image of at most ``max_pixels``.

    JPEG is decoded at 1/2, 1/4 or 1/8 scale and in greyscale straight from the file (``draft``);
    other formats are decoded whole (their size is capped by ``max_pixels`` of the request limits),
    then box-reduced by an integer factor (``reduce``) before anything else is done with them."""
    from PIL import Image

    from mnist_cnn.inference.preprocessing import standard_mode

    w, h = img.size
    f = math.ceil(math.sqrt(w * h / max_pixels))
    try:
        orientation = int(img.getexif().get(0x0112) or 1)
    except Exception:  # noqa: BLE001 - a malformed EXIF block should not lose the image
        orientation = 1
    try:
        img.seek(0)  # animated GIF/PNG/WebP: the first frame
        img.draft("L", (max(1, w // f), max(1, h // f)))  # JPEG only; a no-op for other formats
        img.load()
    except Exception as exc:  # noqa: BLE001 - truncated data is an OSError, broken streams anything
        raise ImageError(
            f"the image data is truncated or corrupt ({first_line(exc)[:120]}); re-save or re-send it"
        ) from None
    img = _reducible(img)
    f = math.ceil(math.sqrt(img.width * img.height / max_pixels))
    if f > 1:
        img = img.reduce(f)
    img = standard_mode(img).convert("L")  # transparency composited as the library does, then grey
    if orientation in _UPRIGHT:
        img = img.transpose(getattr(Image.Transpose, _UPRIGHT[orientation]))
    return Image.fromarray(np.asarray(img), mode="L")  # no metadata left that could rotate it again


def _reducible(img: Any) -> Any:
    """A mode ``Image.reduce`` supports, with the same meaning (palette indices cannot be averaged)."""
    if img.mode in ("L", "LA", "RGB", "RGBA", "CMYK", "I", "F"):
        return img
    if img.mode == "1":
        return img.convert("L")
    if img.mode.startswith("I;16"):
        return img.convert("I")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img.convert("RGBA" if "A" in img.getbands() else "RGB")


# --------------------------------------------------------------------------- JSON bodies (exactly the schema)


_B64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
IMAGE_PATTERN = rf"^(?:data:[^,]*;base64,)?{_B64}$"  # what the schema says an "image" string is
_EXACTLY_ONE = "send exactly one of 'pixels' (28x28 array of numbers 0..255) or 'image' (base64 PNG/JPEG)"


def parse_json(body: bytes) -> Any:
    """The body as JSON. Integers are read as floats (no 4,300-digit limit, no overflow), and
    nesting too deep for the parser is a 400 like any other invalid JSON."""
    try:
        return json.loads(body, parse_int=float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not valid JSON ({getattr(exc, 'msg', 'bad encoding')})") from None
    except RecursionError:
        raise RequestError("body is not valid JSON for this API (nested too deeply)") from None
    except ValueError as exc:  # anything else the parser refuses
        raise RequestError(f"body is not valid JSON ({first_line(exc)[:80]})") from None


def json_sources(body: bytes, batch: bool, max_batch: int) -> list[Source]:
    """A JSON body -> its images' sources, or the 400 (413: too many items) the schema says."""
    payload = parse_json(body)
    if not batch:
        return [item_source(payload, "body")]
    if not isinstance(payload, dict) or "items" not in payload:
        raise RequestError("body: expected {'items': [{'pixels': ...} or {'image': ...}, ...]} with at least one item")
    if set(payload) != {"items"}:
        raise RequestError(f"body: unknown field(s) {_names(set(payload) - {'items'})}; the only field is 'items'")
    items = payload["items"]
    if not isinstance(items, list) or not items:
        raise RequestError("body: 'items' must be a list of at least one {'pixels': ...} or {'image': ...}")
    check_count(len(items), max_batch)
    return [item_source(item, f"items[{i}]") for i, item in enumerate(items)]


def item_source(item: Any, where: str) -> Source:
    """``{"pixels": [[...28...]...28]}`` or ``{"image": "<base64>"}`` -> pixels or encoded bytes."""
    if not isinstance(item, dict) or ("pixels" in item) == ("image" in item):
        raise RequestError(f"{where}: {_EXACTLY_ONE}")
    extra = set(item) - {"pixels", "image"}
    if extra:
        raise RequestError(f"{where}: unknown field(s) {_names(extra)}; {_EXACTLY_ONE}")
    if "pixels" in item:
        return pixels_array(item["pixels"], f"{where}.pixels")
    return b64_bytes(item["image"], f"{where}.image")


def _names(keys: set[str]) -> str:
    return ", ".join(repr(k[:40]) for k in sorted(keys)[:5])


def pixels_array(pixels: Any, where: str) -> np.ndarray:
    """A JSON 28x28 array of numbers 0..255 -> uint8 ``[28, 28]``; anything else the schema refuses is a 400."""
    if not isinstance(pixels, list) or len(pixels) != 28 or not all(isinstance(r, list) for r in pixels):
        shape = [len(pixels)] if isinstance(pixels, list) else []
        raise RequestError(f"{where}: shape {shape}, expected 28x28 rows of numbers 0..255")
    lengths = [len(r) for r in pixels]
    if any(n != 28 for n in lengths):
        raise RequestError(f"{where}: rows of {sorted(set(lengths))} numbers, expected 28x28 rows of numbers 0..255")
    for i, row in enumerate(pixels):
        for j, v in enumerate(row):
            if type(v) is not float:  # JSON numbers parse as float (parse_json); bool, str, None do not
                raise RequestError(f"{where}[{i}][{j}]: {_json_type(v)}; must be a 28x28 array of numbers 0..255")
    arr = np.array(pixels, dtype=np.float64)
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise RequestError(f"{where}: values must be finite numbers in 0..255")
    return np.rint(arr).astype(np.uint8)


def _json_type(v: Any) -> str:
    names = {bool: "true/false", str: "a string", type(None): "null", list: "an array", dict: "an object"}
    return names.get(type(v), type(v).__name__)


def b64_bytes(text: Any, where: str) -> bytes:
    """Base64 (optionally a ``data:...;base64,`` URL) -> bytes: exactly the strings ``IMAGE_PATTERN`` matches."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: must be a base64 string (PNG or JPEG)")
    if text.startswith("data:"):
        head, comma, text = text.partition(",")
        if not comma or not head.endswith(";base64"):
            raise RequestError(f"{where}: a data URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise RequestError(f"{where}: not valid base64 (standard alphabet, padded with '=')") from None


def png_data_url(image: np.ndarray) -> str:
    """uint8 ``[28, 28]`` -> ``data:image/png;base64,...`` for the page's preprocessed view."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def check_count(n: int, limit: int) -> None:
    if n > limit:
        raise PayloadTooLarge(f"{n} images in one request; the limit is {limit} (--max-batch)")


# --------------------------------------------------------------------------- request parsing


async def read_body(request: Request, limit: int, service: Service | None = None) -> bytes:
    """The request body, refusing (413) a declared or actual size over ``limit`` without reading it all."""
    from starlette.requests import ClientDisconnect

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {int(declared):,} bytes; the limit is {limit:,} (--max-upload-mb)")
    buf = bytearray()
    try:
        async for chunk in request.stream():
            if len(buf) + len(chunk) > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit:,} bytes (--max-upload-mb)")
            buf += chunk
            if service is not None:
                service.used(len(chunk))
    except ClientDisconnect:  # the client went away (or the HTTP layer timed it out): nobody to answer
        raise RequestError("the client disconnected before the body was complete") from None
    return bytes(buf)


async def parse_sources(request: Request, service: Service, batch: bool) -> tuple[list[Source], float]:
    """The request's images as sources (a batch's refused items as errors in their slots), by content
    type, and its ``min_confidence`` (query parameter, or multipart field)."""
    threshold = min_confidence_of(request.query_params.get("min_confidence"))
    body = await read_body(request, service.limits.max_body_bytes, service)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        return await service.run(json_sources, body, batch, service.limits.max_batch), threshold
    if ctype == "multipart/form-data":
        sources, field = await multipart_sources(request, body, service.limits.max_batch if batch else 1, batch)
        return sources, threshold if field is None else min_confidence_of(field)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        if batch:
            raise UnsupportedMediaType("a batch takes multipart (field 'file', repeated) or JSON {'items': [...]}")
        return [body], threshold
    raise UnsupportedMediaType(
        f"content type {ctype or '(none)'!r} is not supported; send multipart/form-data "
        "(field 'file'), application/json or an image/* body"
    )


def min_confidence_of(value: Any) -> float:
    """``min_confidence`` as sent (a string; None: not sent) -> a number 0..1, or a 400 that says so."""
    if value is None:
        return DEFAULT_MIN_CONFIDENCE
    try:
        number = float(value) if isinstance(value, str) and len(value) <= 64 else math.nan
    except ValueError:
        number = math.nan
    if not 0.0 <= number <= 1.0:  # NaN fails too
        shown = repr(value[:20]) if isinstance(value, str) else "a file"
        raise RequestError(
            f"min_confidence: {shown} is not a number from 0 to 1; send e.g. min_confidence=0.5 "
            "(answers less probable than it are marked unsure; 0: never)"
        )
    return number


async def multipart_sources(
    request: Request, body: bytes, max_files: int, batch: bool
) -> tuple[list[Source], str | None]:
    """The bytes of every ``file`` part of a multipart body and its ``min_confidence`` field (None
    when absent); in a batch, a part that is not an image (content type other than image/* or
    application/octet-stream) is a 415 in its slot."""
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay() -> AsyncGenerator[bytes, None]:  # the body was already read (and capped): parse it from memory
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=max_files + 1, max_fields=16).parse()
    except MultiPartException as exc:
        if exc.message.startswith("Too many files"):  # more 'file' parts than the limit + 1
            raise PayloadTooLarge(
                f"more than {max_files} images in one request; the limit is {max_files} (--max-batch)"
            ) from None
        raise RequestError(f"malformed multipart body: {exc.message}") from None
    except AssertionError:  # python-multipart missing (starlette asserts)
        raise RequestError("multipart parsing is not available on this server; send JSON") from None
    try:
        files = [f for f in form.getlist("file") if not isinstance(f, str)]
        if not files:
            raise RequestError("multipart body has no file in field 'file'")
        check_count(len(files), max_files)
        field = form.get("min_confidence")
        if field is not None and not isinstance(field, str):
            min_confidence_of(field)  # a file in the min_confidence field: the 400 that names it
        sources: list[Source] = []
        for f in files:
            ctype = (f.content_type or "application/octet-stream").split(";")[0].strip().lower()
            if ctype.startswith("image/") or ctype == "application/octet-stream":
                sources.append(await f.read())
                continue
            err = UnsupportedMediaType(
                f"file {f.filename!r} has content type {ctype!r}; send an image (PNG, JPEG, ...)"
            )
            if not batch:
                raise err
            sources.append(err)
        return sources, field if isinstance(field, str) else None
    finally:
        await form.close()


# --------------------------------------------------------------------------- OpenAPI: what goes in and out


class Error(BaseModel):
    """Every refused request: one line that says what is wrong and what to do."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(description="one line: what is wrong and how to fix it")


class ItemAnswer(BaseModel):
    """One image's prediction."""

    model_config = ConfigDict(extra="forbid")
    digit: int = Field(description="index of the most probable class (for MNIST the digit)")
    label: str = Field(description="name of that class")
    probability: float = Field(description="its calibrated probability")
    unsure: bool = Field(description="probability below min_confidence: show the two most probable classes instead")
    probabilities: list[float] = Field(description="one per class, in `classes` order (calibrated)")
    classes: list[str]
    model_id: str
    preprocessed: str = Field(description="the 28x28 image the model saw, as a PNG data URL")


class PredictAnswer(ItemAnswer):
    """``POST /api/predict``: the prediction and the server-side latency."""

    latency_ms: float = Field(description="server time: body read, decode, preprocess, model")


class ItemError(BaseModel):
    """A batch image that could not be used, in its slot (the others are still predicted)."""

    model_config = ConfigDict(extra="forbid")
    error: str
    status: Literal[413, 415, 422] = Field(
        description="413: past the request's pixel budget; 415: a part that is not an image; "
        "422: undecodable, too many pixels or no digit"
    )


class BatchAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[ItemAnswer | ItemError]
    model_id: str
    latency_ms: float


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]
    model_id: str
    backend: str | None


class ModelInfo(BaseModel):
    """Name, parameters, accuracy and provenance of the served model (file names, never paths), and
    the bundled default model's card."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    params: int | None = None
    accuracy: float | None = None
    backend: str | None = None
    classes: list[str]
    model_id: str
    provenance: dict[str, Any] = Field(default_factory=dict)
    card: str | None = Field(
        description="the model card (Markdown: intended use, metrics, limitations, training data, licence); "
        "null for a model other than the bundled default"
    )
    card_metadata: dict[str, Any] | None = Field(
        description="the card's Hugging Face metadata (license, tags, datasets, metrics, model-index); "
        "null without a card"
    )


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": Error, "description": description}
    if retry_after:  # the 503s say when to come back
        answer["headers"] = {
            "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
        }
    return answer


_HTTP_ERRORS = {  # answered by the HTTP layer (uvicorn_config) for any request
    408: _error("the request line, headers or body did not arrive in time (--read-timeout, --body-timeout)"),
    431: _error("request line and headers larger than 16 KiB"),
    503: _error("more than --max-connections connections open; retry after the Retry-After seconds", retry_after=True),
}
_PREDICT_ERRORS = {
    400: _error("malformed request: invalid JSON, a body the schema does not allow, malformed multipart"),
    413: _error("body over --max-upload-mb, or more images than --max-batch"),
    415: _error("unsupported content type, or (single image) an uploaded part that is not an image"),
    422: _error("the image is empty, undecodable or truncated, has more than --max-pixels pixels, or shows no digit"),
    **_HTTP_ERRORS,
    503: _error(
        "--max-concurrent requests already in progress, or more than --max-connections connections open; "
        "retry after the Retry-After seconds",
        retry_after=True,
    ),
}


def _pixels_schema() -> dict[str, Any]:
    row = {"type": "array", "minItems": 28, "maxItems": 28, "items": {"type": "number", "minimum": 0, "maximum": 255}}
    return {
        "type": "array",
        "minItems": 28,
        "maxItems": 28,
        "description": "28 rows of 28 numbers 0..255",
        "items": row,
    }


def _item_schema() -> dict[str, Any]:
    return {
        "oneOf": [
            {
                "title": "Pixels",
                "type": "object",
                "required": ["pixels"],
                "additionalProperties": False,
                "properties": {"pixels": _pixels_schema()},
            },
            {
                "title": "EncodedImage",
                "type": "object",
                "required": ["image"],
                "additionalProperties": False,
                "properties": {
                    "image": {
                        "type": "string",
                        "pattern": IMAGE_PATTERN,
                        "description": "base64 (standard alphabet, padded) PNG/JPEG/..., or a data: URL of one",
                    }
                },
            },
        ]
    }


_IMAGE_PART = "image/png, image/jpeg, image/gif, image/webp, image/bmp, image/tiff, application/octet-stream"
_RAW = "a raw image body: any image/* content type, or application/octet-stream"


_MIN_CONFIDENCE = {"type": "number", "minimum": 0, "maximum": 1, "default": DEFAULT_MIN_CONFIDENCE}
_MIN_CONFIDENCE_DOC = (
    "answers whose calibrated probability is below this are marked unsure (0: never); "
    "a multipart field of the same name takes precedence"
)


def _request_body(batch: bool, max_batch: int) -> dict[str, Any]:
    """The parameters and requestBody of a predict operation: exactly what the server takes."""
    binary = {"type": "string", "format": "binary"}
    threshold = {"min_confidence": {**_MIN_CONFIDENCE, "description": "as the query parameter"}}
    if batch:
        multipart = {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": binary},
                **threshold,
            },
        }
        items = {"type": "array", "minItems": 1, "maxItems": max_batch, "items": _item_schema()}
        content = {
            "multipart/form-data": {"schema": multipart, "encoding": {"file": {"contentType": _IMAGE_PART}}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["items"],
                    "additionalProperties": False,
                    "properties": {"items": items},
                }
            },
        }
    else:
        multipart = {"type": "object", "required": ["file"], "properties": {"file": binary, **threshold}}
        content = {
            "multipart/form-data": {"schema": multipart, "encoding": {"file": {"contentType": _IMAGE_PART}}},
            "application/json": {"schema": _item_schema()},
            "image/*": {"schema": {**binary, "description": _RAW}},
            "application/octet-stream": {"schema": {**binary, "description": _RAW}},
        }
    parameter = {
        "name": "min_confidence",
        "in": "query",
        "required": False,
        "schema": _MIN_CONFIDENCE,
        "description": _MIN_CONFIDENCE_DOC,
    }
    return {"parameters": [parameter], "requestBody": {"required": True, "content": content}}


# --------------------------------------------------------------------------- the app


def create_app(predictor: Any, limits: Limits = Limits()) -> Any:
    """The FastAPI app serving ``predictor`` (an object with ``predict_proba``, ``classes``, ``info``)."""
    service = Service(predictor, limits)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        service.open()
        yield
        service.close()  # the model thread and the pool end with the server

    fastapi_class = _fastapi_class()
    app = fastapi_class(
        title="mnist-cnn",
        version=_version(),
        lifespan=lifespan,
        description="Handwritten digit recognition: draw or upload a digit, get its class.",
        docs_url=DOCS_PATHS[0],
        redoc_url=DOCS_PATHS[1],
    )
    app.state.service = service
    app.add_middleware(SecurityHeaders, docs_paths=DOCS_PATHS, offline_docs=fastapi_class.__name__ != "FastAPI")

    @app.exception_handler(MnistCnnError)
    async def _user_error(_: Request, exc: MnistCnnError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=status_of(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> JSONResponse:  # a bug, not a bad request
        log.exception("internal error")
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def busy() -> JSONResponse:
        return JSONResponse(
            {"error": f"server busy: {limits.max_concurrent} requests in progress (--max-concurrent); retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.post(
        "/api/predict",
        openapi_extra=_request_body(False, limits.max_batch),
        response_class=JSONResponse,
        responses={200: {"model": PredictAnswer, "description": "the prediction"}, **_PREDICT_ERRORS},
        tags=["predict"],
    )
    async def predict(request: Request) -> JSONResponse:
        """Predict one image: its digit, the probabilities of all classes and the 28x28 it became."""
        if not service.admit():
            return busy()
        try:
            t0 = time.perf_counter()
            sources, min_confidence = await parse_sources(request, service, batch=False)
            answer = (await service.predict_sources(sources, min_confidence))[0]
        finally:
            service.release()
        if "error" in answer:
            return JSONResponse({"error": answer["error"]}, status_code=answer["status"])
        return JSONResponse({**answer, "latency_ms": _ms_since(t0)})

    @app.post(
        "/api/predict/batch",
        openapi_extra=_request_body(True, limits.max_batch),
        response_class=JSONResponse,
        responses={
            200: {"model": BatchAnswer, "description": "one result per image, in order"},
            **{k: v for k, v in _PREDICT_ERRORS.items() if k != 422},
        },
        tags=["predict"],
    )
    async def predict_batch(request: Request) -> JSONResponse:
        """Predict several images in one model call; an image that cannot be used gets an ``error``
        and its ``status`` in its slot (413, 415 or 422) while the others are still predicted."""
        if not service.admit():
            return busy()
        try:
            t0 = time.perf_counter()
            sources, min_confidence = await parse_sources(request, service, batch=True)
            results = await service.predict_sources(sources, min_confidence)
        finally:
            service.release()
        return JSONResponse({"results": results, "model_id": service.model_id, "latency_ms": _ms_since(t0)})

    @app.get(
        "/api/health",
        response_class=JSONResponse,
        responses={200: {"model": Health, "description": "the server is up"}, **_HTTP_ERRORS},
        tags=["meta"],
    )
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "model_id": service.model_id, "backend": predictor.info.get("backend")})

    @app.get(
        "/api/model",
        response_class=JSONResponse,
        responses={200: {"model": ModelInfo, "description": "the served model"}, **_HTTP_ERRORS},
        tags=["meta"],
    )
    async def model() -> JSONResponse:
        """Name, parameters, accuracy and provenance of the served model, and its model card."""
        return JSONResponse(service.model_info())

    return app


def _ms_since(t0: float) -> float:
    """Server-side latency of a request (body read, decode, preprocess, inference) in ms."""
    return round(1000 * (time.perf_counter() - t0), 3)


# The page only loads its own files; data: URLs are the 28x28 preview images.
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_PAGE_HEADERS = {"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
_INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)


def docs_csp(html: bytes, offline: bool = True) -> str:
    """The API docs pages (Swagger UI, ReDoc) run one inline script, allowed by its hash, and style
    themselves with inline styles and a blob: worker; with fastapi-offline everything they load
    comes from this server (without it, from FastAPI's CDN)."""
    hashes = "".join(
        " 'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.finditer(html)
    )
    cdn = "" if offline else " https://cdn.jsdelivr.net https://fastapi.tiangolo.com"
    return (
        f"default-src 'self'; script-src 'self'{cdn}{hashes}; style-src 'self' 'unsafe-inline'{cdn}; "
        f"img-src 'self' data: blob:{cdn}; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )


class SecurityHeaders:
    """Pure ASGI middleware: ``nosniff`` on every answer and a Content-Security-Policy on every HTML
    page (``/``, ``/static/*.html``, ``/docs``, ``/redoc``) that does not set its own."""

    def __init__(self, app: Any, docs_paths: tuple[str, ...] = (), offline_docs: bool = True):
        self.app, self.docs_paths, self.offline_docs = app, set(docs_paths), offline_docs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        docs = scope.get("path") in self.docs_paths
        held: list[dict[str, Any]] = []

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-content-type-options"]
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
                names = {k.lower() for k, _ in headers}
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                if html and b"content-security-policy" not in names:
                    if docs:  # the policy depends on the page's inline script: hold the start until the body
                        held.append(message)
                        return
                    headers += [(b"content-security-policy", PAGE_CSP.encode()), (b"x-frame-options", b"DENY")]
            elif held and message["type"] == "http.response.body":
                start = held.pop()  # docs pages come in one piece: else no inline script is allowed
                page = b"" if message.get("more_body") else message.get("body", b"")
                csp = docs_csp(page, self.offline_docs).encode()
                start["headers"] += [(b"content-security-policy", csp), (b"x-frame-options", b"DENY")]
                await send(start)
            await send(message)

        await self.app(scope, receive, wrapped)


def _fastapi_class() -> Any:
    """FastAPI whose /docs and /redoc load their JS/CSS from this server (fastapi-offline) if installed."""
    try:
        from fastapi_offline import FastAPIOffline

        return FastAPIOffline
    except ImportError:  # plain FastAPI: /docs works, but fetches Swagger UI from a CDN
        from fastapi import FastAPI

        return FastAPI


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mnist-cnn")
    except PackageNotFoundError:
        return "0"


def load_predictor_for_serving(model_spec: str, threads: int | None = None) -> Any:
    """:func:`~mnist_cnn.inference.predictors.load_predictor`, with ``threads`` intra-op threads for
    an ONNX model (1: the model runs in the batcher's thread alone; more: the pool's threads sleep
    between requests instead of spinning)."""
    from mnist_cnn.inference.predictors import OnnxPredictor, load_predictor

    p = Path(model_spec)
    if threads and p.suffix.lower() == ".onnx" and p.is_file():
        return OnnxPredictor(p, threads=threads, spin=False)
    return load_predictor(model_spec)


def load_app(model_spec: str, limits: Limits = Limits(), threads: int | None = None) -> Any:
    """Load the model once and build the app (errors are MnistCnnError, before any port is bound)."""
    return create_app(load_predictor_for_serving(model_spec, threads), limits)


# --------------------------------------------------------------------------- the HTTP layer and the process


def uvicorn_config(app: Any, limits: Limits = Limits(), **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` whose HTTP protocol enforces the limits uvicorn lacks:
    header size (431), read timeouts (408) and open connections (503), see :func:`guarded_protocol`.
    Without httptools, h11 with its header-size cap (no read timeouts)."""
    import uvicorn

    protocol = guarded_protocol(limits)
    if protocol is None:
        log.warning("httptools is not installed: no read timeouts (pip install 'mnist-cnn[serve]')")
        return uvicorn.Config(app, http="h11", h11_max_incomplete_event_size=limits.max_header_bytes, **kwargs)
    return uvicorn.Config(app, http=protocol, **kwargs)


def _raw_answer(status: int, message: str, phrase: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        + ("retry-after: 1\r\n" if status == 503 else "")
        + "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def guarded_protocol(limits: Limits) -> Any:
    """uvicorn's httptools protocol plus: request line + headers over ``max_header_bytes`` -> 431;
    headers not complete within ``read_timeout`` of the connection or of the request's first byte,
    a body pausing longer than ``read_timeout`` or not complete within ``body_timeout`` -> 408;
    more than ``max_connections`` open -> 503. Each answer is JSON and closes the connection.
    None when httptools is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return None

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.head_bytes = 0  # bytes received of the current request's line and headers
            self.phase = "head"  # "head": waiting for headers; "body": reading it; "": answering
            self.deadline: Any = None
            self.idle: Any = None
            self.last_read = time.monotonic()
            if len(self.connections) > limits.max_connections:
                self.refuse(503, f"too many open connections (limit {limits.max_connections}); retry shortly")
                return
            self.arm(limits.read_timeout, "no complete request headers within {:g} s")

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm()
            super().connection_lost(exc)

        def arm(self, seconds: float, why: str) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
            self.deadline = self.loop.call_later(seconds, self.refuse, 408, why.format(seconds))

        def disarm(self) -> None:
            for timer in (self.deadline, self.idle):
                if timer is not None:
                    timer.cancel()
            self.deadline = self.idle = None

        def check_idle(self) -> None:
            quiet = time.monotonic() - self.last_read
            if quiet >= limits.read_timeout:
                self.refuse(408, f"the request body paused for more than {limits.read_timeout:g} s")
            else:
                self.idle = self.loop.call_later(limits.read_timeout - quiet, self.check_idle)

        def refuse(self, status: int, message: str) -> None:
            self.disarm()
            if self.transport.is_closing():
                return
            cycle = self.cycle if self.phase == "body" else None
            if cycle is None or not cycle.response_started:  # else the answer is already on its way
                phrase = {408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(status)
                self.transport.write(_raw_answer(status, message, phrase or "Service Unavailable"))
            if cycle is not None:  # the app's receive() sees a disconnect; its own answer is dropped
                cycle.disconnected = True
                cycle.message_event.set()
            log.info("closing connection from %s: %s %s", self.client, status, message)
            self.transport.close()

        def data_received(self, data: bytes) -> None:
            self.last_read = time.monotonic()
            if self.phase != "body":
                self.head_bytes += len(data)
            super().data_received(data)
            if self.phase != "body" and self.head_bytes > limits.max_header_bytes:
                self.refuse(431, f"request line and headers exceed {limits.max_header_bytes:,} bytes")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.phase == "":  # the next request on a kept-alive connection: its headers are due
                self.phase = "head"
                self.arm(limits.read_timeout, "no complete request headers within {:g} s")

        def on_headers_complete(self) -> None:
            size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
            if size > limits.max_header_bytes:  # it all came in one read
                self.refuse(431, f"request line and headers exceed {limits.max_header_bytes:,} bytes")
                return
            self.phase, self.head_bytes = "body", 0
            super().on_headers_complete()
            self.arm(limits.body_timeout, "the request body was not complete within {:g} s")
            self.idle = self.loop.call_later(limits.read_timeout, self.check_idle)

        def on_body(self, body: bytes) -> None:
            if not self.transport.is_closing():  # refused in this very read: the rest is not for anyone
                super().on_body(body)

        def on_message_complete(self) -> None:
            if self.transport.is_closing():
                return
            self.disarm()
            self.phase, self.head_bytes = "", 0
            super().on_message_complete()

    return GuardedHttpToolsProtocol


def tune_malloc(mmap_threshold: int = 256 * 1024, trim_threshold: int = 64 * 1024 * 1024) -> bool:
    """glibc only: allocations of ``mmap_threshold`` bytes and more get their own mapping, returned to
    the OS when freed. (By default glibc raises that threshold up to 32 MiB after large frees, so
    decoded images end up in heap arenas that keep their pages.) Fixing it also fixes the heap's
    trim threshold, so that is set too: up to ``trim_threshold`` free bytes stay at the top of the
    heap between requests instead of being unmapped and faulted in again each time
    (:func:`malloc_trim` hands them back once the server is idle). For the serving process."""
    if os.environ.get("MNIST_CNN_MALLOC_TUNE", "1") == "0":  # for measuring what it changes
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, mmap_threshold)) and bool(libc.mallopt(-1, trim_threshold))  # M_MMAP/M_TRIM
    except (OSError, AttributeError):
        return False


def malloc_trim() -> None:
    """Hand free heap pages back to the OS (glibc; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
