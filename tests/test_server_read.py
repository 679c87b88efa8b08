"""``POST /api/read`` through FastAPI's TestClient: the reading's shape, boxes inside the image (in the
file's pixels, also when it is decoded reduced), ``min_confidence``, every bad request a one-line 4xx,
no digit -> 422, no reader -> 503 while ``/api/predict`` still works, the reader off the event loop,
and the schema it states (schemathesis, on a server that has a reader).

The reader is a tiny untrained CRNN: it reads garbage strings, so only shapes, types and boxes are
checked, and that the server answers what the library (:class:`NumberReader`) reads from the same bytes."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from mnist_cnn.inference.predictors import Predictor

pytest.importorskip("fastapi")
pytest.importorskip("multipart", reason="python-multipart is needed for uploads")

from fastapi.testclient import TestClient
from PIL import Image

from mnist_cnn.errors import MnistCnnError
from mnist_cnn.inference.reader import NumberReader
from mnist_cnn.serving.limits import Limits

SAMPLES = Path(__file__).resolve().parent.parent / "src" / "mnist_cnn" / "samples"
LIMITS = Limits(max_body_bytes=300_000, max_pixels=1500 * 1500, max_batch=4)


class UniformModel(Predictor):
    """The digit classifier of /api/predict: not under test here, so no training is needed."""

    classes: ClassVar[list[str]] = [str(i) for i in range(10)]
    info: ClassVar[dict[str, Any]] = {"name": "uniform", "model_id": "uniform", "backend": "numpy"}

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 10), 0.1, dtype=np.float32)


def make_reader_file(folder: Path) -> Path:
    """A tiny untrained reader (seeded: the same garbage every run)."""
    import torch

    from mnist_cnn.models.reader import Crnn, save_reader

    torch.manual_seed(0)
    path = folder / "reader.safetensors"
    save_reader(path, Crnn(width=4, hidden=8), {"temperature": 1.0})
    return path


def number_photo(labels: tuple[int, ...] = (1, 9, 2, 8), seed: int = 0) -> bytes:
    """A JPEG photo of ``labels`` written with the bundled MNIST sample digits on paper."""
    from mnist_cnn.synth.numbers import render_number

    digits = np.stack([np.asarray(Image.open(SAMPLES / f"digit-{k}.png").convert("L")) for k in labels])
    jpeg, _ = render_number(digits, "spaced", np.random.default_rng(seed), list(labels))
    return jpeg


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def reader_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reader_file(tmp_path_factory.mktemp("reader"))


@pytest.fixture(scope="module")
def reader(reader_file: Path) -> NumberReader:
    return NumberReader(reader_file)


@pytest.fixture(scope="module")
def photo() -> bytes:
    return number_photo()


@pytest.fixture(scope="module")
def client(reader: NumberReader):
    from mnist_cnn.serving.app import create_app

    with TestClient(create_app(UniformModel(), LIMITS, reader), raise_server_exceptions=False) as c:
        yield c


# --------------------------------------------------------------------------- the answer


def check_reading(a: dict[str, Any], size: tuple[int, int]) -> None:
    """Every field of the answer, its types, and every box inside the image."""
    from mnist_cnn.serving.schemas import ReadAnswer

    ReadAnswer.model_validate(a)  # exactly the schema's fields and types
    w, h = size
    assert a["size"] == [w, h]
    assert a["rows"], a
    assert a["number"] == "\n".join(r["number"] for r in a["rows"])
    assert a["digits"] == [d for r in a["rows"] for d in r["digits"]]
    assert 0.0 <= a["probability"] <= 1.0 and isinstance(a["unsure"], bool)
    assert a["unsure"] == any(r["unsure"] for r in a["rows"]) and (a["reason"] is None) == (not a["unsure"])
    assert a["model_id"].startswith("reader-") and a["latency_ms"] >= 0
    for row in a["rows"]:
        assert len(row["digits"]) == len(row["number"]) and row["unsure"] == (row["reason"] is not None)
        boxes = [row["bbox"]] + [d["bbox"] for d in row["digits"]]
        for left, top, right, bottom in boxes:
            assert 0 <= left <= right <= w and 0 <= top <= bottom <= h, (boxes, size)
        for d, ch in zip(row["digits"], row["number"], strict=True):
            assert d["label"] == ch == str(d["digit"]) and 0.0 <= d["probability"] <= 1.0
            probs = [k["probability"] for k in d["top_k"]]
            assert 1 <= len(probs) <= 3 and probs == sorted(probs, reverse=True)
        for alt in row["alternatives"]:
            assert alt["number"] != row["number"] and 0.0 <= alt["probability"] <= 1.0


@pytest.mark.parametrize("how", ["multipart", "raw", "json-base64", "json-data-url"])
def test_read_every_input_form(client: TestClient, reader: NumberReader, photo: bytes, how: str) -> None:
    b64 = base64.b64encode(photo).decode()
    kwargs = {
        "multipart": {"files": {"file": ("number.jpg", photo, "image/jpeg")}},
        "raw": {"content": photo, "headers": {"content-type": "image/jpeg"}},
        "json-base64": {"json": {"image": b64}},
        "json-data-url": {"json": {"image": "data:image/jpeg;base64," + b64}},
    }[how]
    r = client.post("/api/read", **kwargs)
    assert r.status_code == 200, r.text
    a = r.json()
    check_reading(a, Image.open(io.BytesIO(photo)).size)
    assert a["digits"], "the seeded tiny reader reads some digits in this photo"
    # the server answers what the library reads from the same bytes
    want = reader.read(photo).to_dict()
    assert a["number"] == want["number"] and a["probability"] == pytest.approx(want["probability"], rel=1e-4)
    assert [row["bbox"] for row in a["rows"]] == [row["bbox"] for row in want["rows"]]


def test_a_large_photo_decoded_reduced_has_boxes_in_the_files_pixels(reader: NumberReader, photo: bytes) -> None:
    """Over --max-decoded-pixels the server reads a reduced greyscale decode; the boxes and ``size``
    still describe the uploaded file."""
    from mnist_cnn.serving.app import create_app

    size = Image.open(io.BytesIO(photo)).size
    with TestClient(create_app(UniformModel(), Limits(max_decoded_pixels=160 * 160), reader)) as c:
        r = c.post("/api/read", files={"file": ("number.jpg", photo, "image/jpeg")})
    assert r.status_code == 200, r.text
    check_reading(r.json(), size)
    full = reader.read(photo).to_dict()["rows"][0]["bbox"]  # the row's box from the full-size image
    got = r.json()["rows"][0]["bbox"]
    assert np.abs(np.subtract(got, full)).max() <= 0.05 * max(size), (got, full)


def test_the_health_check_names_the_reader(client: TestClient) -> None:
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["reader_id"].startswith("reader-")
    assert "/api/read" in client.get("/openapi.json").json()["paths"]


# --------------------------------------------------------------------------- min_confidence


def test_min_confidence_applies_to_the_whole_number(client: TestClient, photo: bytes) -> None:
    files = {"file": ("number.jpg", photo, "image/jpeg")}
    never = client.post("/api/read?min_confidence=0", files=files).json()
    always = client.post("/api/read?min_confidence=1", files=files).json()
    field = client.post("/api/read?min_confidence=0", data={"min_confidence": "1"}, files=files).json()  # field wins
    assert always["unsure"] is True and field["unsure"] is True
    assert all(row["reason"] for row in always["rows"])
    # at 0 a row is unsure only when its length is in doubt, never for low confidence
    assert all(row["reason"] is None or row["reason"].endswith("digits?") for row in never["rows"])
    assert never["number"] == always["number"] and never["probability"] == pytest.approx(always["probability"])


@pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "abc", ""])
def test_a_bad_min_confidence_is_a_400_naming_it(client: TestClient, photo: bytes, value: str) -> None:
    files = {"file": ("number.jpg", photo, "image/jpeg")}
    for r in (
        client.post(f"/api/read?min_confidence={value}", files=files),
        client.post("/api/read", data={"min_confidence": value}, files=files),
    ):
        assert r.status_code == 400, r.text
        assert r.json()["error"].startswith("min_confidence:") and "0 to 1" in r.json()["error"]


# --------------------------------------------------------------------------- every bad request: 4xx JSON, one line


BAD_REQUESTS = {
    # name: (request kwargs, expected status, a piece of the message)
    "body over the cap": ({"content": b"\0" * 400_000, "headers": {"content-type": "image/png"}}, 413, "limit"),
    "no content type": ({"content": b"abc"}, 415, "not supported"),
    "text body": ({"content": b"1928", "headers": {"content-type": "text/plain"}}, 415, "text/plain"),
    "upload is not an image": ({"files": {"file": ("a.txt", b"hello", "text/plain")}}, 415, "a.txt"),
    "multipart without file": ({"files": {"other": ("a.png", b"x", "image/png")}}, 400, "field 'file'"),
    "invalid JSON": ({"content": b"{image:", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    "JSON with neither field": ({"json": {"number": 7}}, 400, "exactly one of"),
    "image not base64": ({"json": {"image": "***not base64***"}}, 400, "base64"),
    "undecodable image": ({"files": {"file": ("x.png", b"\x89PNG\r\n\x1a\n garbage", "image/png")}}, 422, ""),
    "empty file": ({"files": {"file": ("x.png", b"", "image/png")}}, 422, "empty"),
    "decompression bomb": ({"files": {"file": ("bomb.png", png(Image.new("L", (2000, 2000))), "image/png")}}, 422, ""),
    "blank photo, no digit": (
        {"files": {"file": ("blank.png", png(Image.new("L", (300, 120), 255)), "image/png")}},
        422,
        "no digit found",
    ),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
def test_bad_request_is_4xx_json(client: TestClient, name: str) -> None:
    kwargs, status, piece = BAD_REQUESTS[name]
    r = client.post("/api/read", **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json") and list(r.json()) == ["error"]
    msg = r.json()["error"]
    assert isinstance(msg, str) and msg and "\n" not in msg and piece.lower() in msg.lower(), msg


def test_no_digit_is_the_same_422_as_predict(client: TestClient) -> None:
    blank = png(Image.new("RGB", (240, 90), (250, 250, 245)))
    read = client.post("/api/read", content=blank, headers={"content-type": "image/png"})
    predict = client.post("/api/predict", content=blank, headers={"content-type": "image/png"})
    assert read.status_code == predict.status_code == 422
    assert read.json()["error"].startswith("no digit found") and predict.json()["error"].startswith("no digit found")


# --------------------------------------------------------------------------- no reader


def test_without_a_reader_read_is_503_and_predict_still_works(photo: bytes) -> None:
    from mnist_cnn.serving.app import create_app

    with TestClient(create_app(UniformModel(), LIMITS)) as c:
        r = c.post("/api/read", files={"file": ("number.jpg", photo, "image/jpeg")})
        assert r.status_code == 503 and list(r.json()) == ["error"], r.text
        assert "--reader" in r.json()["error"] and "\n" not in r.json()["error"]
        digit = png(Image.open(SAMPLES / "digit-7.png"))
        assert c.post("/api/predict", files={"file": ("d.png", digit, "image/png")}).status_code == 200
        assert c.get("/api/health").json()["reader_id"] is None
        assert "/api/read" not in c.get("/openapi.json").json()["paths"]  # not offered


def test_load_app_reader_default_none_and_a_file(
    tmp_path: Path, reader_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``serve --reader``: ``default`` without the bundled file serves on with a 503 that says so,
    ``none`` loads nothing, a named file that is missing is an error before the server starts."""
    from mnist_cnn.serving import service

    monkeypatch.setattr(service, "DEFAULT_READER", tmp_path / "not-installed.safetensors")
    reader, why = service.load_reader_for_serving("default")
    assert reader is None and "not-installed.safetensors" in why and "--reader" in why
    assert service.load_reader_for_serving("none") == (None, service.NO_READER)
    assert service.load_reader_for_serving(None) == (None, service.NO_READER)
    with pytest.raises(MnistCnnError, match="missing.safetensors"):
        service.load_reader_for_serving(str(tmp_path / "missing.safetensors"))
    reader, why = service.load_reader_for_serving(str(reader_file))
    assert isinstance(reader, NumberReader) and why is None


