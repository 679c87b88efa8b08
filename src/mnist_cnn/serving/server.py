"""The drawing web app and REST API (FastAPI, run by uvicorn through `mnist-cnn serve`).

* ``GET /``: the drawing page (static files shipped in the package; no CDN).
* ``POST /api/predict``: one image as multipart field ``file``, a raw ``image/*`` body, or JSON
  ``{"pixels": 28x28 0..255}`` / ``{"image": base64 PNG/JPEG}``.
* ``POST /api/predict/batch``: several images (multipart fields ``file`` repeated, or JSON
  ``{"items": [{"pixels": ...} | {"image": ...}, ...]}``).
* ``GET /api/health``, ``GET /api/model``, ``GET /docs`` (OpenAPI, served offline when
  ``fastapi-offline`` is installed).

The model is loaded once (in :func:`create_app`); decoding and preprocessing run in the
threadpool and the model in one thread of its own that batches concurrent requests
(:class:`Batcher`), so the event loop keeps serving other clients. Every bad request is a 4xx JSON
``{"error": "<one line>"}``: a :class:`~mnist_cnn.errors.MnistCnnError` carries its own status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_cnn.errors import (
    ImageError,
    InvalidImage,
    MnistCnnError,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("mnist_cnn.server")


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 5 * 1024 * 1024  # whole request (upload size cap)
    max_pixels: int = 4096 * 4096  # decoded image size (decompression bombs)
    max_batch: int = 64  # images in one batch request


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


class Service:
    """The loaded model plus the request -> answer logic (no HTTP here: easy to test and reuse)."""

    def __init__(self, predictor: Any, limits: Limits = Limits()):
        self.predictor = predictor
        self.limits = limits
        self.batcher = Batcher(predictor.predict_proba)
        self.classes = [str(c) for c in predictor.classes]
        self.model_id = str(predictor.info.get("model_id", "unknown"))

    def model_info(self) -> dict[str, Any]:
        return {**_jsonable(self.predictor.info), "classes": self.classes, "model_id": self.model_id}

    def image_from_bytes(self, data: bytes) -> Any:
        """Encoded image bytes -> PIL image, with the decode and pixel-count checks."""
        from mnist_cnn.inference.preprocessing import decode_image

        if not data:
            raise InvalidImage("the image is empty (0 bytes); send a PNG or JPEG")
        return untrusted(decode_image, data, max_pixels=self.limits.max_pixels)

    def image_from_json(self, item: Any, where: str = "body") -> Any:
        """``{"pixels": [[...28...]...28]}`` or ``{"image": "<base64>"}`` -> PIL image."""
        from PIL import Image

        if not isinstance(item, dict) or ("pixels" in item) == ("image" in item):
            raise RequestError(f"{where}: send exactly one of 'pixels' (28x28 array of 0..255) or 'image' (base64 PNG)")
        if "pixels" in item:
            return Image.fromarray(pixels_array(item["pixels"], f"{where}.pixels"), mode="L")
        return self.image_from_bytes(b64_bytes(item["image"], f"{where}.image"))

    def prepare(self, images: list[Any]) -> tuple[list[dict[str, Any] | None], list[tuple[int, np.ndarray]]]:
        """PIL images (or errors standing for items that failed to decode) -> (an error answer per
        failed slot, ``(slot, uint8 [28, 28])`` per image ready for the model). Runs in the threadpool."""
        from mnist_cnn.inference.preprocessing import preprocess

        answers: list[dict[str, Any] | None] = [None] * len(images)
        ready: list[tuple[int, np.ndarray]] = []
        for i, img in enumerate(images):
            try:
                if isinstance(img, MnistCnnError):
                    raise img
                ready.append((i, untrusted(preprocess, img, max_pixels=self.limits.max_pixels).image))
            except MnistCnnError as exc:
                answers[i] = {"error": str(exc), "status": status_of(exc)}
        return answers, ready

    async def predict_images(self, images: list[Any]) -> list[dict[str, Any]]:
        """One answer per image: preprocessing in the threadpool, the model in the batcher's thread."""
        answers, ready = await run_in_threadpool(self.prepare, images)
        if ready:
            probs = await self.batcher.predict(np.stack([im for _, im in ready]))  # [n, C] float32
            for (i, im), p in zip(ready, probs):
                answers[i] = self.answer(p, im)
        return answers  # type: ignore[return-value]

    def answer(self, probs: np.ndarray, image: np.ndarray) -> dict[str, Any]:
        k = int(np.argmax(probs))
        return {
            "digit": k,
            "label": self.classes[k],
            "probability": float(probs[k]),
            "probabilities": [round(float(p), 6) for p in probs],
            "classes": self.classes,
            "model_id": self.model_id,
            "preprocessed": png_data_url(image),
        }


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


