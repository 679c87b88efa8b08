"""ONNX Runtime side of exported models: names, session, input conversion. Never imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.errors import ExportError

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
METADATA_KEY = "mnist_cnn"


# --------------------------------------------------------------------------- reading and parity


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The ``mnist_cnn`` metadata of an exported file (without loading the weights into a session)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors have no common base
        raise ExportError(f"{path}: not a readable ONNX file ({type(exc).__name__}); re-export it") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if METADATA_KEY not in props:
        raise ExportError(f"{path}: has no mnist_cnn metadata; export it with `mnist-cnn export`")
    return json.loads(props[METADATA_KEY])


def onnx_session(path: str | Path, threads: int | None = None, spin: bool = True) -> Any:
    """An ONNX Runtime CPU session (``threads``: intra-op threads, default ORT's choice). ``spin``
    False: the intra-op threads sleep between calls instead of spinning (ORT's default spins, which
    suits back-to-back batches and wastes cores in a server that waits for requests)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_input(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 ``[N, 28, 28]`` -> the graph's input float32 ``[N, 1, 28, 28]`` in 0..1."""
    return (images_uint8.astype(np.float32) / np.float32(255.0))[:, None, :, :]
