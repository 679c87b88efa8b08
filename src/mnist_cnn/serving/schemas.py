"""The OpenAPI schema: what goes in and out of the API, stated exactly.

The pydantic models describe every answer (:class:`PredictAnswer`, :class:`BatchAnswer`,
:class:`ReadAnswer`, :class:`Health`, :class:`ModelInfo`, :class:`Error`); :data:`HTTP_ERRORS`,
:data:`PREDICT_ERRORS` and :data:`READ_ERRORS` list every refusal; :func:`request_body` is every
request body a predict route (and ``/api/read``) takes. The server enforces exactly this schema
(:mod:`~mnist_cnn.serving.decoding`, ``tests/test_schemathesis.py``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mnist_cnn.inference.predictors import DEFAULT_MIN_CONFIDENCE

_B64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
IMAGE_PATTERN = rf"^(?:data:[^,]*;base64,)?{_B64}$"  # what the schema says an "image" string is


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


Box = list[int]
_BOX = "(left, top, right, bottom) in the uploaded image's pixels (EXIF orientation applied), within `size`"


class ReadChoice(BaseModel):
    """One of a digit's most probable classes."""

    model_config = ConfigDict(extra="forbid")
    label: str
    digit: int
    probability: float


class ReadDigit(BaseModel):
    """One digit of the string read: its class, probability, box and top-k classes."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(description="the digit as text")
    digit: int
    probability: float = Field(description="the digit's probability at the frame where it peaks")
    bbox: Box = Field(min_length=4, max_length=4, description=_BOX)
    top_k: list[ReadChoice] = Field(description="the most probable digits there, best first")


class ReadAlternative(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str
    probability: float


class ReadRow(BaseModel):
    """One row of handwriting read whole."""

    model_config = ConfigDict(extra="forbid")
    number: str = Field(description="the digit string (leading zeros kept; empty when nothing was read)")
    probability: float = Field(description="calibrated probability that the whole string is right")
    unsure: bool
    reason: str | None = Field(description='why unsure: "low confidence", or "3 or 4 digits?"')
    bbox: Box = Field(min_length=4, max_length=4, description=_BOX)
    digits: list[ReadDigit]
    alternatives: list[ReadAlternative] = Field(description="the next most probable strings")


class ReadAnswer(BaseModel):
    """``POST /api/read``: the number(s) in the image, each digit's box, and the server-side latency."""

    model_config = ConfigDict(extra="forbid")
    number: str = Field(description="every row's string, top to bottom, joined by newlines")
    probability: float = Field(description="probability that every row is read right")
    unsure: bool = Field(description="a row is unsure: below min_confidence, or its length is in doubt")
    reason: str | None = Field(description="the unsure rows' reasons joined by '; ', else null")
    digits: list[ReadDigit] = Field(description="every row's digits, top to bottom, left to right")
    rows: list[ReadRow]
    size: list[int] = Field(min_length=2, max_length=2, description="the image's (width, height) in pixels")
    model_id: str = Field(description="the number reader's id: file stem and sha256 prefix")
    latency_ms: float = Field(description="server time: body read, decode, rows, reader")


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]
    model_id: str
    backend: str | None
    reader_id: str | None = Field(description="the number reader of /api/read; null: the server reads no numbers")


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


HTTP_ERRORS = {  # answered by the HTTP layer (uvicorn_config) for any request
    408: _error("the request line, headers or body did not arrive in time (--read-timeout, --body-timeout)"),
    431: _error("request line and headers larger than 16 KiB"),
    503: _error("more than --max-connections connections open; retry after the Retry-After seconds", retry_after=True),
}
PREDICT_ERRORS = {
    400: _error("malformed request: invalid JSON, a body the schema does not allow, malformed multipart"),
    413: _error("body over --max-upload-mb, or more images than --max-batch"),
    415: _error("unsupported content type, or (single image) an uploaded part that is not an image"),
    422: _error("the image is empty, undecodable or truncated, has more than --max-pixels pixels, or shows no digit"),
    **HTTP_ERRORS,
    503: _error(
        "--max-concurrent requests already in progress, or more than --max-connections connections open; "
        "retry after the Retry-After seconds",
        retry_after=True,
    ),
}


READ_ERRORS = {
    **{k: v for k, v in PREDICT_ERRORS.items() if k != 503},
    422: _error("the image is empty, undecodable or truncated, has more than --max-pixels pixels, or shows no number"),
    503: _error(
        "--max-concurrent requests already in progress (retry after the Retry-After seconds), more than "
        "--max-connections connections open, or the server has no number reader (--reader)",
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


def request_body(batch: bool, max_batch: int) -> dict[str, Any]:
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
