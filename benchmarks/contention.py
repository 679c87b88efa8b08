"""CPU work beside busy processes: whole-process wall time of a 1-epoch ``train`` and a 2,000-PNG
``predict``, with 0, 1 and 2 busy processes on the machine, for the default thread choice and each
fixed count; and, idle, the former default (every core, threads spinning while they wait).

    python benchmarks/contention.py --data-dir ../shared/data/mnist     # ~10 min on 2 cores
    python benchmarks/contention.py --quick                             # a check that it runs (~1 min)

Run it on an otherwise idle machine: the busy processes are the only load it should see. A busy
process is one Python process that spins on single-threaded NumPy matmuls (``--busy loop``: a pure
Python loop), started before the timed command and stopped after it. The fixed counts reach
``train`` as ``--threads N`` and ``predict`` as ``MNIST_CNN_THREADS=N`` (or its ``--threads`` flag
where it has one). Targets (docs): with 1 and 2 busy processes the default within 1.2x of the best
fixed count; idle, within 1.05x of the former default.

``--short-spin`` adds the default choice with threads that spin ~0.1 ms before they sleep
(``GOMP_SPINCOUNT=10000``): the middle way, should passive waiting cost the idle machine too much.

Writes benchmarks/results/contention.json (``--out``), with the CPU (model name, AVX512-BF16).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, write_json  # noqa: E402
from mnist_cnn.cpu import WAIT_VARS, cpu_kind, usable_cpus  # noqa: E402

BUSY_CODE = {
    # one core each: BLAS kept to one thread by the environment the process starts with
    "numpy": "import numpy as np\na = np.random.rand(192, 192)\nprint('ready', flush=True)\n"
    "while True:\n    a = a @ a\n    a /= np.abs(a).max() + 1e-9\n",
    "loop": "print('ready', flush=True)\nn = 0\nwhile True:\n    n += 1\n",
}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# what the timed command must not inherit: the thread and waiting choices are what is measured
CHOICE_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MNIST_CNN_THREADS", *WAIT_VARS)
# the former default: every core, and OpenMP's own waiting (libgomp spins 300,000 times before it
# sleeps; setting it explicitly keeps mnist-cnn from choosing passive waiting)
SPINNING = {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "200"}
SHORT_SPIN = {"GOMP_SPINCOUNT": "10000"}  # --short-spin: the default choice, spinning ~0.1 ms first


def start_busy(kind: str, n: int) -> list[subprocess.Popen[str]]:
    """``n`` processes spinning one core each, each running when this returns."""
    env = {**os.environ, **ONE_THREAD}
    procs = []
    for _ in range(n):
        p = subprocess.Popen([sys.executable, "-c", BUSY_CODE[kind]], stdout=subprocess.PIPE, text=True, env=env)
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def stop_busy(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def write_pngs(data_dir: str | None, folder: Path, n: int) -> None:
    """The first ``n`` MNIST test images as PNG files (what `predict` reads from a folder)."""
    from PIL import Image

    from mnist_cnn.data.datasets import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("mnist", data_dir)
    for i, img in enumerate(ds.test_images[:n]):
        Image.fromarray(img).save(folder / f"{i:05d}-{int(ds.test_labels[i])}.png")


def command(job: str, setting: str, args: argparse.Namespace, work: Path, run: int) -> tuple[list[str], dict[str, str]]:
    """The timed command and its environment for ``job`` (train, predict) with ``setting``
    (default, before, short-spin, or a thread count)."""
    env = {k: v for k, v in os.environ.items() if k not in CHOICE_VARS}
    threads = str(len(usable_cpus())) if setting == "before" else setting if setting.isdigit() else None
    env.update(SPINNING if setting == "before" else SHORT_SPIN if setting == "short-spin" else {})
    base = [sys.executable, "-m", "mnist_cnn"]
    if job == "train":
        cmd = [*base, "train", "--model", "model1", "--epochs", "1", "--out", str(work / f"run{run}"), "--force"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        if args.quick:
            cmd += ["--train-subset", "2000", "--val-size", "500"]
        if threads:
            cmd += ["--threads", threads]
        return cmd, env
    cmd = [*base, "predict", str(work / "pngs"), "--json"]
    if threads and args.predict_has_threads:
        cmd += ["--threads", threads]
    elif threads:
        env["MNIST_CNN_THREADS"] = threads
    return cmd, env


def timed_run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Whole-process wall time (interpreter start to exit) and what the command said about threads."""
    t = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    said = [line for line in out.stderr.splitlines() if re.search(r"\bthreads: ", line)]
    row: dict[str, Any] = {"seconds": seconds, "exit_code": out.returncode, "threads_said": said}
    if out.returncode != 0:
        row["error"] = out.stderr.strip().splitlines()[-1:] or [""]
    if "predict" in cmd:
        row["images"] = sum(1 for line in out.stdout.splitlines() if line.startswith("{"))
    return row


