"""Speed benchmark, in one process and one run so ratios hold:

- the seed recipe for 1 epoch (seconds per epoch),
- ``fast99`` over 10 seeds and ``fast995`` over 5 seeds (test accuracy mean ± std, median train s),
- inference throughput on the 10k test set (images/s at batch 1000) and batch-1 latency,
- the compute floor: FLOPs per training epoch / this machine's measured matmul rate.

    python benchmarks/speed.py --data-dir ../shared/data/mnist --out results/speed-cpu.json

Recipes are selected on the validation split; the test accuracy reported here is measured once per
seed, never used to choose anything.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, matmul_gflops, summary, train_flops_per_image, write_json  # noqa: E402


def run_recipe(name: str, seeds: int, data, overrides: dict) -> dict:
    from mnist_cnn.models.registry import create_model
    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import recipe_config

    accs, secs, results = [], [], []
    for seed in range(seeds):
        cfg = recipe_config(name).merged({**overrides, "seed": seed})
        res = train(cfg, None, quiet=True, data=data)
        accs.append(res.metrics["test_accuracy"])
        secs.append(res.metrics["train_seconds"])
        results.append(
            {
                "seed": seed,
                "test_accuracy": res.metrics["test_accuracy"],
                "val_accuracy": res.metrics.get("val_accuracy"),
                "train_seconds": res.metrics["train_seconds"],
                "compile_seconds": res.metrics.get("compile_seconds", 0.0),
            }
        )
        warm = res.metrics.get("compile_seconds") or 0.0
        print(
            f"  {name} seed {seed}: test {100 * accs[-1]:.2f}%  train {secs[-1]:.2f}s"
            + (f"  (compile warm-up {warm:.1f}s, not counted)" if warm else ""),
            flush=True,
        )
    cfg = recipe_config(name).merged(overrides)
    flops_img = train_flops_per_image(create_model(cfg.model, **cfg.model_kwargs))
    n_train = len(data.train_labels) - cfg.val_size
    return {
        "recipe": name,
        "model": cfg.model,
        "epochs": cfg.epochs,
        "seeds": results,
        "accuracy": summary(accs),
        "train_seconds": summary(secs),
        "train_flops_per_epoch": flops_img * n_train,
        "train_flops_total": flops_img * n_train * cfg.epochs,
    }


def inference_speed(data, device: str) -> dict:
    import torch

    from mnist_cnn.evaluation.metrics import predict_logits
    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import recipe_config

    res = train(recipe_config("fast99").merged({"device": device}), None, quiet=True, data=data)
    model = res.model.eval()
    norm = res.meta["normalisation"]
    x = data.test_images
    predict_logits(model, x[:1000], norm["mean"], norm["std"], batch_size=1000)  # warm-up
    t = time.perf_counter()
    predict_logits(model, x, norm["mean"], norm["std"], batch_size=1000)
    bulk = time.perf_counter() - t
    lat = []
    for i in range(200):
        t = time.perf_counter()
        predict_logits(model, x[i : i + 1], norm["mean"], norm["std"], batch_size=1)
        lat.append(time.perf_counter() - t)
    return {
        "model": "fast99",
        "images_per_second": len(x) / bulk,
        "batch1_latency_ms_median": 1e3 * statistics.median(lat),
        "batch1_latency_ms_p99": 1e3 * sorted(lat)[int(0.99 * len(lat)) - 1],
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="mnist-cnn speed benchmark")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fast99-seeds", type=int, default=10)
    ap.add_argument("--fast995-seeds", type=int, default=5)
    ap.add_argument("--skip", nargs="*", default=[], choices=["seed", "fast99", "fast995", "inference"])
    ap.add_argument("--compile", action="store_true", help="torch.compile every model (warm-up timed apart)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch

    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.training.device import resolve_device, setup_threads

    device = resolve_device(args.device)
    if device.type == "cpu":
        setup_threads(None)
    t = time.perf_counter()
    data = load_dataset("mnist", args.data_dir)
    load_s = time.perf_counter() - t
    common = {"data_dir": args.data_dir, "device": args.device, "compile": args.compile, "precision": args.precision}
    out = {
        "machine": machine(),
        "device": str(device),
        "data_load_seconds": load_s,
        "compile": args.compile,
        "precision": args.precision,
    }
    out["matmul_gflops"] = matmul_gflops(device="cuda" if device.type == "cuda" else "cpu")
    if device.type == "cuda":
        out["matmul_gflops_bf16"] = matmul_gflops(device="cuda", dtype=torch.bfloat16)
    print(f"machine: {out['machine']}  matmul fp32 {out['matmul_gflops']:.0f} GFLOP/s", flush=True)

    if "seed" not in args.skip:
        out["seed_1_epoch"] = run_recipe("seed", 1, data, {**common, "epochs": 1})
    for name, seeds in (("fast99", args.fast99_seeds), ("fast995", args.fast995_seeds)):
        if name not in args.skip:
            out[name] = run_recipe(name, seeds, data, common)
    if "inference" not in args.skip:
        out["inference"] = inference_speed(data, args.device)

    rate = out["matmul_gflops"] * 1e9
    print(f"\n{'what':<16}{'test acc (mean ± std)':>24}{'median train s':>16}{'GFLOP/epoch':>13}{'floor s/epoch':>15}")
    for key in ("seed_1_epoch", "fast99", "fast995"):
        if key in out:
            r = out[key]
            a = r["accuracy"]
            floor = r["train_flops_per_epoch"] / rate
            r["floor_seconds_per_epoch"] = floor
            print(
                f"{key:<16}{100 * a['mean']:>14.2f} ± {100 * a['std']:.2f} (n={a['n']})"
                f"{r['train_seconds']['median']:>14.2f}"
                f"{r['train_flops_per_epoch'] / 1e9:>13.0f}{floor:>15.2f}"
            )
    if "inference" in out:
        i = out["inference"]
        print(
            f"inference: {i['images_per_second']:,.0f} images/s (batch 1000), batch-1 latency "
            f"{i['batch1_latency_ms_median']:.2f} ms median"
        )
    write_json(args.out, out)


if __name__ == "__main__":
    main()
