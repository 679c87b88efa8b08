"""The number reader on photographed numbers: MNIST digits written as numbers of 2-8 digits on a page
(``mnist_cnn.synth.numbers.render_number``, every condition of ``NUMBER_CONDITIONS``), read back by
``mnist_cnn.inference.reader.NumberReader`` exactly as a user's photo is (decode, find the rows, read).

Tune with the validation digits and ``--seed 1``; report with the test digits and ``--seed 2``:

    python benchmarks/number_reading.py --split val --seed 1 --data-dir /work/shared/data/mnist --n 200
    python benchmarks/number_reading.py --seed 2 --data-dir /work/shared/data/mnist --n 200 --big \\
        --out benchmarks/results/numbers.json --examples docs/images/numbers-examples.png

(The file is not called ``numbers.py``: run as a script its folder comes first on ``sys.path``, and a
``benchmarks/numbers.py`` would shadow the standard library's ``numbers``, which NumPy imports; every
benchmark script would then fail to start.)

**The numbers.** Per condition, ``--n`` numbers, their lengths drawn uniformly from 2..8 and their digits
drawn at random (with replacement) from the split: the MNIST test images (``test``) or the validation
digits no model trained on (``val``: ``train_val_split(train_labels, 5000, 0)``). Leading zeros are kept.
Digits and rendering are seeded by ``(--seed, the condition's index)``, so runs are reproducible and
each condition draws its own numbers whichever ``--conditions`` are chosen.

**Which answer is judged.** A photo holds one number. When the reader returns several rows, the row
whose box overlaps the true digits' ink boxes most (summed intersection area) is the answer; the other
rows are *extra rows*: they do not make the answer wrong, but they are counted (``extra_rows``) and
``exact_strict`` counts a number right only when the answer is right *and* it came back alone (what an
app showing every row would get right). A photo where no digit was found (``ImageError``) is wrong with
probability 0 and no digits right.

**Scores, failure kinds, calibration**: :mod:`number_scoring`.

**Speed.** Seconds per photo of ``NumberReader.read`` on the JPEG bytes (decode, find the rows, read
them), on one thread (``torch.set_num_threads(1)``); the photos are rendered before the timed loop. With
``--big``, also a 12-megapixel phone photo of a number (rendered with digits a fifth of the photo's
height, ~600 px, scaled to cover 4000x3000 and cropped around the number, JPEG quality 90), read
``--big-repeats`` times after one warm-up: p50/p95, decode included. ``--workers N`` reads the conditions
in N processes (faster, but then the photos' timings compete for the cores: keep 1 for the speed figures).

The targets (the issue's) are printed as met/missed beside the figures; the JSON holds every figure, the
command line, the reader's sha256 and the CPU.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, time_calls  # noqa: E402
from number_scoring import KINDS, TARGETS, classify, judge, summarise  # noqa: E402

LENGTHS = (2, 8)  # number lengths, both included
TOUCHING = ("touching", "overlapping")  # the conditions pooled into the "touching" figure
BIG_SIZE = (4000, 3000)
BIG_CONDITION = "tight"  # the 12 MP photo: an everyday number, nothing that degrades it
EXAMPLES = 3  # photos per condition in the --examples figure
ISA = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def pick_row(rows: list[Any], boxes: list[Any]) -> int:
    """The index of the row (``bbox`` l, t, r, b) whose box overlaps the true digits' boxes most
    (summed intersection area; the first, top, row on a tie)."""

    def overlap(r: Any) -> int:
        x0, y0, x1, y1 = r.bbox
        return sum(max(0, min(x1, b[2]) - max(x0, b[0])) * max(0, min(y1, b[3]) - max(y0, b[1])) for b in boxes)

    scores = [overlap(r) for r in rows]
    return int(np.argmax(scores))


# --------------------------------------------------------------------------- the digits, rendering, reading


def split_digits(data_dir: str | None, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's digits: MNIST test images, or the validation digits (val_size 5000, seed 0)."""
    from mnist_cnn.data.datasets import load_dataset, train_val_split

    ds = load_dataset("mnist", data_dir)
    if split == "test":
        return ds.test_images, ds.test_labels
    _, va = train_val_split(ds.train_labels, 5000, 0)
    return ds.train_images[va], ds.train_labels[va]


