"""Counted nouns for people to read: ``plural(1, "epoch")`` is "1 epoch", not "1 epochs"."""

from __future__ import annotations


def plural(n: int, noun: str, many: str | None = None, *, thousands: bool = False) -> str:
    """``n`` and ``noun``, in the plural unless ``n`` is 1 (``many``: an irregular plural, default
    ``noun + "s"``); ``thousands``: ``1,000`` rather than ``1000``."""
    count = f"{n:,}" if thousands else str(n)
    return f"{count} {noun if n == 1 else many or noun + 's'}"
