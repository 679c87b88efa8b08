"""Which memory format, optimiser kernels and thread count are fastest on this CPU, for the seed
recipe's step (model1, batch 32) and fast99's (smallcnn, batch 256): the measurements
behind the engine's defaults (channels_last on, ``optimizer_impl=auto`` = fused, all cores).
Then the allocator: the engine's step with malloc as the system sets it and with freed memory kept
(``keep_freed_memory``), each in a fresh process, with its page faults per step.

    python benchmarks/cpu_choices.py --out benchmarks/results/cpu-choices-bf16.json
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_choices.py --precision fp32 \
        --out benchmarks/results/cpu-choices-avx2-fp32.json

Each cell is the median over ``--repeats`` blocks of ``--steps`` optimiser steps (forward, loss,
backward, update) on random data, after a warm-up; the fastest combination per model is starred.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import machine, textbook_step, time_calls, write_json  # noqa: E402
from mnist_cnn.models.registry import create_model  # noqa: E402
from mnist_cnn.training.device import keep_freed_memory, use_bf16  # noqa: E402

CASES = {
    "seed (model1, batch 32)": ("model1", {}, 32),
    "fast99 (smallcnn, batch 256)": ("smallcnn", {"width": 16}, 256),
}
IMPLS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def warmup_steps(steps: int) -> int:
    """Steps run before timing: oneDNN picks and caches its kernels on the first ones."""
    return max(5, steps // 4)


def ms_per_step(name: str, kwargs: dict[str, Any], batch: int, *, channels_last: bool, impl: str, threads: int,
                bf16: bool, steps: int, repeats: int) -> float:  # fmt: skip
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name, **kwargs).to(memory_format=fmt).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **IMPLS[impl])
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        textbook_step(model, opt, x, y, bf16=bf16)

    for _ in range(warmup_steps(steps)):
        step()

    def block() -> None:
        for _ in range(steps):
            step()

    return statistics.median(seconds / steps * 1e3 for seconds in time_calls(block, repeats))


def allocator_probe(case: str, args: argparse.Namespace, bf16: bool) -> None:
    """In this (fresh) process: the allocator in effect, ms and page faults per step; printed as JSON."""
    allocator = keep_freed_memory()  # "system" when MNIST_CNN_MALLOC=system
    name, kwargs, batch = CASES[case]
    kw: dict[str, Any] = {"channels_last": True, "impl": "fused", "threads": torch.get_num_threads(), "bf16": bf16}
    ms_per_step(name, kwargs, batch, **kw, steps=args.steps, repeats=1)  # warm: oneDNN's kernels, the heap
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ms = ms_per_step(name, kwargs, batch, **kw, steps=args.steps, repeats=args.repeats)
    steps = args.steps * args.repeats + warmup_steps(args.steps)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
    print(json.dumps({"allocator": allocator, "ms_per_step": ms, "faults_per_step": faults}))


def allocator_rows(case: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The engine's default step in fresh processes, system malloc then freed memory kept, twice."""
    rows = []
    for mode in ("system", "kept", "system", "kept"):
        env = {k: v for k, v in os.environ.items() if k != "MNIST_CNN_MALLOC"}
        env.update({"MNIST_CNN_MALLOC": "system"} if mode == "system" else {})
        cmd = [sys.executable, __file__, "--allocator-probe", case, "--precision", args.precision]
        cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description="fastest CPU settings for the engine's step, measured")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    ap.add_argument("--allocator-probe", default=None, choices=list(CASES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    bf16 = use_bf16(args.precision, torch.device("cpu"))
    if args.allocator_probe:
        allocator_probe(args.allocator_probe, args, bf16)
        return
    threads = sorted({1, torch.get_num_threads()})
    out: dict[str, Any] = {"machine": machine(), "precision_used": "bf16" if bf16 else "fp32", "cases": {}}
    print(f"machine: {out['machine']['cpu']}  precision {out['precision_used']}")
    for case, (name, kwargs, batch) in CASES.items():
        rows = []
        for cl, impl, th in itertools.product((True, False), IMPLS, threads):
            ms = ms_per_step(name, kwargs, batch, channels_last=cl, impl=impl, threads=th, bf16=bf16,
                             steps=args.steps, repeats=args.repeats)  # fmt: skip
            rows.append({"channels_last": cl, "optimizer_impl": impl, "threads": th, "ms_per_step": ms})
        best = min(rows, key=lambda r: r["ms_per_step"])
        out["cases"][case] = {"rows": rows, "fastest": best}
        print(f"\n{case}")
        for r in rows:
            star = " *" if r is best else ""
            fmt = "channels_last" if r["channels_last"] else "contiguous"
            print(f"  {fmt:<14}{r['optimizer_impl']:<9}{r['threads']} threads  {r['ms_per_step']:7.2f} ms/step{star}")
        alloc = allocator_rows(case, args)
        out["cases"][case]["allocator"] = alloc
        for r in alloc:
            ms, faults = r["ms_per_step"], r["faults_per_step"]
            print(f"  allocator {r['allocator']:<52}{ms:7.2f} ms/step {faults:7.0f} faults/step")
    write_json(args.out, out)


if __name__ == "__main__":
    main()