def condition_index(cond: str) -> int:
    from mnist_cnn.synth.numbers import NUMBER_CONDITIONS

    return NUMBER_CONDITIONS.index(cond)


def render_numbers(images: np.ndarray, labels: np.ndarray, cond: str, n: int, seed: int) -> list[tuple[bytes, dict]]:
    """``n`` numbers of ``cond``: lengths uniform in LENGTHS, digits drawn from ``images``; seeded."""
    from mnist_cnn.synth.numbers import render_number

    k = condition_index(cond)
    pick = np.random.default_rng([seed, k, 0])  # which digits
    draw = np.random.default_rng([seed, k, 1])  # how they are drawn
    out = []
    for _ in range(n):
        idx = pick.integers(0, len(images), int(pick.integers(LENGTHS[0], LENGTHS[1] + 1)))
        out.append(render_number(images[idx], cond, draw, labels[idx]))
    return out


def read_one(reader: Any, data: bytes, info: dict, min_confidence: float) -> tuple[dict[str, Any], Any]:
    """Read one photo (timed): its record, and the reading (None when no digit was found)."""
    from mnist_cnn.errors import ImageError

    t = time.perf_counter()
    try:
        reading = reader.read(data, min_confidence)
    except ImageError:
        reading = None
    seconds = time.perf_counter() - t
    true, boxes = info["text"], info["boxes"]
    rec: dict[str, Any] = {
        "true": true,
        "read": None,
        "probability": 0.0,
        "unsure": True,
        "reason": "no digit",
        "rows": 0,
        "seconds": seconds,
    }
    if reading is not None and reading.rows:
        row = reading.rows[pick_row(reading.rows, boxes)]
        rec.update(
            read=row.number,
            probability=float(row.probability),
            unsure=bool(row.unsure),
            reason=row.reason,
            rows=len(reading.rows),
        )
    rec.update(classify(true, rec["read"], boxes))
    return rec, reading


_STATE: dict[str, Any] = {}  # per process: the reader and the split's digits


def _init(reader_path: str, data_dir: str | None, split: str) -> None:
    import torch

    from mnist_cnn.inference.reader import NumberReader

    torch.set_num_threads(1)
    _STATE["reader"] = NumberReader(reader_path)
    _STATE["digits"] = split_digits(data_dir, split)


def run_condition(cond: str, n: int, seed: int, min_confidence: float, keep: int) -> dict[str, Any]:
    """Render ``cond``'s numbers up front, then read each (timed); the records and ``keep`` examples."""
    images, labels = _STATE["digits"]
    photos = render_numbers(images, labels, cond, n, seed)
    records, examples = [], []
    for data, info in photos:
        rec, reading = read_one(_STATE["reader"], data, info, min_confidence)
        rec["condition"] = cond
        records.append(rec)
        if len(examples) < keep:
            examples.append(
                {
                    "data": data,
                    "boxes": info["boxes"],
                    "record": rec,
                    "rows": [] if reading is None else [r.to_dict() for r in reading.rows],
                }
            )
    return {"condition": cond, "records": records, "examples": examples}


# --------------------------------------------------------------------------- the 12-megapixel photo


