"""What `mnist-cnn serve` runs: the model loaded once, the app built, uvicorn configured.

:func:`load_app` loads the model before any port is bound (a bad model is a
:class:`~mnist_cnn.errors.MnistCnnError`, not a half-started server) and builds the app
(:func:`~mnist_cnn.serving.app.create_app`). :func:`uvicorn_config` runs it behind the guarded HTTP
protocol (:mod:`~mnist_cnn.serving.guards`). ``cli/serving.py`` takes everything it needs from
this module, :class:`Limits` and :func:`tune_malloc` included.

Resource bounds (:class:`~mnist_cnn.serving.limits.Limits`): body size, pixels per image and per
request, images larger than ``max_decoded_pixels`` decoded at reduced size in greyscale, requests in
progress (503 beyond), and, at the HTTP layer, header size, read timeouts and open connections.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mnist_cnn.serving.app import create_app
from mnist_cnn.serving.guards import guarded_protocol
from mnist_cnn.serving.limits import DEFAULT_LIMITS, Limits, tune_malloc
from mnist_cnn.serving.service import load_reader_for_serving

__all__ = ["Limits", "load_app", "load_predictor_for_serving", "tune_malloc", "uvicorn_config"]

log = logging.getLogger("mnist_cnn.server")


def load_predictor_for_serving(model_spec: str, threads: int | None = None) -> Any:
    """:func:`~mnist_cnn.inference.predictors.load_predictor`, with ``threads`` intra-op threads for
    an ONNX model (1: the model runs in the batcher's thread alone; more: the pool's threads sleep
    between requests instead of spinning)."""
    from mnist_cnn.inference.predictors import OnnxPredictor, load_predictor

    p = Path(model_spec)
    if threads and p.suffix.lower() == ".onnx" and p.is_file():
        return OnnxPredictor(p, threads=threads, spin=False)
    return load_predictor(model_spec)


def load_app(
    model_spec: str,
    limits: Limits = DEFAULT_LIMITS,
    threads: int | None = None,
    reader: str | os.PathLike[str] | None = None,
) -> Any:
    """Load the model (and the number reader ``reader``: a file, ``"default"`` for the bundled one if
    installed, None or ``"none"`` for none) once and build the app (errors are MnistCnnError, before
    any port is bound). Without a reader ``/api/read`` answers 503; a reader loads torch."""
    predictor = load_predictor_for_serving(model_spec, threads)
    number_reader, no_reader = load_reader_for_serving(reader)
    return create_app(predictor, limits, number_reader, no_reader)


def uvicorn_config(app: Any, limits: Limits = DEFAULT_LIMITS, **kwargs: Any) -> Any:
    """A ``uvicorn.Config`` for ``app`` whose HTTP protocol enforces the limits uvicorn lacks:
    header size (431), read timeouts (408) and open connections (503), see :func:`guarded_protocol`.
    Without httptools, h11 with its header-size cap (no read timeouts)."""
    import uvicorn

    protocol = guarded_protocol(limits)
    if protocol is None:
        log.warning("httptools is not installed: no read timeouts (pip install 'mnist-cnn[serve]')")
        return uvicorn.Config(app, http="h11", h11_max_incomplete_event_size=limits.max_header_bytes, **kwargs)
    return uvicorn.Config(app, http=protocol, **kwargs)
