"""The engine against a plain PyTorch loop doing the same math, step for step, in one process.

Same model, batch, optimiser, precision and threads; the plain loop is the 15 lines a PyTorch user
writes (data already a float tensor, no metrics, no schedule, no checkpoint). Both run ``--steps``
optimiser steps after ``--warmup`` steps, alternating, ``--repeats`` times; the medians are compared.
On an AVX-512 box, measure the AVX2/fp32 path users' laptops take with:

    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/engine_vs_loop.py --data-dir ../shared/data/mnist --precision fp32

The engine's number is its own ``EpochLoop.train_epoch`` over a ``--steps``-step subset of the
training split, so everything the engine does per step (indexing, normalising, learning-rate
schedule, metrics accumulation, EMA, progress) is inside the timing.

The plain loop is timed twice: in its own fresh process, as a user runs it (``plain_own_process``,
with malloc as the system sets it), and in this process after the engine has told malloc to keep
freed memory (``plain``: the same allocator, so that ratio is the engine's own per-step overhead).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import machine, textbook_step, timed, write_json  # noqa: E402
from mnist_cnn.data.datasets import load_dataset  # noqa: E402
from mnist_cnn.models.registry import create_model  # noqa: E402
from mnist_cnn.training.config import TrainConfig  # noqa: E402
from mnist_cnn.training.device import Dist, keep_freed_memory, setup_threads  # noqa: E402
from mnist_cnn.training.device_data import prepare_data  # noqa: E402
from mnist_cnn.training.engine import new_state  # noqa: E402
from mnist_cnn.training.loop import EpochLoop  # noqa: E402


def plain_loop(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, steps: int, channels_last: bool) -> float:
    """Seconds for ``steps`` steps of the textbook loop (x: normalised float [N,1,28,28])."""
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, **cfg.model_kwargs)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model.train()
    bf16 = cfg.precision == "bf16"

    def run() -> None:
        for i in range(steps):
            xb, yb = x[i * cfg.batch_size : (i + 1) * cfg.batch_size], y[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            textbook_step(model, opt, xb, yb, bf16=bf16)

    return timed(run)[1]


def engine_steps(cfg: TrainConfig, data, steps: int) -> float:
    """Seconds of the engine's own epoch loop over exactly ``steps`` batches."""
    device = torch.device("cpu")
    dd = prepare_data(cfg.merged({"train_subset": steps * cfg.batch_size}), device, data)
    state = new_state(cfg, device, Dist())
    loop = EpochLoop(cfg, dd, state, Dist(), device, None, lambda msg: None)
    return loop.train_epoch(1)["seconds"]


def plain_in_own_process(args: argparse.Namespace) -> float:
    """Seconds per step of the plain loop in a fresh process, as a user runs it (system malloc)."""
    cmd = [sys.executable, __file__, "--plain-only", "--recipe", args.recipe, "--precision", args.precision]
    cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    cmd += [f"--data-dir={args.data_dir}"] if args.data_dir else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--recipe", default="seed", help="recipe whose model/batch/optimiser are compared")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--plain-only", action="store_true", help="time the plain loop alone, print ms/step (JSON)")
    args = ap.parse_args()
    from mnist_cnn.training.recipes import recipe_config

    cfg = recipe_config(args.recipe).merged(
        {"data_dir": args.data_dir, "precision": args.precision, "threads": args.threads, "epochs": 1}
    )
    setup_threads(cfg.threads)
    data = load_dataset(cfg.dataset, cfg.data_dir)
    dd = prepare_data(cfg, torch.device("cpu"), data)
    x = dd.train_x[: (args.steps + args.warmup) * cfg.batch_size].float().div_(255.0).sub_(dd.mean).div_(dd.std)
    y = dd.train_y[: len(x)]
    plain_loop(x, y, cfg, args.warmup, cfg.channels_last)  # warm up oneDNN's kernels and the allocator
    if args.plain_only:
        print(json.dumps(plain_loop(x, y, cfg, args.steps, True) / args.steps))
        return
    allocator = keep_freed_memory()  # what the engine does on CPU (training/device.py)
    engine_steps(cfg, data, args.warmup)
    rows: dict[str, list[float]] = {"plain_own_process": [], "plain": [], "plain_contiguous": [], "engine": []}
    for _ in range(args.repeats):
        rows["plain_own_process"].append(plain_in_own_process(args))
        rows["plain"].append(plain_loop(x, y, cfg, args.steps, True) / args.steps)
        rows["plain_contiguous"].append(plain_loop(x, y, cfg, args.steps, False) / args.steps)
        rows["engine"].append(engine_steps(cfg, data, args.steps) / args.steps)
    med = {k: statistics.median(v) for k, v in rows.items()}
    steps_per_epoch = -(-(len(data.train_labels) - cfg.val_size) // cfg.batch_size)
    for k, v in med.items():
        print(f"{k:<17} {1000 * v:7.2f} ms/step  ({v * steps_per_epoch:5.1f} s per {cfg.recipe} epoch)")
    ratio, ratio_own = med["engine"] / med["plain"], med["engine"] / med["plain_own_process"]
    print(
        f"engine / plain loop in its own process: {ratio_own:.2f}x; in this process (same allocator): {ratio:.2f}x  "
        f"(ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'default')}, {cfg.precision}, "
        f"{torch.get_num_threads()} threads; allocator: {allocator})"
    )
    write_json(
        args.out,
        {
            "machine": machine(),
            "isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "default"),
            "recipe": cfg.recipe,
            "precision": cfg.precision,
            "batch_size": cfg.batch_size,
            "steps": args.steps,
            "repeats": args.repeats,
            "ms_per_step": {k: 1000 * v for k, v in med.items()},
            "runs_ms_per_step": {k: [1000 * s for s in v] for k, v in rows.items()},
            "engine_over_plain": ratio,
            "engine_over_plain_own_process": ratio_own,
            "allocator": allocator,
        },
    )


if __name__ == "__main__":
    main()