def pixels_array(pixels: Any, where: str) -> np.ndarray:
    """A JSON 28x28 array of numbers 0..255 -> uint8 ``[28, 28]``."""
    try:
        arr = np.asarray(pixels, dtype=np.float64)
    except (ValueError, TypeError):
        raise RequestError(f"{where}: must be a 28x28 array of numbers 0..255 (rows of equal length)") from None
    if arr.shape != (28, 28):
        raise RequestError(f"{where}: shape {list(arr.shape)}, expected 28x28 rows of numbers 0..255")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise RequestError(f"{where}: values must be finite numbers in 0..255")
    return np.rint(arr).astype(np.uint8)


def b64_bytes(text: Any, where: str) -> bytes:
    """Base64 (optionally a ``data:image/...;base64,`` URL) -> bytes."""
    if not isinstance(text, str):
        raise RequestError(f"{where}: must be a base64 string (PNG or JPEG)")
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise RequestError(f"{where}: data URL must be base64-encoded")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}: not valid base64") from None


def png_data_url(image: np.ndarray) -> str:
    """uint8 ``[28, 28]`` -> ``data:image/png;base64,...`` for the page's preprocessed view."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


# --------------------------------------------------------------------------- request parsing


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) a declared or actual size over ``limit`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {int(declared):,} bytes; the limit is {limit:,} (--max-upload-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit:,} bytes (--max-upload-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_images(request: Request, service: Service, batch: bool) -> list[Any]:
    """The request's images as PIL images (or per-item errors in a batch), by content type."""
    body = await read_body(request, service.limits.max_body_bytes)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        payload = _json_body(body)
        return await run_in_threadpool(_images_from_json, service, payload, batch)
    if ctype == "multipart/form-data":
        blobs = await _multipart_files(request, body, service.limits.max_batch if batch else 1)
        return await run_in_threadpool(_decode_all, service, blobs, batch)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        if batch:
            raise UnsupportedMediaType("a batch takes multipart (field 'file', repeated) or JSON {'items': [...]}")
        return await run_in_threadpool(_decode_all, service, [body], False)
    raise UnsupportedMediaType(
        f"content type {ctype or '(none)'!r} is not supported; send multipart/form-data "
        "(field 'file'), application/json or an image/* body"
    )


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(f"body is not valid JSON ({getattr(exc, 'msg', 'bad encoding')})") from None


def _images_from_json(service: Service, payload: Any, batch: bool) -> list[Any]:
    if not batch:
        return [service.image_from_json(payload)]
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        raise RequestError("body: expected {'items': [{'pixels': ...} or {'image': ...}, ...]} with at least one item")
    _check_count(len(items), service.limits.max_batch)
    return [_or_error(service.image_from_json, item, f"items[{i}]") for i, item in enumerate(items)]


def _decode_all(service: Service, blobs: list[bytes], batch: bool) -> list[Any]:
    if not batch:
        return [service.image_from_bytes(blobs[0])]
    return [_or_error(service.image_from_bytes, b) for b in blobs]


def _or_error(fn: Any, *args: Any) -> Any:
    """In a batch one bad image is reported in its slot, not by failing the whole request."""
    try:
        return fn(*args)
    except MnistCnnError as exc:
        return exc


def _check_count(n: int, limit: int) -> None:
    if n > limit:
        raise PayloadTooLarge(f"{n} images in one request; the limit is {limit} (--max-batch)")


