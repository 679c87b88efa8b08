"""Request decoding: an HTTP request -> its images as sources and its ``min_confidence``.

:func:`parse_sources` picks the decoder by content type: multipart (field ``file``, once or
repeated, and a ``min_confidence`` field), JSON (``{"pixels": ...}`` / ``{"image": ...}``, or
``{"items": [...]}`` for a batch, exactly as :mod:`~mnist_cnn.serving.schemas` states it) or a raw
``image/*`` body. The body is read once, capped at ``max_body_bytes`` (:func:`read_body`). Every
refusal is a :class:`~mnist_cnn.errors.MnistCnnError` with a one-line message and its status; in a
batch, an item that cannot be used becomes an error in its slot instead.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from fastapi import Request

from mnist_cnn.errors import PayloadTooLarge, RequestError, UnsupportedMediaType, first_line
from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE
from mnist_cnn.serving.images import Source
from mnist_cnn.serving.service import Service


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


def check_count(n: int, limit: int) -> None:
    if n > limit:
        raise PayloadTooLarge(f"{n} images in one request; the limit is {limit} (--max-batch)")


# --------------------------------------------------------------------------- JSON bodies (exactly the schema)


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


_EXACTLY_ONE = "send exactly one of 'pixels' (28x28 array of numbers 0..255) or 'image' (base64 PNG/JPEG)"


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
    """Base64 (optionally a ``data:...;base64,`` URL) -> bytes: exactly the strings that
    :data:`~mnist_cnn.serving.schemas.IMAGE_PATTERN` matches."""
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
