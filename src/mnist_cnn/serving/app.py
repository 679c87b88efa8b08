"""The FastAPI app and its routes: :func:`create_app` wires the rooms of ``serving/`` together.

* ``GET /``: the drawing page (static files shipped in the package; no CDN).
* ``POST /api/predict``: one image as multipart field ``file``, a raw ``image/*`` body, or JSON
  ``{"pixels": 28x28 0..255}`` / ``{"image": base64 PNG/JPEG}``.
* ``POST /api/predict/batch``: several images (multipart fields ``file`` repeated, or JSON
  ``{"items": [{"pixels": ...} | {"image": ...}, ...]}``).
* ``POST /api/read``: one photo of a handwritten number (the same body forms as ``/api/predict``):
  the string read by the number reader, its probability, each digit's box. Without a reader
  (``serve --reader``) it answers 503 and is left out of the OpenAPI schema.
* ``GET /api/health``, ``GET /api/model``, ``GET /docs`` (OpenAPI, served offline when
  ``fastapi-offline`` is installed).

Probabilities are the model's calibrated ones; every answer says whether it is ``unsure``: its
probability is below ``min_confidence`` (query parameter, or multipart field, 0..1, default
:data:`~mnist_cnn.inference.predictors.DEFAULT_MIN_CONFIDENCE`).

A route admits the request (503 when ``Limits.max_concurrent`` are in progress), decodes it
(:mod:`~mnist_cnn.serving.decoding`) and hands the images to the
:class:`~mnist_cnn.serving.service.Service`. Every bad request is a 4xx JSON
``{"error": "<one line>"}``: a :class:`~mnist_cnn.errors.MnistCnnError` carries its own status.
The OpenAPI schema (:mod:`~mnist_cnn.serving.schemas`) states every request body the API takes
and every answer it gives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mnist_cnn.errors import MnistCnnError
from mnist_cnn.serving.decoding import parse_sources
from mnist_cnn.serving.guards import PAGE_HEADERS, SecurityHeaders
from mnist_cnn.serving.limits import DEFAULT_LIMITS, Limits
from mnist_cnn.serving.schemas import (
    HTTP_ERRORS,
    PREDICT_ERRORS,
    READ_ERRORS,
    BatchAnswer,
    Health,
    ModelInfo,
    PredictAnswer,
    ReadAnswer,
    request_body,
)
from mnist_cnn.serving.service import Service, status_of

STATIC_DIR = Path(__file__).parent / "static"
DOCS_PATHS = ("/docs", "/redoc")  # Swagger UI, ReDoc
log = logging.getLogger("mnist_cnn.server")


def create_app(
    predictor: Any, limits: Limits = DEFAULT_LIMITS, reader: Any = None, no_reader: str | None = None
) -> Any:
    """The FastAPI app serving ``predictor`` (an object with ``predict_proba``, ``classes``, ``info``)
    and, for ``/api/read``, ``reader`` (a loaded :class:`~mnist_cnn.inference.reader.NumberReader`;
    None: ``/api/read`` answers 503 with ``no_reader``, or a default message)."""
    service = Service(predictor, limits, reader, no_reader)

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
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def busy() -> JSONResponse:
        return JSONResponse(
            {"error": f"server busy: {limits.max_concurrent} requests in progress (--max-concurrent); retry shortly"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.post(
        "/api/predict",
        openapi_extra=request_body(False, limits.max_batch),
        response_class=JSONResponse,
        responses={200: {"model": PredictAnswer, "description": "the prediction"}, **PREDICT_ERRORS},
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
        openapi_extra=request_body(True, limits.max_batch),
        response_class=JSONResponse,
        responses={
            200: {"model": BatchAnswer, "description": "one result per image, in order"},
            **{k: v for k, v in PREDICT_ERRORS.items() if k != 422},
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

    @app.post(
        "/api/read",
        openapi_extra=request_body(False, limits.max_batch),
        response_class=JSONResponse,
        responses={200: {"model": ReadAnswer, "description": "the number(s) read"}, **READ_ERRORS},
        tags=["read"],
        include_in_schema=service.reader is not None,  # a server without a reader does not offer it
    )
    async def read(request: Request) -> JSONResponse:
        """Read the handwritten number(s) in one photo: the string, its calibrated probability,
        whether it is ``unsure`` (and why), each digit's box and probability, each row's alternatives.
        ``min_confidence`` applies to each row's whole string."""
        if service.reader is None:
            return JSONResponse({"error": service.no_reader}, status_code=503)
        if not service.admit():
            return busy()
        try:
            t0 = time.perf_counter()
            sources, min_confidence = await parse_sources(request, service, batch=False)
            answer = await service.read_source(sources[0], min_confidence)
        finally:
            service.release()
        return JSONResponse({**answer, "latency_ms": _ms_since(t0)})

    @app.get(
        "/api/health",
        response_class=JSONResponse,
        responses={200: {"model": Health, "description": "the server is up"}, **HTTP_ERRORS},
        tags=["meta"],
    )
    async def health() -> JSONResponse:
        backend = predictor.info.get("backend")
        return JSONResponse(
            {"status": "ok", "model_id": service.model_id, "backend": backend, "reader_id": service.reader_id}
        )

    @app.get(
        "/api/model",
        response_class=JSONResponse,
        responses={200: {"model": ModelInfo, "description": "the served model"}, **HTTP_ERRORS},
        tags=["meta"],
    )
    async def model() -> JSONResponse:
        """Name, parameters, accuracy and provenance of the served model, and its model card."""
        return JSONResponse(service.model_info())

    return app


def _ms_since(t0: float) -> float:
    """Server-side latency of a request (body read, decode, preprocess, inference) in ms."""
    return round(1000 * (time.perf_counter() - t0), 3)


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
