"""The number reader: a CRNN (Shi et al. 2015) that reads a row of digits without cutting it apart.

Input: a row crop normalised like MNIST (bright ink on black, 0..1), 32 px tall with the ink 24 px
tall (rows 4..27), any width. A small CNN turns each 4-px-wide column strip into a feature vector, a
bidirectional LSTM reads the strips in both directions (so a touching pair is judged with both
neighbours in view), and a linear layer gives, per strip, the log-probabilities of the 10 digits and
of CTC's *blank* (index 10). Decoding (greedy or beam, :mod:`mnist_cnn.inference.reader`) collapses
repeats and drops blanks: ``--7--77-1-`` reads "71".

The file is safetensors with JSON metadata (``kind: "reader"``, the arguments, the temperature);
:func:`load_reader` checks every tensor's name and shape before anything is built from it. A file may
hold several readers (an ensemble, :func:`save_readers`): :func:`load_readers` returns each with its
temperature.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from mnist_cnn.artifacts.files import load_tensors, save_tensors
from mnist_cnn.errors import CheckpointError

HEIGHT = 32  # px: the row crop's height
INK_TOP, INK_HEIGHT = 4, 24  # the ink's box within it
STRIDE = 4  # px of crop width per output strip (frame)
BLANK = 10  # CTC's blank class; 0..9 are the digits
KIND = "reader"


def _block(cin: int, cout: int, pool: tuple[int, int] | None) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(pool))
    return layers


class Crnn(nn.Module):
    """[N, 1, 32, W] -> log-probabilities [W // 4, N, 11] (CTC's time-major layout)."""

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        c = width
        self.args = {"width": width, "hidden": hidden, "dropout": dropout}
        self.cnn = nn.Sequential(
            *_block(1, c, (2, 2)),  # 16 x W/2
            *_block(c, 2 * c, (2, 2)),  # 8 x W/4
            *_block(2 * c, 3 * c, None),
            *_block(3 * c, 3 * c, (2, 1)),  # 4 x W/4
            nn.Conv2d(3 * c, 4 * c, (4, 1), bias=False),  # 1 x W/4: each strip's feature vector
            nn.BatchNorm2d(4 * c),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.rnn = nn.LSTM(4 * c, hidden, bidirectional=True, batch_first=False)
        self.head = nn.Linear(2 * hidden, BLANK + 1)

    def forward(self, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """``bf16``: the CNN under bf16 autocast (training on a CPU with native bf16: 2.5x faster);
        the LSTM, the head and the log-softmax stay float32."""
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            f = self.cnn(x)
        f = f.float().squeeze(2)  # [N, C, T]
        f = f.permute(2, 0, 1)  # [T, N, C]
        h, _ = self.rnn(f)  # [T, N, 2 * hidden]
        return self.head(h).log_softmax(-1)


def create_reader(**args: Any) -> Crnn:
    return Crnn(**args)


def save_reader(path: str | os.PathLike[str], model: Crnn, meta: dict[str, Any]) -> None:
    """Weights + metadata (``kind``, ``args``, whatever ``meta`` adds: temperature, provenance)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_tensors(path, tensors, {**meta, "kind": KIND, "args": model.args})


def save_readers(
    path: str | os.PathLike[str], members: list[tuple[Crnn, dict[str, Any]]], meta: dict[str, Any]
) -> None:
    """Several readers in one file (an ensemble): member ``i``'s tensors are named ``m{i}.<name>``
    and its metadata (``args``, ``temperature``, its training) is ``meta["members"][i]``."""
    tensors: dict[str, torch.Tensor] = {}
    described = []
    for i, (model, member_meta) in enumerate(members):
        tensors.update({f"m{i}.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()})
        described.append({**member_meta, "args": model.args})
    save_tensors(path, tensors, {**meta, "kind": KIND, "members": described})


def load_reader(path: str | os.PathLike[str]) -> tuple[Crnn, dict[str, Any]]:
    """The reader in ``path`` in eval mode, and its metadata; a file that is not a reader of this
    shape is refused in one line (:class:`~mnist_cnn.errors.CheckpointError`)."""
    members, meta = load_readers(path)
    if len(members) != 1:
        raise CheckpointError(f"{path}: holds {len(members)} readers (an ensemble); load it with load_readers")
    return members[0][0], meta


def load_readers(path: str | os.PathLike[str]) -> tuple[list[tuple[Crnn, float]], dict[str, Any]]:
    """Every reader in ``path`` (one, or an ensemble's members) with its temperature, and the file's
    metadata; anything that does not fit is refused in one line."""
    tensors, meta = load_tensors(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path}: not a number reader (metadata 'kind' must be {KIND!r} with 'args')")
    if "members" not in meta:
        return [_build(path, meta, tensors, "")], meta
    described = meta["members"]
    if not isinstance(described, list) or not described or not all(isinstance(m, dict) for m in described):
        raise CheckpointError(f"{path}: metadata 'members' must be a non-empty list of reader descriptions")
    prefixes = [f"m{i}." for i in range(len(described))]
    if any(not any(k.startswith(p) for p in prefixes) for k in tensors):
        raise CheckpointError(f"{path}: the tensors do not fit the reader's arguments (first misfit: extra)")
    return [_build(path, m, tensors, p) for m, p in zip(described, prefixes, strict=True)], meta


def _build(
    path: str | os.PathLike[str], meta: dict[str, Any], tensors: dict[str, Any], prefix: str
) -> tuple[Crnn, float]:
    """One reader from ``meta`` (its ``args``, ``temperature``) and the tensors named ``prefix`` + name."""
    if not isinstance(meta.get("args"), dict):
        raise CheckpointError(f"{path}: not a number reader (metadata 'kind' must be {KIND!r} with 'args')")
    try:
        model = Crnn(**{k: meta["args"][k] for k in ("width", "hidden", "dropout") if k in meta["args"]})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: metadata 'args' do not describe a reader: {exc}") from None
    expected = model.state_dict()
    mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    bad = [k for k in expected if k not in mine or tuple(mine[k].shape) != tuple(expected[k].shape)]
    if bad or set(mine) - set(expected):
        raise CheckpointError(
            f"{path}: the tensors do not fit the reader's arguments (first misfit: {(bad or ['extra'])[0]})"
        )
    model.load_state_dict({k: torch.as_tensor(v) for k, v in mine.items()})
    temperature = meta.get("temperature", 1.0)
    if not isinstance(temperature, (int, float)) or not 0.05 <= float(temperature) <= 20:
        raise CheckpointError(f"{path}: metadata 'temperature' must be a number in 0.05..20, got {temperature!r}")
    return model.eval(), float(temperature)
