"""Train the number reader (:class:`~mnist_cnn.models.reader.Crnn`) with CTC on rendered rows.

Rows of *training* digits train it; rows of the *validation* digits (the default model's held-out
split) pick the epoch and fit the temperature of the string probability. No test digit is used.
Batches are rows of similar width (little padding); each batch is stretched in width by 0.85-1.15x,
and each row slanted, resized in height, shifted, its ink scaled and sometimes blurred and noised
(tensor ops on the whole batch: :func:`augment`).

    python -m mnist_cnn.training.reader --train rows-train.npz --val rows-val.npz --out reader.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mnist_cnn.models.reader import BLANK, STRIDE, Crnn, save_reader
from mnist_cnn.training.device import use_bf16
from mnist_cnn.training.reader_data import RowSet, load_rows


def batches(rows: RowSet, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Index batches of rows of similar width (sorted by width, jittered when ``rng`` is given),
    in random order when ``rng`` is given."""
    w = np.array([c.shape[1] for c in rows.crops], np.float64)
    if rng is not None:
        w = w + rng.uniform(0, 24, len(w))
    order = np.argsort(w, kind="stable")
    out = [order[i : i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(out)
    return out


def collate(rows: RowSet, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images [N, 1, 32, Wmax] 0..1, frames per row [N], targets concatenated, target lengths [N])."""
    crops = [rows.crops[i] for i in idx]
    width = max(c.shape[1] for c in crops)
    x = np.zeros((len(crops), 1, crops[0].shape[0], width), np.float32)
    for k, c in enumerate(crops):
        x[k, 0, :, : c.shape[1]] = c / 255.0
    texts = [rows.texts[i] for i in idx]
    targets = torch.tensor([int(ch) for t in texts for ch in t], dtype=torch.long)
    frames = torch.tensor([c.shape[1] // STRIDE for c in crops], dtype=torch.long)
    return torch.from_numpy(x), frames, targets, torch.tensor([len(t) for t in texts], dtype=torch.long)


def augment(
    x: torch.Tensor, frames: torch.Tensor, g: torch.Generator, edge_pad: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-batch width stretch; per row a slant, a height change and a vertical shift (one affine
    grid), an ink gain, and sometimes blur and sensor-like noise. ``edge_pad`` > 0: 0..``edge_pad``
    blank columns more before and after the rows (a digit at the crop's very end is read with more or
    less blank beside it)."""
    if edge_pad > 0:
        left, right = (int(torch.randint(0, edge_pad + 1, (), generator=g)) for _ in range(2))
        x = F.pad(x, (left, right))
        frames = frames + left // STRIDE
    n, _, h, w = x.shape
    f = 0.85 + 0.3 * float(torch.rand((), generator=g))
    new_w = max(STRIDE, int(round(w * f / STRIDE)) * STRIDE)
    x = F.interpolate(x, size=(h, new_w), mode="bilinear", align_corners=False)
    frames = torch.clamp((frames.float() * f).round().long(), 1, new_w // STRIDE)
    x = _warp(x, g)
    if float(torch.rand((), generator=g)) < 0.25:  # defocus or motion: a 3-tap blur along x or y
        k = torch.tensor([0.25, 0.5, 0.25]).view(1, 1, 1, 3)
        k = k if float(torch.rand((), generator=g)) < 0.5 else k.transpose(2, 3)
        x = F.conv2d(x, k, padding=(k.shape[2] // 2, k.shape[3] // 2))
    gain = 0.6 + 0.4 * torch.rand((n, 1, 1, 1), generator=g)
    noise = 0.05 * torch.rand((n, 1, 1, 1), generator=g) * torch.randn(x.shape, generator=g)
    return (x * gain + noise).clamp(0, 1), frames


def _warp(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Per row: slant of -0.3..0.3 px per px of height, ink height 0.88-1.1x, shift of up to 2 px.
    The grid maps each output pixel to where it is sampled: x_in = x + slant * y (pixels), so in
    normalised coordinates the slant is scaled by h / w; the height change is about the crop's middle."""
    n, _, h, w = x.shape
    slant = (torch.rand(n, generator=g) - 0.5) * 0.6
    scale = 1 / (0.88 + 0.22 * torch.rand(n, generator=g))
    shift = (torch.rand(n, generator=g) - 0.5) * 4 / (h / 2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1.0
    theta[:, 0, 1] = slant * h / w
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def ctc(
    model: Crnn, x: torch.Tensor, frames: torch.Tensor, targets: torch.Tensor, lengths: torch.Tensor, bf16: bool = False
) -> torch.Tensor:
    logp = model(x, bf16)  # [T, N, 11]
    frames = torch.clamp(frames, max=logp.shape[0])
    return F.ctc_loss(logp, targets, frames, lengths, blank=BLANK, reduction="mean", zero_infinity=True)


def greedy(logp: torch.Tensor, frames: torch.Tensor) -> list[str]:
    """Best-path decoding of [T, N, 11] log-probabilities: repeats collapsed, blanks dropped."""
    best = logp.argmax(-1).T.numpy()  # [N, T]
    out = []
    for row, n in zip(best, frames.tolist(), strict=True):
        row = row[:n]
        keep = (row != BLANK) & np.concatenate([[True], row[1:] != row[:-1]])
        out.append("".join(str(v) for v in row[keep]))
    return out


def _epoch_rows(rows: RowSet, extra: RowSet | None, n: int, epoch: int) -> RowSet:
    """``rows`` plus epoch ``epoch``'s slice of ``n`` rows of ``extra`` (cycling through it)."""
    if extra is None or n <= 0 or not extra.texts:
        return rows
    n = min(n, len(extra.texts))
    start = (epoch * n) % len(extra.texts)
    idx = [(start + k) % len(extra.texts) for k in range(n)]
    return RowSet(
        rows.crops + [extra.crops[i] for i in idx],
        rows.texts + [extra.texts[i] for i in idx],
        rows.conditions + [extra.conditions[i] for i in idx],
    )


@torch.no_grad()
def evaluate(model: Crnn, rows: RowSet, size: int = 256) -> tuple[float, list[str]]:
    """Exact-match accuracy (greedy) and the strings read."""
    model.eval()
    read = [""] * len(rows.texts)
    for idx in batches(rows, size, None):
        x, frames, _, _ = collate(rows, idx)
        for i, s in zip(idx, greedy(model(x), frames), strict=True):
            read[i] = s
    acc = float(np.mean([a == b for a, b in zip(read, rows.texts, strict=True)]))
    return acc, read


@torch.no_grad()
def fit_temperature(model: Crnn, rows: RowSet, size: int = 256) -> dict[str, float]:
    """The temperature minimising the CTC negative log-likelihood of the true strings (validation)."""
    model.eval()
    parts = []
    for idx in batches(rows, size, None):
        x, frames, targets, lengths = collate(rows, idx)
        logp = model(x)
        parts.append((logp, torch.clamp(frames, max=logp.shape[0]), targets, lengths))

    def nll(t: float) -> float:
        total = 0.0
        for logp, frames, targets, lengths in parts:
            lp = (logp / t).log_softmax(-1)
            total += float(F.ctc_loss(lp, targets, frames, lengths, blank=BLANK, reduction="sum", zero_infinity=True))
        return total / len(rows.texts)

    grid = np.exp(np.linspace(np.log(0.5), np.log(4.0), 43))
    values = [nll(float(t)) for t in grid]
    best = int(np.argmin(values))
    return {"temperature": float(grid[best]), "nll_before": nll(1.0), "nll_after": values[best]}


def train(
    train_rows: RowSet,
    val_rows: RowSet,
    epochs: int = 12,
    batch: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    log: Any = print,
    extra: RowSet | None = None,
    extra_per_epoch: int = 0,
    model: Crnn | None = None,
    edge_pad: int = 0,
) -> tuple[Crnn, dict[str, Any]]:
    """Train with AdamW and a one-cycle schedule; the epoch with the best validation exact match is kept.
    Each epoch also takes the next ``extra_per_epoch`` rows of ``extra`` (composed rows, cycled).
    ``model``: go on training this reader (a second, shorter cycle) instead of a new one."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    model = Crnn() if model is None else model
    bf16 = use_bf16("auto", torch.device("cpu"))
    log(f"bf16 autocast for the CNN: {bf16}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = len(train_rows.texts) + (min(extra_per_epoch, len(extra.texts)) if extra else 0)
    steps = epochs * math.ceil(per_epoch / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    best: tuple[float, dict[str, torch.Tensor] | None, int] = (-1.0, None, -1)
    history = []
    for epoch in range(epochs):
        model.train()
        t0, losses = time.perf_counter(), []
        rows = _epoch_rows(train_rows, extra, extra_per_epoch, epoch)
        for idx in batches(rows, batch, rng):
            x, frames, targets, lengths = collate(rows, idx)
            x, frames = augment(x, frames, g, edge_pad)
            loss = ctc(model, x.contiguous(memory_format=torch.channels_last), frames, targets, lengths, bf16)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        acc, _ = evaluate(model, val_rows)
        history.append(
            {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_exact": acc, "seconds": time.perf_counter() - t0}
        )
        log(json.dumps(history[-1]), flush=True)
        if acc > best[0]:
            best = (acc, {k: v.clone() for k, v in model.state_dict().items()}, epoch + 1)
    assert best[1] is not None
    model.load_state_dict(best[1])
    return model.eval(), {"history": history, "best_epoch": best[2], "val_exact": best[0]}


def fit_platt(probabilities: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """End-to-end calibration of the string probability on validation *photos* (row finding
    included, so a row that lost a digit counts as the wrong answer it gives): the logistic
    regression of correctness on logit(p), ``p' = sigmoid(a * logit(p) + b)``, with its ECE before
    and after (15 bins)."""
    from sklearn.linear_model import LogisticRegression

    from mnist_cnn.evaluation.calibration import confidence_bins

    q = np.clip(probabilities, 1e-6, 1 - 1e-6)
    z = np.log(q / (1 - q))[:, None]
    fit = LogisticRegression(C=100.0).fit(z, correct.astype(int))
    a, b = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    after = 1 / (1 + np.exp(-(a * z[:, 0] + b)))
    before, now = confidence_bins(q, correct).ece, confidence_bins(after, correct).ece
    return {"platt": [a, b], "ece_before": before, "ece_after": now, "photos": len(q)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="+", required=True, help="row sets (.npz) of training digits")
    ap.add_argument("--val", required=True, help="row set (.npz) of validation digits")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--provenance", default="{}", help="JSON object stored in the file's metadata")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    train_rows = RowSet()
    for path in a.train:
        train_rows.extend(load_rows(path))
    val_rows = load_rows(a.val)
    print(
        f"rows: {len(train_rows.texts)} training ({train_rows.missed} pages missed), {len(val_rows.texts)} validation"
    )
    model, info = train(train_rows, val_rows, a.epochs, a.batch, a.lr, a.seed)
    cal = fit_temperature(model, val_rows)
    print(json.dumps(cal))
    meta = {
        "temperature": cal["temperature"],
        "calibration": {**cal, "fitted_on": "validation rows"},
        "training": {
            **info,
            "rows": len(train_rows.texts),
            "epochs": a.epochs,
            "batch": a.batch,
            "lr": a.lr,
            "seed": a.seed,
        },
        "provenance": json.loads(a.provenance),
    }
    save_reader(a.out, model, meta)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