def settings(cores: int) -> list[str]:
    fixed = range(1, cores + 1) if cores <= 4 else sorted({1, 2, cores // 2, cores})
    return ["default", *map(str, fixed)]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per job and busy count: seconds per setting, the best fixed count, and the two target ratios."""
    out: dict[str, Any] = {}
    for job in sorted({r["job"] for r in rows}):
        for busy in sorted({r["busy"] for r in rows if r["job"] == job}):
            got = {
                r["setting"]: r["seconds"] for r in rows if r["job"] == job and r["busy"] == busy and not r["exit_code"]
            }
            fixed = {k: v for k, v in got.items() if k.isdigit()}
            entry: dict[str, Any] = {"seconds": got}
            if fixed:
                best = min(fixed, key=fixed.__getitem__)
                entry["best_fixed"] = best
                for name in ("default", "short-spin"):
                    if name in got:
                        entry[f"{name.replace('-', '_')}_over_best_fixed"] = got[name] / fixed[best]
            for name in ("default", "short-spin"):
                if "before" in got and name in got:
                    entry[f"{name.replace('-', '_')}_over_before"] = got[name] / got["before"]
            out[f"{job}, {busy} busy"] = entry
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("MNIST_CNN_DATA_DIR"), help="MNIST folder (IDX files).")
    ap.add_argument("--out", type=Path, help=f"Results file (default {RESULTS / 'contention.json'}; --quick: none).")
    ap.add_argument("--busy", choices=sorted(BUSY_CODE), default="numpy", help="What a busy process runs.")
    ap.add_argument("--jobs", nargs="+", choices=["train", "predict"], default=["train", "predict"])
    ap.add_argument("--quick", action="store_true", help="Tiny: 2,000 training images, 100 PNGs, 0 and 1 busy.")
    ap.add_argument(
        "--short-spin",
        action="store_true",
        help="Also the default choice with threads spinning ~0.1 ms before they sleep (GOMP_SPINCOUNT=10000).",
    )
    args = ap.parse_args()
    out = args.out or (None if args.quick else RESULTS / "contention.json")  # a check never replaces the results
    cores = len(usable_cpus())
    help_text = subprocess.run([sys.executable, "-m", "mnist_cnn", "predict", "--help"], capture_output=True, text=True)
    args.predict_has_threads = "--threads" in help_text.stdout
    busy_levels = [0, 1] if args.quick else [0, 1, 2]
    chosen = ["default", "1"] if args.quick else settings(cores)
    chosen += ["short-spin"] if args.short_spin else []
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        work = Path(tmp)
        write_pngs(args.data_dir, work / "pngs", 100 if args.quick else 2000)
        plan = [(job, busy, s) for job in args.jobs for busy in busy_levels for s in chosen]
        plan += [(job, 0, "before") for job in args.jobs]  # the former default, idle
        for i, (job, busy, setting) in enumerate(plan):
            procs = start_busy(args.busy, busy)
            try:
                time.sleep(1.0)  # the neighbours are at full speed before the command starts
                cmd, env = command(job, setting, args, work, i)
                row = {"job": job, "busy": busy, "setting": setting, **timed_run(cmd, env)}
            finally:
                stop_busy(procs)
            rows.append(row)
            said = row["threads_said"][0] if row["threads_said"] else "-"
            print(f"{job:<8} busy {busy}  {setting:<8} {row['seconds']:7.1f} s  exit {row['exit_code']}  {said}")
            time.sleep(1.0)
    result = {
        "benchmark": "contention",
        "cpu": cpu_kind(),
        "busy_process": args.busy,
        "quick": args.quick,
        "train": "mnist-cnn train --model model1 --epochs 1"
        + (" --train-subset 2000 --val-size 500" if args.quick else ""),
        "predict": f"mnist-cnn predict FOLDER --json ({100 if args.quick else 2000} MNIST test PNGs)",
        "fixed_threads_via": "--threads" if args.predict_has_threads else "MNIST_CNN_THREADS (predict)",
        "runs": rows,
        "summary": summarise(rows),
    }
    for name, entry in result["summary"].items():
        ratios = {k: round(v, 2) for k, v in entry.items() if "_over_" in k}
        print(f"{name:<18} {ratios}")
    write_json(out, result)


if __name__ == "__main__":
    main()
