"""PyTorch vs ONNX Runtime on CPU: throughput at batch 1000 and batch-1 latency, same model, same images.

Exports MODEL (run folder / .safetensors / default) to a temporary .onnx (or uses --onnx), then for
each engine and thread count measures

* throughput: images/s over the test images in batches of ``--batch`` (median of ``--repeats`` passes),
* batch-1 latency: p50 / p99 of ``--calls`` single-image calls after a warm-up,

and checks both engines' logits agree (max |diff|). torch runs the project's own inference path
(``evaluation.predict_logits``: uint8 -> normalise -> model); ONNX Runtime gets ``uint8 / 255``.

    python benchmarks/onnx_vs_torch.py /tmp/serve-model --data-dir ../shared/data/mnist \
        --out benchmarks/results/onnx-vs-torch-default.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import load_torch_model, machine, time_calls, write_json  # noqa: E402


def measure(run_fn, images: np.ndarray, batch: int, repeats: int, calls: int) -> dict:
    def full_pass() -> None:
        for i in range(0, len(images), batch):
            run_fn(images[i : i + batch])

    passes = time_calls(full_pass, repeats, warmup=min(20, repeats))  # warm-up: allocators, lazy kernels
    one = images[:1]
    lat = np.array(time_calls(lambda: run_fn(one), calls, warmup=min(20, calls))) * 1000
    return {
        "throughput_img_s": round(len(images) / statistics.median(passes)),
        "batch1_p50_ms": round(float(np.percentile(lat, 50)), 3),
        "batch1_p99_ms": round(float(np.percentile(lat, 99)), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="run folder, .safetensors or default")
    ap.add_argument("--onnx", help="an already exported .onnx of MODEL (default: export to a temp file)")
    ap.add_argument("--data-dir", help="MNIST folder (random images if absent)")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--calls", type=int, default=1000, help="batch-1 calls per engine")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts to try")
    ap.add_argument("--out", help="write JSON here")
    args = ap.parse_args()

    import torch

    from mnist_cnn.evaluation.metrics import predict_logits
    from mnist_cnn.inference.export import export_onnx, parity_images
    from mnist_cnn.inference.onnx import onnx_input, onnx_session

    model, meta = load_torch_model(args.model)
    mean, std = meta["normalisation"]["mean"], meta["normalisation"]["std"]
    images, where = parity_images(meta, args.data_dir, args.images)
    tmp = tempfile.TemporaryDirectory()
    onnx_path = args.onnx or export_onnx(args.model, Path(tmp.name) / "model.onnx", verify=False).path

    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        session = onnx_session(onnx_path, threads=threads)
        engines = {
            "torch": lambda x: predict_logits(model, x, mean, std, batch_size=args.batch),
            "onnxruntime": lambda x, s=session: s.run(None, {"images": onnx_input(x)})[0],
        }
        for name, fn in engines.items():
            r = {"engine": name, "threads": threads, **measure(fn, images, args.batch, args.repeats, args.calls)}
            rows.append(r)
            print(
                f"{name:<12} threads {threads}: {r['throughput_img_s']:>8,} img/s at batch {args.batch}; "
                f"batch-1 p50 {r['batch1_p50_ms']:.3f} ms, p99 {r['batch1_p99_ms']:.3f} ms",
                flush=True,
            )
        diff = np.abs(engines["torch"](images[: args.batch]).numpy() - engines["onnxruntime"](images[: args.batch]))
        print(f"  max |logit diff| torch vs onnxruntime: {diff.max():.2e}")
    write_json(
        args.out,
        {
            "model": str(args.model),
            "arch": meta["arch"],
            "params": meta.get("params"),
            "images": where,
            "batch": args.batch,
            "machine": machine(),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
