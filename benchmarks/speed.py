"""Speed benchmark, in one process and one run so the ratios hold. Every figure is printed next to
what a user would otherwise run on the same machine, measured in the same run:

- the seed recipe (model1, batch 32, all 60,000 images) for one epoch: the engine against a plain
  15-line PyTorch loop doing the same math (same model, batch, optimiser, precision, channels_last)
  and against the seed's own Keras code (``benchmarks/keras_reference.py``, its own virtualenv,
  run as a subprocess after the torch figures so the two never share the CPU);
- ``fast99`` over 10 seeds and ``fast995`` over 5 (test accuracy mean ± std, median train s; a recipe
  whose accuracy is test-time-augmented has its whole TTA test pass added to its seconds) against
  the published 1-epoch small-CNN recipe (anchors.md: conv5 24, conv3 32, FC 256, batch 256, Adam
  0.01 betas (0.7, 0.9), one-cycle), run here as published (fp32, contiguous, no tuning) and tuned
  (channels_last and the engine's precision), on the same 55,000-image training split;
- the data stage (read + check the IDX files, split, normalise, to the device) in this process;
- inference throughput on the 10k test set (batch 1000) and batch-1 latency;
- the FLOP floor: FLOPs per training epoch / this machine's measured dense matmul rate.

    python benchmarks/speed.py --data-dir ../shared/data/mnist --keras-python .venv-keras/bin/python \
        --out benchmarks/results/speed-cpu-bf16.json
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/speed.py --data-dir ../shared/data/mnist --precision fp32 \
        --keras-python .venv-keras/bin/python --out benchmarks/results/speed-cpu-avx2-fp32.json

The second line is the fp32/AVX2 path most laptops take, on a box with AVX-512. Recipes were
selected on the validation split; the test accuracy here is measured once per seed, never used to
choose anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    machine,
    matmul_gflops,
    mnist_tensor,
    summary,
    textbook_step,
    time_calls,
    timed,
    train_flops_per_image,
    write_json,
)

HERE = Path(__file__).resolve().parent
VAL_SIZE = 5000  # the engine's default validation split: the reference trains on the same 55k images


def run_recipe(name: str, seeds: int, data: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    from mnist_cnn.models.registry import create_model
    from mnist_cnn.training.engine import train
    from mnist_cnn.training.recipes import recipe_config

    accs, secs, results = [], [], []
    for seed in range(seeds):
        cfg = recipe_config(name).merged({**overrides, "seed": seed})
        res = train(cfg, None, quiet=True, data=data)
        accs.append(res.metrics["test_accuracy"])
        # a recipe that reports test-time-augmented accuracy pays for it: its whole TTA test pass counts
        tta_cost = res.metrics.get("test_eval_seconds", 0.0) if res.metrics.get("tta") else 0.0
        secs.append(res.metrics["train_seconds"] + tta_cost)
        results.append(
            {
                k: res.metrics.get(k)
                for k in (
                    "seed",
                    "test_accuracy",
                    "val_accuracy",
                    "train_seconds",
                    "tta",
                    "test_eval_seconds",
                    "data_seconds",
                    "compile_seconds",
                    "precision_used",
                )
            }
        )
        warm = res.metrics.get("compile_seconds") or 0.0
        print(
            f"  {name} seed {seed}: test {100 * accs[-1]:.2f}%  train {secs[-1]:.2f}s"
            + (f" (incl. the TTA test pass, {tta_cost:.2f}s)" if tta_cost else "")
            + (f"  (compile warm-up {warm:.1f}s, not counted)" if warm else ""),
            flush=True,
        )
    cfg = recipe_config(name).merged(overrides)
    flops_img = train_flops_per_image(create_model(cfg.model, **cfg.model_kwargs))
    n_train = len(data.train_labels) - cfg.val_size
    return {
        "recipe": name,
        "model": cfg.model,
        "model_kwargs": cfg.model_kwargs,
        "epochs": cfg.epochs,
        "tta": cfg.tta,  # if true, train_seconds includes each seed's TTA test pass
        "precision_used": results[0]["precision_used"],
        "seeds": results,
        "accuracy": summary(accs),
        "train_seconds": summary(secs),
        "train_flops_per_epoch": flops_img * n_train,
        "train_flops_total": flops_img * n_train * cfg.epochs,
    }


# --------------------------------------------------------------------------- what users run instead


def plain_loop_epoch(data: Any, bf16: bool, device: Any, channels_last: bool = True) -> float:
    """Seconds for one epoch of the textbook loop on the seed recipe (model1, Adam 1e-3, batch 32,
    all 60k images as a normalised float tensor; no metrics, no schedule, no checkpoint)."""
    import torch

    from mnist_cnn.models.registry import create_model

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = mnist_tensor(data.train_images, device, fmt)
    y = torch.from_numpy(data.train_labels.copy()).long().to(device)
    torch.manual_seed(0)
    model = create_model("model1").to(device, memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def epoch() -> None:
        for i in range(0, len(x), 32):
            textbook_step(model, opt, x[i : i + 32], y[i : i + 32], bf16=bf16, device_type=device.type)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return timed(epoch)[1]


def reference_net() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(),  # [B,24,12,12]
        nn.Conv2d(24, 32, 3), nn.MaxPool2d(2), nn.ReLU(),  # [B,32,5,5]
        nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10),
    )  # fmt: skip


def reference_recipe(data: Any, seed: int, *, tuned: bool, bf16: bool) -> dict[str, float]:
    """The published 1-epoch small-CNN recipe on the engine's 55k training split (same work as fast99).

    ``tuned=False``: exactly as published (fp32, contiguous tensors). ``tuned=True``: with the two
    things this machine rewards (channels_last, and bf16 autocast where the engine uses it)."""
    import torch

    from mnist_cnn.data.datasets import train_val_split

    tr, _ = train_val_split(data.train_labels, VAL_SIZE, seed)
    fmt = torch.channels_last if tuned else torch.contiguous_format
    x, y = mnist_tensor(data.train_images[tr], fmt=fmt), torch.from_numpy(data.train_labels[tr]).long()
    torch.manual_seed(seed)
    model = reference_net().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
    steps = -(-len(x) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.01, total_steps=steps, cycle_momentum=False)

    def epoch() -> None:
        for i in range(steps):
            textbook_step(model, opt, x[i * 256 : (i + 1) * 256], y[i * 256 : (i + 1) * 256], bf16=tuned and bf16)
            sched.step()

    seconds = timed(epoch)[1]
    model.eval()
    with torch.no_grad():
        acc = (model(mnist_tensor(data.test_images, fmt=fmt)).argmax(1).numpy() == data.test_labels).mean()
    return {"seed": seed, "train_seconds": seconds, "test_accuracy": float(acc)}


def reference_runs(data: Any, seeds: int, *, tuned: bool, bf16: bool) -> dict[str, Any]:
    from common import train_flops_per_image as flops

    runs = [reference_recipe(data, s, tuned=tuned, bf16=bf16) for s in range(seeds)]
    for r in runs:
        print(f"  reference ({'tuned' if tuned else 'as published'}) seed {r['seed']}: "
              f"test {100 * r['test_accuracy']:.2f}%  train {r['train_seconds']:.2f}s", flush=True)  # fmt: skip
    return {
        "recipe": "reference ("
        + ("channels_last" + (", bf16 autocast" if bf16 else "") if tuned else "as published")
        + ")",
        "seeds": runs,
        "accuracy": summary([r["test_accuracy"] for r in runs]),
        "train_seconds": summary([r["train_seconds"] for r in runs]),
        "train_flops_per_epoch": flops(reference_net()) * (len(data.train_labels) - VAL_SIZE),
    }


def keras_epoch(python: str, data_dir: str, epochs: int) -> dict[str, Any]:
    """The seed's Keras model1 for ``epochs`` epochs in its own interpreter (same env, so the same
    ONEDNN_MAX_CPU_ISA); seconds per steady epoch (the first includes graph tracing)."""
    out = Path(os.environ.get("TMPDIR", "/tmp")) / f"keras-reference-{os.getpid()}.json"
    cmd = [python, str(HERE / "keras_reference.py"), "--data-dir", data_dir, "--epochs", str(epochs), "--out", str(out)]
    print("  " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: the Keras reference failed ({python}): {done.stderr.strip().splitlines()[-1:]}")
    run = json.loads(out.read_text())["runs"][0]
    out.unlink()
    print(f"  keras model1: {', '.join(f'{s:.1f}' for s in run['seconds_per_epoch'])} s/epoch, "
          f"test {100 * run['test_accuracy']:.2f}%", flush=True)  # fmt: skip
    return run


def data_stage(data_dir: str | None, device: Any) -> dict[str, float]:
    """Seconds of the engine's data stage for fast99 (read + check, split, normalise, to device)."""
    from mnist_cnn.training.device_data import prepare_data
    from mnist_cnn.training.recipes import recipe_config

    cfg = recipe_config("fast99").merged({"data_dir": data_dir})
    return summary(time_calls(lambda: prepare_data(cfg, device), 3))


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
    bulk = timed(predict_logits, model, x, norm["mean"], norm["std"], batch_size=1000)[1]
    lat = [timed(predict_logits, model, x[i : i + 1], norm["mean"], norm["std"], batch_size=1)[1] for i in range(200)]
    return {
        "model": "fast99",
        "images_per_second": len(x) / bulk,
        "batch1_latency_ms_median": 1e3 * statistics.median(lat),
        "batch1_latency_ms_p99": 1e3 * sorted(lat)[int(0.99 * len(lat)) - 1],
        "threads": torch.get_num_threads(),
    }


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def print_table(out: dict[str, Any]) -> None:
    """Every figure with its ratio to what it is compared with, and to the FLOP floor."""
    rate = out["matmul_gflops"] * 1e9
    ref = out.get("reference", {}).get("train_seconds", {}).get("median")
    ref_tuned = out.get("reference_tuned", {}).get("train_seconds", {}).get("median")
    print(f"\nmachine: {out['machine']['cpu']}, {out['machine']['threads']} threads, precision {out['precision_used']}")
    print(f"{'what':<34}{'test acc':>18}{'s':>8}{'floor s':>9}  ratios")
    for key, r in out.items():
        if not isinstance(r, dict) or "train_seconds" not in r:
            continue
        a, sec = r["accuracy"], r["train_seconds"]["median"]
        floor = r["train_flops_per_epoch"] * r.get("epochs", 1) / rate
        r["floor_seconds"] = floor
        extra = f"floor {sec / floor:.1f}x"
        if key in ("fast99", "fast995"):
            extra += f"; reference as published {ratio(sec, ref)}, tuned {ratio(sec, ref_tuned)}"
        if key == "seed_1_epoch":
            s = out["seed_comparison"]
            extra += f"; plain loop {ratio(sec, s['plain_loop_seconds'])}; Keras {ratio(sec, s.get('keras_seconds'))}"
        acc = f"{100 * a['mean']:.2f}±{100 * a['std']:.2f} (n={a['n']})"
        print(f"{key:<34}{acc:>18}{sec:>8.2f}{floor:>9.2f}  {extra}")
    if "seed_comparison" in out:
        s = out["seed_comparison"]
        print(f"{'plain loop, seed model, 1 epoch':<34}{'':>18}{s['plain_loop_seconds']:>8.2f}")
        if s.get("keras_seconds"):
            print(f"{'Keras, seed model1, steady epoch':<34}{'':>18}{s['keras_seconds']:>8.2f}")
    if "data_stage" in out:
        print(f"data stage (fast99, in process): median {out['data_stage']['median']:.2f} s")
    if "inference" in out:
        i = out["inference"]
        print(f"inference: {i['images_per_second']:,.0f} images/s (batch 1000), batch-1 latency "
              f"{i['batch1_latency_ms_median']:.2f} ms median")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description="mnist-cnn speed benchmark")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--fast99-seeds", type=int, default=10)
    ap.add_argument("--fast995-seeds", type=int, default=5)
    ap.add_argument("--reference-seeds", type=int, default=5)
    ap.add_argument("--keras-python", help="python of a virtualenv with tensorflow-cpu (else no Keras row)")
    ap.add_argument(
        "--keras-epochs",
        type=int,
        default=4,
        help="Keras epochs: the first includes tracing; the median of the rest is compared, so one slow epoch "
        "on a noisy host cannot decide the ratio (2 epochs once gave a 41 s outlier against 19 s)",
    )
    choices = ["seed", "reference", "fast99", "fast995", "inference", "keras"]
    ap.add_argument("--skip", nargs="*", default=[], choices=choices)
    ap.add_argument("--compile", action="store_true", help="torch.compile every model (warm-up timed apart)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from mnist_cnn.data.datasets import load_dataset
    from mnist_cnn.training.device import resolve_device, setup_threads, use_bf16

    device = resolve_device(args.device)
    if device.type == "cpu":
        setup_threads(None)
    bf16 = use_bf16(args.precision, device)
    data, data_load_seconds = timed(load_dataset, "mnist", args.data_dir)
    out: dict[str, Any] = {
        "machine": machine(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "device": str(device),
        "data_load_seconds": data_load_seconds,
        "compile": args.compile,
        "precision": args.precision,
        "precision_used": "bf16" if bf16 else "fp32",
        "matmul_gflops": matmul_gflops(device="cuda" if device.type == "cuda" else "cpu"),
    }
    print(f"machine: {out['machine']}  matmul fp32 {out['matmul_gflops']:.0f} GFLOP/s", flush=True)
    out["data_stage"] = data_stage(args.data_dir, device)
    common = {"data_dir": args.data_dir, "device": args.device, "compile": args.compile, "precision": args.precision}
    if "seed" not in args.skip:
        out["seed_1_epoch"] = run_recipe("seed", 1, data, {**common, "epochs": 1, "val_size": 0})
        out["seed_comparison"] = {"plain_loop_seconds": plain_loop_epoch(data, bf16, device)}
        print(f"  plain loop, seed model: {out['seed_comparison']['plain_loop_seconds']:.2f} s/epoch", flush=True)
    if "reference" not in args.skip and device.type == "cpu":
        out["reference"] = reference_runs(data, args.reference_seeds, tuned=False, bf16=bf16)
        out["reference_tuned"] = reference_runs(data, args.reference_seeds, tuned=True, bf16=bf16)
    for name, seeds in (("fast99", args.fast99_seeds), ("fast995", args.fast995_seeds)):
        if name not in args.skip:
            out[name] = run_recipe(name, seeds, data, common)
    if "inference" not in args.skip:
        out["inference"] = inference_speed(data, args.device)
    if args.keras_python and "keras" not in args.skip and "seed" not in args.skip:
        keras = keras_epoch(args.keras_python, args.data_dir or "", args.keras_epochs)
        out["seed_comparison"].update(keras=keras, keras_seconds=keras["seconds_per_epoch_steady"])
    print_table(out)
    write_json(args.out, out)


if __name__ == "__main__":
    main()