# --------------------------------------------------------------------------- off the event loop


def test_the_reader_runs_off_the_event_loop(reader_file: Path, photo: bytes) -> None:
    """While the CRNN reads (held here), the event loop still answers; it runs in its own thread."""
    import httpx

    from mnist_cnn.serving.app import create_app

    entered, release = threading.Event(), threading.Event()
    threads: list[str] = []

    class HeldReader(NumberReader):
        def read_crop(self, crop: Any, min_confidence: float = 0.5) -> Any:
            threads.append(threading.current_thread().name)
            entered.set()
            assert release.wait(30), "never released"
            return super().read_crop(crop, min_confidence)

    app = create_app(UniformModel(), LIMITS, HeldReader(reader_file))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            slow = asyncio.create_task(c.post("/api/read", files={"file": ("n.jpg", photo, "image/jpeg")}))
            while not entered.is_set():
                await asyncio.sleep(0.01)
            health = await asyncio.wait_for(c.get("/api/health"), timeout=20)
            assert health.status_code == 200 and not slow.done()
            release.set()
            assert (await slow).status_code == 200

    asyncio.run(scenario())
    assert threads and all(t.startswith("mnist-cnn-reader") for t in threads), threads


# --------------------------------------------------------------------------- the schema it states

try:
    import schemathesis
except ImportError:  # the [dev] extra is not installed
    schemathesis = None

SCHEMATHESIS = {  # as tests/test_schemathesis.py: a valid body may still show no digit (422)
    "seed": 20261130,
    "generation": {"max-examples": 25, "deterministic": True},
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "413", "422"]},
        "negative_data_rejection": {"expected-statuses": ["400", "413", "415", "422"]},
    },
}


def make_schema():
    """The app with a tiny reader (the file is read at load, so a temporary folder will do); built at
    import, as schemathesis' pytest plugin wants its schema."""
    import tempfile

    from mnist_cnn.serving.app import create_app

    with tempfile.TemporaryDirectory() as folder:
        reader = NumberReader(make_reader_file(Path(folder)))
        app = create_app(UniformModel(), Limits(max_body_bytes=200_000, max_pixels=500 * 500, max_batch=4), reader)
    config = schemathesis.config.SchemathesisConfig.from_dict(SCHEMATHESIS)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config).include(path="/api/read")


if schemathesis is not None:
    schema = make_schema()

    @schema.parametrize()
    def test_read_matches_its_schema(case) -> None:
        case.call_and_validate()

else:

    def test_read_matches_its_schema() -> None:
        pytest.skip("schemathesis is in the [dev] extra")
