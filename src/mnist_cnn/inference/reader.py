"""Read handwritten numbers: rows found on the page, each read whole by the CRNN, decoded with CTC.

:func:`read_number` (and :class:`NumberReader`, which keeps the model loaded) answers, per row:

* ``number``: the digit string (leading zeros kept);
* ``probability``: the calibrated probability that the whole string is right: the CTC probability
  of exactly this string (every alignment of it summed), from log-probabilities divided by the
  temperature fitted on validation rows, then calibrated end to end on validation photos; a file
  holding several readers (an ensemble) scores every string its members' beams found by the
  geometric mean of their probabilities;
* ``alternatives``: the next most probable strings (prefix beam search) with their probabilities;
* the file's ``decoding`` (:class:`Decoding`) may add a view of the crop shifted by half a strip (2 px),
  read by every member as one more (the strides then sample the strokes at other places), and may
  check each digit of the best string with the bundled single-digit classifier: its log-probabilities
  on the digit's columns (made MNIST-like), times ``digit_check``, are added to the reader's, and a
  digit they change is changed (the string's probability is then that string's CTC probability);
* ``unsure`` and ``reason``: below ``min_confidence``, or when strings of another length take a
  tenth of the probability ("3 or 4 digits?");
* ``digits``: each digit's box in the image, its probability and top-k, from the frame where the
  digit peaks on the string's most probable alignment (with the digit check's share, when the file
  asks for one). A row's box is the ink's; digit boxes are cut halfway between the digits' peaks.

Several rows come back top to bottom; the reading's top-level ``number`` joins them with newlines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_cnn.inference.ctc import BEAM, align, candidates, string_probability
from mnist_cnn.inference.unsure import DEFAULT_MIN_CONFIDENCE, is_unsure

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


@dataclass(frozen=True)
class Decoding:
    """How a reader file's strings are decoded; part of what its calibration was fitted with, so it is
    kept in the file (``meta["decoding"]``; a file without it reads the crop once)."""

    shifted_view: bool = False  # also read the crop shifted by half a strip (2 px), as more members
    digit_check: float = 0.0  # weight of the single-digit classifier's log-probabilities per digit (0: none)

    @classmethod
    def from_meta(cls, meta: Any, where: Any) -> Decoding:
        from mnist_cnn.errors import CheckpointError

        if meta is None:
            return cls()
        check = meta.get("digit_check", 0.0) if isinstance(meta, dict) else None
        if (
            not isinstance(meta, dict)
            or not isinstance(meta.get("shifted_view", False), bool)
            or isinstance(check, bool)
            or not isinstance(check, (int, float))
            or not 0.0 <= check <= 1.0
        ):
            raise CheckpointError(f"{where}: metadata 'decoding' is malformed; remake it with tools/make_reader.py")
        return cls(meta.get("shifted_view", False), float(check))

    def to_meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shifted_view": self.shifted_view}
        if self.digit_check:
            out["digit_check"] = self.digit_check
        return out


# chosen on validation photos: the shifted view on renderer seeds 1, 3 and 5; the digit check's weight
# (0.1-0.7 tried) on seeds 1 and 3 (5,100 photos: 30 numbers put right, 16 put wrong); make_reader writes it
TUNED = Decoding(shifted_view=True, digit_check=0.2)


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
        self.decoding = Decoding.from_meta(self.meta.get("decoding"), self.path)
        self.top_k = top_k
        self._torch = torch
        self._digits: Any = None  # the single-digit classifier, loaded for the first digit check

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

    def scored(self, crop_image: np.ndarray) -> tuple[list[tuple[str, float]], np.ndarray, list[np.ndarray]]:
        """The candidate strings of a crop with their probabilities, best first; the members' frame
        log-probabilities averaged [T, 11]; every view's log-probabilities (each member on each view)."""
        from mnist_cnn.models.reader import STRIDE

        logps = self.log_probs(crop_image)
        views = list(logps)
        if self.decoding.shifted_view:  # half a strip along: the strides sample the strokes between their places
            views += self.log_probs(np.pad(crop_image, ((0, 0), (STRIDE // 2, STRIDE // 2))))
        mean = np.log(np.mean([np.exp(lp) for lp in logps], axis=0))  # the members' frame probabilities, averaged
        return candidates(views, BEAM), mean, views

    def checked(self, best: str, dists: list[np.ndarray], image: np.ndarray, cuts: list[float]) -> tuple[str, list]:
        """``best`` with each digit checked by the single-digit classifier on its columns of the crop
        (``cuts``): per digit, the reader's probabilities [10] times the classifier's to the power
        ``digit_check``, renormalised; the string of their best digits and those distributions."""
        from mnist_cnn.evaluation.calibration import softmax
        from mnist_cnn.inference.preprocessing.render import mnist_like

        if self._digits is None:
            self._digits = DigitModel()
        cols = [image[:, int(a) : int(np.ceil(b))] for a, b in zip(cuts, cuts[1:], strict=False)]
        probs = self._digits.predict_proba(np.stack([mnist_like(c) for c in cols]))  # [len(best), 10]
        fused = [
            np.log(np.maximum(d, 1e-9)) + self.decoding.digit_check * np.log(np.maximum(q, 1e-9))
            for d, q in zip(dists, probs, strict=True)
        ]
        out = list(softmax(np.stack(fused)))  # renormalised per digit
        return "".join(str(int(np.argmax(d))) for d in out), out

    def read_crop(self, crop: Any, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> RowReading:
        from mnist_cnn.models.reader import STRIDE

        cands, mean, views = self.scored(crop.image)
        best = cands[0][0]
        total = sum(q for _, q in cands) or 1.0
        by_len: dict[int, float] = {}
        for s, q in cands:
            by_len[len(s)] = by_len.get(len(s), 0.0) + q / total
        dists, cuts = self._distributions(mean, align(mean, [best])[0], crop.image.shape[1], STRIDE)
        raw = cands[0][1] if best else 0.0
        if best and self.decoding.digit_check > 0:
            first = best
            best, dists = self.checked(best, dists, crop.image, cuts)
            raw = raw if best == first else string_probability(views, best)
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
        alts = [{"number": s, "probability": self.calibrated(q)} for s, q in cands[:4] if s != best][:3]
        return RowReading(best, p, reason is not None, reason, crop.box, digits, alts, raw)

    def calibrated(self, p: float) -> float:
        """The string's probability after the end-to-end calibration fitted on validation photos
        (``sigmoid(a * logit(p) + b)``: it also accounts for rows the row finder got wrong)."""
        a, b = self.platt
        q = min(max(p, 1e-12), 1 - 1e-12)
        return float(1 / (1 + np.exp(-(a * np.log(q / (1 - q)) + b))))

    @staticmethod
    def _distributions(
        logp: np.ndarray, peaks: list[int], width: int, stride: int
    ) -> tuple[list[np.ndarray], list[float]]:
        """Per character (peaking at frames ``peaks``): the digits' probabilities [10] at its peak; and
        the crop columns between the characters (halfway between their peaks; 0 and ``width`` outside)."""
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


class DigitModel:
    """The bundled single-digit classifier (``default``) as the digit check uses it: uint8 [N, 28, 28]
    -> temperature-scaled probabilities [N, 10]."""

    def __init__(self) -> None:
        from mnist_cnn.artifacts.runs import resolve_model_path
        from mnist_cnn.models.files import load_model, temperature_of

        path = resolve_model_path("default")
        self.model, self.meta = load_model(path)
        self.temperature = temperature_of(self.meta, path)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        from mnist_cnn.evaluation.metrics import predict_probs

        return predict_probs(self.model, images, self.meta["normalisation"], self.temperature)


_READERS: dict[str, NumberReader] = {}


def read_number(
    image: Any, reader: str | os.PathLike[str] | None = None, min_confidence: float = DEFAULT_MIN_CONFIDENCE
) -> Reading:
    """Read the handwritten number(s) in ``image`` with the bundled reader (or the one in ``reader``)."""
    key = str(reader or DEFAULT_READER)
    if key not in _READERS:
        _READERS[key] = NumberReader(reader)
    return _READERS[key].read(image, min_confidence)