async def _multipart_files(request: Request, body: bytes, max_files: int) -> list[bytes]:
    """The bytes of every ``file`` field (content type image/* or octet-stream) of a multipart body."""
    from starlette.formparsers import MultiPartException

    async def replay() -> dict[str, Any]:  # the body was already read (and capped): parse it from memory
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files + 1, max_fields=16)
    except MultiPartException as exc:
        raise RequestError(f"malformed multipart body: {exc.message}") from None
    except AssertionError:  # python-multipart missing (starlette asserts)
        raise RequestError("multipart parsing is not available on this server; send JSON") from None
    files = [f for f in form.getlist("file") if not isinstance(f, str)]
    if not files:
        raise RequestError("multipart body has no file in field 'file'")
    _check_count(len(files), max_files)
    blobs = []
    for f in files:
        ctype = (f.content_type or "application/octet-stream").split(";")[0].strip().lower()
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise UnsupportedMediaType(
                f"file {f.filename!r} has content type {ctype!r}; send an image (PNG, JPEG, ...)"
            )
        blobs.append(await f.read())
    await form.close()
    return blobs


# --------------------------------------------------------------------------- the app


_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["pixels"],
                            "properties": {
                                "pixels": {
                                    "type": "array",
                                    "minItems": 28,
                                    "maxItems": 28,
                                    "description": "28 rows of 28 numbers 0..255",
                                    "items": {
                                        "type": "array",
                                        "items": {"type": "number", "minimum": 0, "maximum": 255},
                                    },
                                }
                            },
                        },
                        {
                            "type": "object",
                            "required": ["image"],
                            "properties": {
                                "image": {"type": "string", "description": "base64 PNG/JPEG, or a data: URL"}
                            },
                        },
                    ]
                }
            },
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["items"],
                    "properties": {
                        "items": {
                            "type": "array",
                            "items": {"type": "object", "description": "{'pixels': ...} or {'image': ...}"},
                        }
                    },
                }
            },
        },
    }
}
_ERRORS = {
    code: {"description": text, "content": {"application/json": {"example": {"error": text}}}}
    for code, text in (
        (400, "malformed request"),
        (413, "body or batch too large"),
        (415, "unsupported content type"),
        (422, "image undecodable or no digit found"),
    )
}


def create_app(predictor: Any, limits: Limits = Limits()) -> Any:
    """The FastAPI app serving ``predictor`` (an object with ``predict_proba``, ``classes``, ``info``)."""
    service = Service(predictor, limits)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        service.batcher.close()  # the model thread ends with the server

    app = _fastapi_class()(
        title="mnist-cnn",
        version=_version(),
        lifespan=lifespan,
        description="Handwritten digit recognition: draw or upload a digit, get its class.",
    )
    app.state.service = service

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
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.post("/api/predict", openapi_extra=_IMAGE_BODY, responses=_ERRORS, tags=["predict"])
    async def predict(request: Request) -> dict[str, Any]:
        """Predict one image: its digit, the probabilities of all classes and the 28x28 it became."""
        t0 = time.perf_counter()
        images = await parse_images(request, service, batch=False)
        answer = (await service.predict_images(images))[0]
        if "error" in answer:
            return JSONResponse({"error": answer["error"]}, status_code=answer["status"])  # type: ignore[return-value]
        return {**answer, "latency_ms": _ms_since(t0)}

    @app.post("/api/predict/batch", openapi_extra=_BATCH_BODY, responses=_ERRORS, tags=["predict"])
    async def predict_batch(request: Request) -> dict[str, Any]:
        """Predict several images in one model call; an image that fails gets an ``error`` in its slot."""
        t0 = time.perf_counter()
        images = await parse_images(request, service, batch=True)
        results = await service.predict_images(images)
        return {"results": results, "model_id": service.model_id, "latency_ms": _ms_since(t0)}

    @app.get("/api/health", tags=["meta"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "model_id": service.model_id, "backend": predictor.info.get("backend")}

    @app.get("/api/model", tags=["meta"])
    def model() -> dict[str, Any]:
        """Name, parameters, accuracy and provenance of the served model."""
        return service.model_info()

    return app


def _ms_since(t0: float) -> float:
    """Server-side latency of a request (body read, decode, preprocess, inference) in ms."""
    return round(1000 * (time.perf_counter() - t0), 3)


# The page only loads its own files; data: URLs are the 28x28 preview images.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


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


def load_app(model_spec: str, limits: Limits = Limits()) -> Any:
    """Load the model once and build the app (errors are MnistCnnError, before any port is bound)."""
    from mnist_cnn.inference.predictors import load_predictor

    return create_app(load_predictor(model_spec), limits)
