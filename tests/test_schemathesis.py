"""The OpenAPI schema and the server agree: schemathesis generates requests from ``/openapi.json``
(schema-valid ones and schema-violating ones, seeded and bounded) and checks every answer
(``--checks all``): no 5xx, every status and body documented, valid requests accepted, invalid
ones refused. The same run as ``schemathesis run http://127.0.0.1:PORT/openapi.json --checks all``
(docs/serving.md), in process through ASGI.

Two things the schema cannot say, configured below: a schema-valid request may still be refused
for its *content* (a PNG that shows no digit or does not decode: 422; more pixels than the
request's budget: 413), and a request over a documented limit (``maxItems``: more than
``--max-batch`` images) is refused with 413, not 400."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from mnist_cnn.inference.predictors import Predictor

pytest.importorskip("fastapi")
pytest.importorskip("multipart", reason="python-multipart is needed for uploads")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is in the [dev] extra")

EXAMPLES = 25  # per operation and phase; a CI-sized run (the docs' CLI run uses more)
SEED = 20261130

CONFIG = {
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES, "deterministic": True},
    "checks": {
        # valid by the schema but not usable: the image is undecodable or shows no digit (422)
        "positive_data_acceptance": {"expected-statuses": ["2xx", "413", "422"]},
        # over a documented limit (maxItems = --max-batch) is 413, like a body over --max-upload-mb
        "negative_data_rejection": {"expected-statuses": ["400", "413", "415", "422"]},
    },
}


class UniformModel(Predictor):
    """Any predictor will do for the contract: the requests still go through the real decoding and
    preprocessing; only the model is replaced (it needs no training, so the schema loads at import)."""

    classes: ClassVar[list[str]] = [str(i) for i in range(10)]
    info: ClassVar[dict[str, Any]] = {
        "name": "uniform",
        "model_id": "uniform",
        "backend": "numpy",
        "provenance": {"file": "/some/where/model.safetensors"},
    }

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 10), 0.1, dtype=np.float32)


def make_schema():
    import tempfile
    from pathlib import Path

    from mnist_cnn.inference.reader import NumberReader
    from mnist_cnn.models.reader import Crnn, save_reader
    from mnist_cnn.serving.app import create_app
    from mnist_cnn.serving.limits import Limits

    path = Path(tempfile.mkdtemp()) / "reader.safetensors"  # /api/read too: a tiny untrained reader
    save_reader(path, Crnn(width=4, hidden=8), {"temperature": 1.0})
    limits = Limits(max_body_bytes=200_000, max_pixels=500 * 500, max_batch=4)
    app = create_app(UniformModel(), limits, NumberReader(path))
    config = schemathesis.config.SchemathesisConfig.from_dict(CONFIG)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = make_schema()


@schema.parametrize()
def test_api_matches_its_schema(case) -> None:
    case.call_and_validate()