def big_photo(
    images: np.ndarray, labels: np.ndarray, seed: int, size: tuple[int, int] = BIG_SIZE
) -> tuple[bytes, dict]:
    """A phone photo of ``size`` (w, h) of a number: rendered with digits a fifth of the height tall,
    scaled to cover the photo, cropped around the number, JPEG quality 90. Returns (JPEG, info)."""
    from mnist_cnn.synth.numbers import render_number

    w, h = size
    height = max(20, round(h / 5))
    rng = np.random.default_rng([seed, 1000])
    for length in (4, 4, 3, 3, 2, 2):
        idx = rng.integers(0, len(images), length)
        data, info = render_number(images[idx], BIG_CONDITION, rng, labels[idx], height=(height, height))
        im = Image.open(io.BytesIO(data)).convert("RGB")
        s = max(w / im.width, h / im.height)
        boxes = [[v * s for v in b] for b in info["boxes"]]
        cx = (min(b[0] for b in boxes) + max(b[2] for b in boxes)) / 2
        cy = (min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2
        big = (max(w, round(im.width * s)), max(h, round(im.height * s)))
        x0 = int(min(max(0, cx - w / 2), big[0] - w))
        y0 = int(min(max(0, cy - h / 2), big[1] - h))
        boxes = [[int(b[0] - x0), int(b[1] - y0), int(np.ceil(b[2] - x0)), int(np.ceil(b[3] - y0))] for b in boxes]
        if all(b[0] >= 0 and b[1] >= 0 and b[2] <= w and b[3] <= h for b in boxes):
            photo = im.resize(big, Image.Resampling.BICUBIC).crop((x0, y0, x0 + w, y0 + h))
            buf = io.BytesIO()
            photo.save(buf, format="JPEG", quality=90)
            return buf.getvalue(), {"text": info["text"], "boxes": boxes, "digit_height_px": round(height * s)}
    raise RuntimeError(f"could not fit a number in a {w}x{h} photo")  # not reached for 4:3 photos


def time_big(
    reader: Any,
    images: np.ndarray,
    labels: np.ndarray,
    seed: int,
    size: tuple[int, int],
    repeats: int,
    min_confidence: float,
) -> dict[str, Any]:
    data, info = big_photo(images, labels, seed, size)
    rec, _ = read_one(reader, data, info, min_confidence)  # also the warm-up
    times = time_calls(lambda: read_one(reader, data, info, min_confidence), repeats)
    return {
        "size": list(size),
        "megapixels": size[0] * size[1] / 1e6,
        "jpeg_bytes": len(data),
        "digit_height_px": info["digit_height_px"],
        "true": info["text"],
        "read": rec["read"],
        "right": rec["kind"] is None,
        "repeats": repeats,
        "p50_s": statistics.median(times),
        "p95_s": float(np.percentile(times, 95)),
        "min_s": min(times),
        "times_s": times,
    }


# --------------------------------------------------------------------------- output


def example_figure(results: list[dict[str, Any]], path: Path) -> None:
    """One row per condition: a few photos with the true digits' boxes (green), the rows read (blue) and
    the digits read (orange); under each, the true number, what was read and its probability."""
    from mnist_cnn.artifacts.files import atomic_save

    cw, ch, cap, label, pad = 300, 110, 14, 110, 6
    cols = max((len(r["examples"]) for r in results), default=1) or 1
    fig = Image.new("RGB", (label + cols * (cw + pad), len(results) * (ch + cap + pad) + pad), "white")
    draw = ImageDraw.Draw(fig)
    for r_i, res in enumerate(results):
        y = pad + r_i * (ch + cap + pad)
        draw.text((4, y + ch // 2 - 6), res["condition"], fill=(0, 0, 0))
        for c_i, ex in enumerate(res["examples"]):
            im = Image.open(io.BytesIO(ex["data"])).convert("RGB")
            s = min(cw / im.width, ch / im.height)
            d = ImageDraw.Draw(im)
            width = max(1, round(1.5 / s))
            for b in ex["boxes"]:
                d.rectangle(b, outline=(0, 170, 0), width=width)
            for row in ex["rows"]:
                d.rectangle(row["bbox"], outline=(0, 90, 255), width=width)
                for dg in row["digits"]:
                    d.rectangle(dg["bbox"], outline=(255, 140, 0), width=width)
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)
            x = label + c_i * (cw + pad)
            fig.paste(im, (x, y))
            rec = ex["record"]
            read = (
                "no digit"
                if rec["read"] is None
                else f"{rec['read']} ({rec['probability']:.2f}{', unsure' if rec['unsure'] else ''})"
            )
            colour = (0, 120, 0) if rec["kind"] is None else (200, 0, 0)
            draw.text((x, y + ch + 1), f"{rec['true']} -> {read}", fill=colour)
    atomic_save(path, lambda tmp: fig.save(tmp, format="PNG"))
    print(f"wrote {path}")


def _pct(v: float | None, digits: int = 1) -> str:
    return "   -" if v is None else f"{100 * v:.{digits}f}"


def print_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    head = (
        f"{'condition':>13} {'n':>5} {'exact%':>7} {'strict%':>7} {'digit%':>7} "
        + " ".join(f"{k:>8}" for k in KINDS)
        + f" {'xrows':>5} {'ECE':>6} {'acc@.9':>6} {'cov@.9':>6} {'sure%':>6} {'p50 s':>6} {'p95 s':>6}"
    )
    print(head)
    print("-" * len(head))
    for name, s in rows:
        if not s.get("n"):
            continue
        c = s["calibration"]
        print(
            f"{name:>13} {s['n']:>5} {_pct(s['exact']):>7} {_pct(s['exact_strict']):>7} {_pct(s['digits'], 2):>7} "
            + " ".join(f"{s['failures'][k]:>8}" for k in KINDS)
            + f" {s['extra_rows']:>5} {c['ece']:>6.3f} {_pct(c['accuracy_at_90']):>6} {_pct(c['coverage_at_90']):>6}"
            f" {_pct(c['accuracy_not_unsure']):>6} {s['speed']['median_s']:>6.3f} {s['speed']['p95_s']:>6.3f}"
        )


def cpu_flags() -> list[str]:
    """The vector extensions (of ISA) the CPU has: which kernels the runtimes use."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in ISA if f in flags]
    except OSError:
        pass
    return []


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from mnist_cnn.synth.numbers import NUMBER_CONDITIONS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reader", type=Path, help="reader .safetensors (default: the bundled one)")
    ap.add_argument("--data-dir", help="folder with the MNIST IDX files (default: as mnist-cnn finds them)")
    ap.add_argument(
        "--split",
        choices=["test", "val"],
        default="test",
        help="test digits (for reporting) or the validation digits (val_size 5000, seed 0: for tuning)",
    )
    ap.add_argument("--seed", type=int, default=2, help="rendering seed: tune on 1 (with --split val), report on 2")
    ap.add_argument("--n", type=int, default=200, help="numbers per condition (0: only --big)")
    ap.add_argument("--conditions", nargs="+", default=NUMBER_CONDITIONS, choices=NUMBER_CONDITIONS)
    ap.add_argument("--min-confidence", type=float, default=0.5, help="below it an answer is marked unsure")
    ap.add_argument("--out", type=Path, default=RESULTS / "numbers.json", help="the JSON results")
    ap.add_argument("--examples", type=Path, help="write a PNG of a few photos per condition, boxes and readings drawn")
    ap.add_argument("--big", action="store_true", help="also time reading a 12-megapixel photo of a number")
    ap.add_argument("--big-size", type=_size, default=BIG_SIZE, help="the big photo's WxH (default 4000x3000)")
    ap.add_argument("--big-repeats", type=int, default=15, help="timed reads of the big photo")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes reading conditions at once (default 1: timings need the core to themselves)",
    )
    args = ap.parse_args(argv)

    import torch

    from mnist_cnn.artifacts.files import atomic_write_json, sha256_file
    from mnist_cnn.cpu import cpu_kind
    from mnist_cnn.inference.reader import DEFAULT_READER

    torch.set_num_threads(1)
    reader_path = args.reader or DEFAULT_READER
    if not Path(reader_path).is_file():
        raise SystemExit(f"{reader_path}: no reader file; train one or pass --reader FILE.safetensors")
    started = time.perf_counter()
    _init(str(reader_path), args.data_dir, args.split)
    reader = _STATE["reader"]
    keep = EXAMPLES if args.examples else 0
    conds = list(dict.fromkeys(args.conditions)) if args.n > 0 else []
    print(
        f"reader {reader_path} ({len(reader.members)} member(s), temperature "
        f"{', '.join(f'{t:g}' for _, t in reader.members)}); {args.split} digits, seed {args.seed}, "
        f"{args.n} numbers of {LENGTHS[0]}-{LENGTHS[1]} digits per condition, {len(conds)} conditions, "
        f"{args.workers} worker(s), one thread each",
        flush=True,
    )
    if args.workers > 1 and len(conds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(
            args.workers,
            mp.get_context("spawn"),
            initializer=_init,
            initargs=(str(reader_path), args.data_dir, args.split),
        ) as pool:
            futures = [pool.submit(run_condition, c, args.n, args.seed, args.min_confidence, keep) for c in conds]
            results = [f.result() for f in futures]
    else:
        results = []
        for c in conds:
            results.append(run_condition(c, args.n, args.seed, args.min_confidence, keep))
            s = summarise(results[-1]["records"])
            print(f"  {c}: {_pct(s['exact'])}% exact, {_pct(s['digits'], 2)}% digits", flush=True)

    everything = [r for res in results for r in res["records"]]
    per_cond = {res["condition"]: summarise(res["records"]) for res in results}
    combined = summarise(everything)
    touch = summarise([r for r in everything if r["condition"] in TOUCHING])
    table = [(c, s) for c, s in per_cond.items()] + [("touching*", touch), ("combined", combined)]
    if everything:
        print()
        print_table(table)
        print(
            "touching*: the touching and overlapping conditions pooled; strict: right and no extra row; "
            "xrows: photos with rows beyond the answer's; acc@.9/cov@.9: accuracy/coverage at probability "
            ">= 0.9; sure%: accuracy of answers not marked unsure"
        )

    big = None
    if args.big:
        images, labels = _STATE["digits"]
        big = time_big(reader, images, labels, args.seed, args.big_size, args.big_repeats, args.min_confidence)
        print(
            f"\n{big['size'][0]}x{big['size'][1]} photo ({big['megapixels']:.1f} MP, {big['jpeg_bytes'] // 1024} KiB, "
            f"digits {big['digit_height_px']} px): p50 {big['p50_s']:.3f} s, p95 {big['p95_s']:.3f} s over "
            f"{big['repeats']} reads; read {big['read']!r} for {big['true']!r}"
        )

    figures: dict[str, float | None] = {
        "exact": combined.get("exact"),
        "digits": combined.get("digits"),
        "touching_exact": touch.get("exact"),
        "min_condition_exact": min((s["exact"] for s in per_cond.values()), default=None),
        "accuracy_at_90": combined["calibration"]["accuracy_at_90"] if everything else None,
        "ece": combined["calibration"]["ece"] if everything else None,
        "big_p50_s": big["p50_s"] if big else None,
    }
    targets = judge(figures)
    below = sorted(c for c, s in per_cond.items() if s["exact"] < 0.93)
    print("\ntargets:")
    for t, (_, key, cmp, goal) in zip(targets, TARGETS):
        v, plain = t["value"], key in ("ece", "big_p50_s")
        shown = "-" if v is None else (f"{v:.3f}" if plain else f"{100 * v:.2f}%")
        goal_shown = f"{cmp} {goal:g}" if plain else f"{cmp} {100 * goal:g}%"
        unmeasured = {
            "big_p50_s": "not measured (pass --big)",
            "touching_exact": "not measured (neither touching nor overlapping was run)",
            "accuracy_at_90": "n/a (no answer at >= 0.9)",
        }.get(key, "n/a")
        if not everything and key != "big_p50_s":
            unmeasured = "not measured (--n 0)"
        verdict = {True: "met", False: "missed", None: unmeasured}[t["met"]]
        extra = f" (below 93%: {', '.join(below)})" if key == "min_condition_exact" and below else ""
        print(f"  {t['target']:>32}: {shown:>8}  target {goal_shown:<9} {verdict}{extra}")

    if args.examples and results:
        example_figure(results, args.examples)
    argv_list = sys.argv[1:] if argv is None else list(argv)
    out = {
        "benchmark": "number_reading",
        "command": ["python", "benchmarks/number_reading.py", *argv_list],
        "reader": {
            "path": str(reader_path),
            "sha256": sha256_file(reader_path),
            "temperature": [t for _, t in reader.members],
            "args": [m.args for m, _ in reader.members],
        },
        "split": args.split,
        "seed": args.seed,
        "n_per_condition": args.n,
        "lengths": list(LENGTHS),
        "min_confidence": args.min_confidence,
        "workers": args.workers,
        "threads": 1,
        "conditions": per_cond,
        "touching": touch,
        "combined": combined,
        "big": big,
        "targets": targets,
        "conditions_below_93": below,
        "wrong": [
            {k: r[k] for k in ("condition", "true", "read", "probability", "unsure", "kind", "rows")}
            for r in everything
            if r["kind"] is not None
        ],
        "machine": {**machine(), "cpu_kind": cpu_kind(), "isa": cpu_flags()},
        "seconds": time.perf_counter() - started,
    }
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
