"""Make the number reader bundled with the package: src/mnist_cnn/pretrained/reader.safetensors.

Renders ``--pages`` numbers of MNIST *training* digits (the default model's training split) and
``--val-pages`` of its *validation* digits through :mod:`mnist_cnn.synth.numbers`, reads them back
into row crops with the row finder (:mod:`mnist_cnn.training.reader_data`), trains the CRNN with CTC
(:mod:`mnist_cnn.training.reader`: the epoch is picked and the temperature fitted on the validation
rows) and writes the file with its provenance in the metadata: the command, seeds, data checksums,
row counts, the training history, the calibration and the commit. No test digit is used. ::

    python tools/make_reader.py --data-dir ../shared/data/mnist            # ~75 min on 2 cores

``--rows DIR`` keeps the rendered row sets (``train-<seed>.npz``, ``val-<seed>.npz``) and reuses them.
``--init FILE[:K] --epochs 6 --lr 1e-3`` goes on training reader K of a file in a second, shorter cycle
(the file's sha256 and that reader's own record are kept under ``training.continued``).
``--combine A B ...`` trains nothing: it puts readers made by this script (or the members of an
ensemble file) into one file (an ensemble: every string found by a member's beam is scored by the
geometric mean of the members' probabilities) and calibrates that string probability end to end on
``--cal-pages`` validation photos, decoded as the file says (``decoding``: the crop also read shifted by
half a strip, each digit checked by the bundled single-digit classifier, both chosen on validation photos;
``--plain``: read once, unchecked).
The bundled reader is made so (three members: rows of seed 21, 16 epochs; rows of seed 31, weights of
seed 1, 14; rows of seed 41, weights of seed 2, 14; the first two were combined first, and that pair
file is what the third joined)::

    python tools/make_reader.py --data-dir ../shared/data/mnist --rows rows --out a.safetensors
    python tools/make_reader.py --data-dir ../shared/data/mnist --rows rows --seed 31 --train-seed 1 \
        --epochs 14 --out b.safetensors
    python tools/make_reader.py --data-dir ../shared/data/mnist --rows rows --seed 41 --train-seed 2 \
        --epochs 14 --out c.safetensors
    python tools/make_reader.py --data-dir ../shared/data/mnist --combine a.safetensors b.safetensors \
        --out ab.safetensors
    python tools/make_reader.py --data-dir ../shared/data/mnist --combine ab.safetensors c.safetensors \
        --out abc.safetensors
    python tools/make_reader.py --data-dir ../shared/data/mnist --combine abc.safetensors

(the last step adds the decoding and recalibrates: it trains nothing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "mnist_cnn" / "pretrained"
VAL_SIZE, SPLIT_SEED = 5000, 0  # the default model's validation split (pretrained/default.json)


def rows_for(which: str, images, labels, pages: int, seed: int, folder: Path | None, workers: int):  # noqa: ANN001, ANN201
    from mnist_cnn.training.reader_data import load_rows, make_rows, save_rows

    path = folder / f"{which}-{seed}-{pages}.npz" if folder else None
    if path is not None and path.exists():
        print(f"{path}: reused", flush=True)
        return load_rows(str(path))
    t0 = time.perf_counter()
    rows = make_rows(images, labels, pages, seed, workers=workers)
    print(
        f"{which}: {pages:,} pages -> {len(rows.texts):,} rows ({rows.missed} pages whose row finder missed "
        f"a digit) in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_rows(str(path), rows)
    return rows


def calibrate_end_to_end(members: list, images, labels, a: argparse.Namespace) -> dict:  # noqa: ANN001
    """Platt scaling of the string probability of ``members`` ((reader, metadata) pairs; one, or an
    ensemble's) on ``--cal-pages`` validation photos, read end to end."""
    from mnist_cnn.inference.reader import NumberReader
    from mnist_cnn.models.reader import save_readers
    from mnist_cnn.training.reader import fit_platt
    from mnist_cnn.training.reader_data import read_pages

    with tempfile.TemporaryDirectory() as tmp:
        save_readers(Path(tmp) / "r.safetensors", members, {"decoding": decoding(a)})
        reader = NumberReader(Path(tmp) / "r.safetensors")
    probs, right = read_pages(reader, images, labels, a.cal_pages, a.seed + 2)
    fit = fit_platt(probs, right)
    print(f"end-to-end calibration on {len(probs):,} photos ({right.mean():.4f} right): {json.dumps(fit)}", flush=True)
    return fit


def initial_reader(spec: str | None):  # noqa: ANN201
    """``--init FILE[:K]``: reader K of FILE (its weights go on training) and what it was: the file's
    sha256, the member and that member's own training record; (None, None) without ``--init``."""
    if spec is None:
        return None, None
    from mnist_cnn.artifacts.files import sha256_file
    from mnist_cnn.errors import CheckpointError
    from mnist_cnn.models.reader import load_readers

    path, _, k = spec.partition(":")
    if k and not k.isdigit():
        raise SystemExit(f"--init {spec}: K must be a member number (FILE:0, FILE:1, ...)")
    try:
        models, meta = load_readers(path)
    except (CheckpointError, OSError) as exc:
        raise SystemExit(f"--init {spec}: {exc}") from None
    member = int(k or 0)
    if member >= len(models):
        raise SystemExit(f"--init {spec}: the file holds {len(models)} reader(s); K must be below that")
    described = meta.get("members", [meta])[member]
    earlier = {
        "file": Path(path).name,
        "sha256": sha256_file(path),
        "member": member,
        "training": described.get("training"),
        "provenance": described.get("provenance"),
    }
    return models[member][0].train(), earlier


def decoding(a: argparse.Namespace) -> dict:
    """The decoding the file is calibrated with and keeps (``NumberReader``'s ``Decoding``)."""
    from mnist_cnn.inference.reader import TUNED, Decoding

    return (Decoding() if a.plain else TUNED).to_meta()


def provenance(a: argparse.Namespace, argv: list[str] | None, commit: str) -> dict:
    import torch

    return {
        "command": "python tools/make_reader.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "commit": commit,
        "digits": f"MNIST training images minus the validation split (val_size {VAL_SIZE}, seed {SPLIT_SEED})",
        "made": dt.date.today().isoformat(),
        "torch": torch.__version__,
    }


def combine(a: argparse.Namespace, argv: list[str] | None, commit: str, images, labels) -> None:  # noqa: ANN001
    """``--combine``: the readers in the given files (single readers, or an ensemble's members, each
    with its own metadata) as one ensemble file, calibrated end to end."""
    from mnist_cnn.models.reader import load_readers, save_readers

    keep = ("temperature", "calibration", "training", "provenance")
    members = []
    for path in a.combine:
        models, meta = load_readers(path)
        described = meta.get("members", [meta])
        members += [(m, {k: d[k] for k in keep if k in d}) for (m, _), d in zip(models, described, strict=True)]
    cal = calibrate_end_to_end(members, images, labels, a)
    meta = {"calibration": cal, "decoding": decoding(a), "provenance": provenance(a, argv, commit)}
    save_readers(a.out, members, meta)
    print(f"wrote {a.out} ({len(members)} readers)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--pages", type=int, default=36_000)
    ap.add_argument("--val-pages", type=int, default=1_600)
    ap.add_argument(
        "--cal-pages", type=int, default=1_500, help="validation photos the string probability is calibrated on"
    )
    ap.add_argument("--seed", type=int, default=21, help="seed of the training rows (validation +1, calibration +2)")
    ap.add_argument("--train-seed", type=int, default=0, help="seed of the weights' initialisation and batch order")
    ap.add_argument("--epochs", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3, help="the one-cycle schedule's peak learning rate")
    ap.add_argument(
        "--init",
        default=None,
        metavar="FILE[:K]",
        help="go on training reader K (default 0) of this file in a second, shorter cycle instead of a new one",
    )
    ap.add_argument("--synth", type=int, default=160_000, help="rows composed at the reader's scale (cycled)")
    ap.add_argument("--synth-per-epoch", type=int, default=30_000)
    ap.add_argument(
        "--bend", type=float, default=0.0, help="composed rows' digits bent elastically, strength 0..BEND (0: not)"
    )
    ap.add_argument(
        "--edge-pad", type=int, default=0, help="0..N blank columns more at the rows' ends in training (0: none)"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", type=Path, default=None, help="folder to keep/reuse the rendered row sets in")
    ap.add_argument("--out", type=Path, default=PACKAGE_DIR / "reader.safetensors")
    ap.add_argument(
        "--plain",
        action="store_true",
        help="read each crop once (no view shifted by half a strip; calibrated so)",
    )
    ap.add_argument("--combine", type=Path, nargs="+", default=None, help="reader files to put in one ensemble file")
    a = ap.parse_args(argv)
    # the commit the rows are rendered and read with (taken now: the tree may move on while it trains)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()

    import torch

    from mnist_cnn.artifacts.files import sha256_file
    from mnist_cnn.data.datasets import load_dataset, resolve_data_dir, train_val_split
    from mnist_cnn.models.reader import save_reader
    from mnist_cnn.training.reader import fit_temperature, train
    from mnist_cnn.training.reader_data import synth_rows

    ds = load_dataset("mnist", a.data_dir)
    tr, va = train_val_split(ds.train_labels, VAL_SIZE, SPLIT_SEED)
    if a.combine:
        combine(a, argv, commit, ds.train_images[va], ds.train_labels[va])
        return
    train_rows = rows_for("train", ds.train_images[tr], ds.train_labels[tr], a.pages, a.seed, a.rows, a.workers)
    val_rows = rows_for("val", ds.train_images[va], ds.train_labels[va], a.val_pages, a.seed + 1, a.rows, a.workers)
    t0 = time.perf_counter()
    extra = synth_rows(ds.train_images[tr], ds.train_labels[tr], a.synth, a.seed + 3, a.bend)
    print(f"composed {len(extra.texts):,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
    torch.set_num_threads(max(1, a.workers))
    start, earlier = initial_reader(a.init)
    model, info = train(
        train_rows,
        val_rows,
        epochs=a.epochs,
        lr=a.lr,
        seed=a.train_seed,
        extra=extra,
        extra_per_epoch=a.synth_per_epoch,
        model=start,
        edge_pad=a.edge_pad,
    )
    cal = fit_temperature(model, val_rows)
    print(json.dumps(cal), flush=True)
    cal.update(
        calibrate_end_to_end(
            [(model, {"temperature": cal["temperature"]})], ds.train_images[va], ds.train_labels[va], a
        )
    )
    folder = resolve_data_dir("mnist", a.data_dir)
    checksums = {f.name: sha256_file(f) for f in sorted(folder.glob("train-*")) if f.is_file()}
    meta = {
        "temperature": cal["temperature"],
        "calibration": {**cal, "fitted_on": f"{len(val_rows.texts):,} validation rows"},
        "training": {
            **info,
            "rows": len(train_rows.texts),
            "pages": a.pages,
            "missed_pages": train_rows.missed,
            "val_rows": len(val_rows.texts),
            "seed": a.seed,
            "train_seed": a.train_seed,
            "epochs": a.epochs,
            "composed_rows": len(extra.texts),
            "composed_per_epoch": a.synth_per_epoch,
            **({"composed_bend": a.bend} if a.bend else {}),
            **({"edge_pad": a.edge_pad} if a.edge_pad else {}),
            "lr": a.lr,
            **({"continued": earlier} if earlier else {}),
        },
        "provenance": {**provenance(a, argv, commit), "data_sha256": checksums},
        "decoding": decoding(a),
    }
    save_reader(a.out, model, meta)
    print(f"wrote {a.out} (validation exact match {info['val_exact']:.4f}, epoch {info['best_epoch']})")


if __name__ == "__main__":
    main()
