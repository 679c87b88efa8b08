"""When an answer is "unsure": one threshold for digits (predictors) and whole numbers (the reader)."""

from __future__ import annotations

DEFAULT_MIN_CONFIDENCE = 0.5  # below this calibrated probability an answer is "unsure" (a coin flip or worse)


def is_unsure(probability: float, min_confidence: float) -> bool:
    """An answer less probable than ``min_confidence`` is reported as unsure; 0: never unsure, 1: always
    (a float32 probability can round to exactly 1.0, which is not certainty)."""
    return probability < min_confidence or min_confidence >= 1
