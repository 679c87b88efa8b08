"""Read handwritten numbers: rows found on the page, each read whole by the CRNN, decoded with CTC.

:func:`read_number` (and :class:`NumberReader`, which keeps the model loaded) answers, per row:

* ``number``: the digit string (leading zeros kept);
* ``probability``: the calibrated probability that the whole string is right: the CTC probability
  of exactly this string (every alignment of it summed), from log-probabilities divided by the
  temperature fitted on validation rows, then calibrated end to end on validation photos; a file
  holding several readers (an ensemble) scores every string its members' beams found by the
  geometric mean of their probabilities;
* ``alternatives``: the next most probable strings (prefix beam search) with their probabilities;
* ``unsure`` and ``reason``: below ``min_confidence``, or when strings of another length take a
  tenth of the probability ("3 or 4 digits?");
* ``digits``: each digit's box in the image, its probability and top-k, from the frame where the
  digit peaks. A row's box is the ink's; digit boxes are cut halfway between the digits' peaks.

Several rows come back top to bottom; the reading's top-level ``number`` joins them with newlines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.inference.unsure import DEFAULT_MIN_CONFIDENCE, is_unsure

BEAM = 8  # prefixes kept by the beam search
LENGTH_DOUBT = 0.1  # another length with this share of the candidates' probability: "3 or 4 digits?"
DEFAULT_READER = Path(__file__).resolve().parent.parent / "pretrained" / "reader.safetensors"


@dataclass
class RowReading:
    number: str
    probability: float
    unsure: bool
    reason: str | None
    bbox: tuple[int, int, int, int]
    digits: list[dict[str, Any]] = field(default_factory=list)
    alternatives: list[dict[str, Any]] = field(default_factory=list)
    raw_probability: float = 0.0  # the CTC probability before the end-to-end calibration

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "probability": self.probability,
            "unsure": self.unsure,
            "reason": self.reason,
            "bbox": list(self.bbox),
            "digits": self.digits,
            "alternatives": self.alternatives,
        }


@dataclass
class Reading:
    """Every row read in an image, top to bottom."""

    rows: list[RowReading]
    size: tuple[int, int]  # the image's (width, height)

    @property
    def number(self) -> str:
        return "\n".join(r.number for r in self.rows)

    @property
    def probability(self) -> float:
        return float(np.prod([r.probability for r in self.rows]))

    @property
    def unsure(self) -> bool:
        return any(r.unsure for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        reasons = [r.reason for r in self.rows if r.reason]
        return {
            "number": self.number,
            "probability": self.probability,
            "unsure": self.unsure,
            "reason": "; ".join(reasons) if reasons else None,
            "digits": [d for r in self.rows for d in r.digits],
            "rows": [r.to_dict() for r in self.rows],
            "size": list(self.size),
        }


class NumberReader:
    """The reader model loaded once; :meth:`read` an image (bytes, path, PIL image, array)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, top_k: int = 3):
        import torch

        from mnist_cnn.models.reader import load_readers

        self.path = Path(path) if path is not None else DEFAULT_READER
        self.members, self.meta = load_readers(self.path)
        platt = (
            self.meta.get("calibration", {}).get("platt") if isinstance(self.meta.get("calibration"), dict) else None
        )
        self.platt = (float(platt[0]), float(platt[1])) if platt else (1.0, 0.0)
        self.top_k = top_k
        self._torch = torch

    def read(self, image: Any, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Reading:
        from mnist_cnn.inference.preprocessing import preprocess_rows

        return self.read_rows(preprocess_rows(image), min_confidence)

    def read_rows(self, crops: list[Any], min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> Reading:
        """The reading of a picture's row crops (:func:`~mnist_cnn.inference.preprocessing.preprocess_rows`)."""
        return Reading([self.read_crop(c, min_confidence) for c in crops], crops[0].size)

    def log_probs(self, crop_image: np.ndarray) -> list[np.ndarray]:
        """Each member's [T, 11] temperature-scaled log-probabilities of one crop [32, W]."""
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crop_image, np.float32))[None, None]
            return [(model(x)[:, 0] / t).log_softmax(-1).numpy() for model, t in self.members]

    def read_crop(self, crop: Any, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> RowReading:
        from mnist_cnn.models.reader import STRIDE

        logps = self.log_probs(crop.image)
        cands = candidates(logps, BEAM)
        best = cands[0][0]
        total = sum(q for _, q in cands) or 1.0
        by_len: dict[int, float] = {}
        for s, q in cands:
            by_len[len(s)] = by_len.get(len(s), 0.0) + q / total
        mean = np.log(np.mean([np.exp(lp) for lp in logps], axis=0))  # the members' frame probabilities, averaged
        dists, cuts = self._distributions(mean, best, crop.image.shape[1], STRIDE)
        raw = cands[0][1] if best else 0.0
        p = self.calibrated(raw)
        reason = None
        other = max((n for n in by_len if n != len(best)), key=lambda n: by_len[n], default=None)
        if other is not None and by_len[other] >= LENGTH_DOUBT:
            a, b = sorted((len(best), other))
            reason = f"{a} or {b} digits?"
        elif is_unsure(p, min_confidence):
            reason = "low confidence"
        digits = [
            self._digit(int(ch), d, crop.to_picture(cuts[k], cuts[k + 1]))
            for k, (ch, d) in enumerate(zip(best, dists, strict=True))
        ]
        alts = [{"number": s, "probability": self.calibrated(q)} for s, q in cands[1:4] if s != best]
        return RowReading(best, p, reason is not None, reason, crop.box, digits, alts, raw)

    def calibrated(self, p: float) -> float:
        """The string's probability after the end-to-end calibration fitted on validation photos
        (``sigmoid(a * logit(p) + b)``: it also accounts for rows the row finder got wrong)."""
        a, b = self.platt
        q = min(max(p, 1e-12), 1 - 1e-12)
        return float(1 / (1 + np.exp(-(a * np.log(q / (1 - q)) + b))))

    @staticmethod
    def _distributions(logp: np.ndarray, text: str, width: int, stride: int) -> tuple[list[np.ndarray], list[float]]:
        """Per character of ``text``: the digits' probabilities [10] at the strip where it peaks; and
        the crop columns between the characters (halfway between their peaks; 0 and ``width`` outside)."""
        peaks = _peaks(logp, text)
        probs = np.exp(logp)
        xs = [(t + 0.5) * stride for t in peaks]
        cuts = [0.0] + [(a + b) / 2 for a, b in zip(xs, xs[1:], strict=False)] + [float(width)]
        return [probs[t, :10] / max(float(probs[t, :10].sum()), 1e-12) for t in peaks], cuts

    def _digit(self, k: int, d: np.ndarray, bbox: tuple[int, int, int, int]) -> dict[str, Any]:
        """Digit ``k`` of the string: its probability and the top-k at its peak strip, its box."""
        order = np.argsort(-d)[: self.top_k]
        return {
            "label": str(k),
            "digit": k,
            "probability": float(d[k]),
            "bbox": list(bbox),
            "top_k": [{"label": str(int(i)), "digit": int(i), "probability": float(d[i])} for i in order],
        }


def _peaks(logp: np.ndarray, text: str) -> list[int]:
    """The frame where each character of the best path is most probable (greedy path's runs)."""
    path = logp.argmax(-1)
    runs: list[tuple[int, int, int]] = []  # (class, first frame, last frame)
    for t, c in enumerate(path):
        if runs and runs[-1][0] == c and runs[-1][2] == t - 1:
            runs[-1] = (c, runs[-1][1], t)
        else:
            runs.append((int(c), t, t))
    chars = [r for r in runs if r[0] != logp.shape[1] - 1]  # not the blank
    if "".join(str(r[0]) for r in chars) == text:
        return [r[1] + int(np.argmax(logp[r[1] : r[2] + 1, r[0]])) for r in chars]
    # the beam's best differs from the greedy path: each character at its most probable frame, in order
    out, start = [], 0
    for k, ch in enumerate(text):
        end = len(logp) - (len(text) - k - 1)
        t = start + int(np.argmax(logp[start:end, int(ch)]))
        out.append(t)
        start = t + 1
    return out


def candidates(logps: list[np.ndarray], beam: int = BEAM) -> list[tuple[str, float]]:
    """The strings the members' beams found, each with its exact probability (every alignment summed,
    :func:`string_logp`); with several members, the geometric mean of theirs. Best first."""
    found = list(dict.fromkeys(s for lp in logps for s, _ in beam_search(lp, beam)))
    scores = np.exp(np.mean([strings_logp(lp, found) for lp in logps], axis=0))
    return sorted(zip(found, scores.tolist(), strict=True), key=lambda sq: -sq[1])


def beam_search(logp: np.ndarray, beam: int = BEAM) -> list[tuple[str, float]]:
    """CTC prefix beam search over [T, 11] log-probabilities: the most probable strings with their
    probabilities (each the sum over its alignments that the beam kept), best first."""
    blank = logp.shape[1] - 1
    probs = np.exp(logp.astype(np.float64))
    beams: dict[str, tuple[float, float]] = {"": (1.0, 0.0)}  # prefix -> (p ending in blank, p ending in a char)
    for t in range(len(probs)):
        pt = probs[t]
        nxt: dict[str, list[float]] = {}

        def add(s: str, pb: float, pc: float, nxt: dict[str, list[float]] = nxt) -> None:
            e = nxt.setdefault(s, [0.0, 0.0])
            e[0] += pb
            e[1] += pc

        for s, (pb, pc) in beams.items():
            add(s, (pb + pc) * pt[blank], 0.0)
            last = int(s[-1]) if s else -1
            for c in range(blank):
                if pt[c] < 1e-4:
                    continue
                if c == last:
                    add(s, 0.0, pc * pt[c])  # a repeat without a blank between stays one character
                    add(s + str(c), 0.0, pb * pt[c])
                else:
                    add(s + str(c), 0.0, (pb + pc) * pt[c])
        top = sorted(nxt.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:beam]
        beams = {s: (v[0], v[1]) for s, v in top}
    return sorted(((s, v[0] + v[1]) for s, v in beams.items()), key=lambda sv: -sv[1])


def string_logp(logp: np.ndarray, text: str) -> float:
    """log p(text | row): CTC's forward algorithm over every alignment of ``text``."""
    return float(strings_logp(logp, [text])[0])


def strings_logp(logp: np.ndarray, texts: list[str]) -> np.ndarray:
    """log p(text | row) of each of ``texts`` at once: CTC's forward algorithm over [K, S] arrays,
    each text extended with blanks (``-1-9-9-8-``) and padded to the longest (padding stays -inf)."""
    blank = logp.shape[1] - 1
    ext = [[blank] + [v for ch in t for v in (int(ch), blank)] for t in texts]
    size = max(len(e) for e in ext)
    labels = np.full((len(texts), size), blank)
    valid = np.zeros((len(texts), size), bool)
    for k, e in enumerate(ext):
        labels[k, : len(e)], valid[k, : len(e)] = e, True
    # a character may follow the one two places back directly (skipping the blank) unless it repeats it
    allow = np.zeros_like(valid)
    allow[:, 2:] = (labels[:, 2:] != blank) & (labels[:, 2:] != labels[:, :-2])
    emit = np.where(valid[None], logp[:, labels], -np.inf)  # [T, K, S]
    alpha = np.full((len(texts), size), -np.inf)
    alpha[:, :2] = emit[0, :, :2]
    for t in range(1, len(logp)):
        shift1 = np.pad(alpha[:, :-1], ((0, 0), (1, 0)), constant_values=-np.inf)
        shift2 = np.where(allow, np.pad(alpha[:, :-2], ((0, 0), (2, 0)), constant_values=-np.inf), -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, shift1), shift2) + emit[t]
    ends = np.array([len(e) for e in ext])
    last = alpha[np.arange(len(texts)), ends - 1]
    before = np.where(ends > 1, alpha[np.arange(len(texts)), np.maximum(ends - 2, 0)], -np.inf)
    return np.logaddexp(last, before)


_READERS: dict[str, NumberReader] = {}


def read_number(
    image: Any, reader: str | os.PathLike[str] | None = None, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> Reading:
    """Read the handwritten number(s) in ``image`` with the bundled reader (or the one in ``reader``)."""
    key = str(reader or DEFAULT_READER)
    if key not in _READERS:
        _READERS[key] = NumberReader(reader)
    return _READERS[key].read(image, min_confidence)
