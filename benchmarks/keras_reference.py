"""The seed tutorial's Keras models, timed on this machine: the side-by-side reference for speed.py.

Runs in its own virtualenv with TensorFlow's CPU build (it never imports torch or mnist_cnn, so the
two stacks do not share a process or fight over threads):

    python -m venv .venv-keras && .venv-keras/bin/pip install tensorflow-cpu==2.21.0
    .venv-keras/bin/python benchmarks/keras_reference.py --data-dir ../shared/data/mnist --epochs 1 \
        --out benchmarks/results/keras-avx2-3ep.json

The models are the seed's, layer for layer (Model 1: conv 32/64/128 3x3 ReLU, max-pool 2 after each,
flatten, dense 128 ReLU, dropout 0.3, dense 10 softmax = 110,474 parameters; Model 2: the same convs,
dense 128/64/32: 119,850), compiled as the seed did (Adam 1e-3, categorical cross-entropy, batch 32,
all 60,000 training images, no validation split). Seconds per epoch come from a Keras callback
(epoch 1 includes graph tracing, as a user's first epoch does; ``seconds_per_epoch_steady`` is the
median of the later epochs when ``--epochs`` > 1). On an AVX-512 box, measure the fp32/AVX2 path with
``ONEDNN_MAX_CPU_ISA=AVX2`` in front, as for the torch side.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import cpu_name, timed, write_json  # noqa: E402  (stdlib and NumPy only: no torch here)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file as a uint8 array (magic 0x0000080N: N dimensions of big-endian uint32)."""
    raw = gzip.decompress(path.read_bytes())
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"error: {path}: not an unsigned-byte IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: Path) -> dict[str, np.ndarray]:
    missing = [f for f in FILES.values() if not (data_dir / f).is_file()]
    if missing:
        raise SystemExit(f"error: {data_dir}: missing {', '.join(missing)} (pass --data-dir with the MNIST IDX files)")
    return {k: read_idx(data_dir / f) for k, f in FILES.items()}


def build(keras: Any, name: str) -> Any:
    layers = keras.layers
    head = [128] if name == "model1" else [128, 64, 32]
    stack: list[Any] = [keras.Input((28, 28, 1))]
    for filters in (32, 64, 128):
        stack += [layers.Conv2D(filters, 3, activation="relu"), layers.MaxPooling2D(2)]
    stack.append(layers.Flatten())
    for units in head:
        stack.append(layers.Dense(units, activation="relu"))
        if name == "model1":
            stack.append(layers.Dropout(0.3))
    if name == "model2":
        stack.append(layers.Dropout(0.3))
    stack.append(layers.Dense(10, activation="softmax"))
    model = keras.Sequential(stack)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def run(name: str, data: dict[str, np.ndarray], epochs: int, seed: int) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    x = data["train_images"].astype("float32")[..., None] / 255.0  # [60000, 28, 28, 1], as the seed
    y = keras.utils.to_categorical(data["train_labels"], 10)
    xt = data["test_images"].astype("float32")[..., None] / 255.0
    yt = keras.utils.to_categorical(data["test_labels"], 10)
    model = build(keras, name)
    times: list[float] = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.t)

    _, wall = timed(lambda: model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[Clock()]))
    loss, acc = model.evaluate(xt, yt, verbose=0)
    per_epoch = ", ".join(f"{s:.1f}" for s in times)
    print(f"keras {name}: {epochs} epoch(s) {wall:.1f} s ({per_epoch}), test {100 * acc:.2f}%")
    return {
        "model": name,
        "params": int(model.count_params()),
        "epochs": epochs,
        "seconds_per_epoch": times,
        "seconds_per_epoch_steady": statistics.median(times[1:]) if len(times) > 1 else times[0],
        "wall_seconds": wall,
        "test_accuracy": float(acc),
        "test_loss": float(loss),
        "tensorflow": tf.__version__,
        "threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="time the seed tutorial's Keras models on this machine")
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--models", nargs="+", default=["model1"], choices=["model1", "model2"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    data = load(args.data_dir)
    out = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "runs": [run(m, data, args.epochs, args.seed) for m in args.models],
    }
    write_json(args.out, out)


if __name__ == "__main__":
    main()
