"""How the numbers benchmark (:mod:`number_reading`) scores a reading: the alignment of the read string
to the true one, the kind of each failure, and the figures of a set of numbers.

**Scores.** ``exact``: the share of numbers read exactly (leading zeros included). ``digits``: the share
of true digits read right, from a Levenshtein alignment of the read string to the true one (unit costs;
matches / true length, pooled over the numbers).

**Failure kinds.** Each wrong number counts once, under the first of these that applies, from its
alignment's edits:

* ``no_digit``: the reader found no digit (``ImageError``);
* ``merged``: two neighbouring true digits read as one: a true digit *deleted* next to a neighbour that
  *is* aligned to a read digit, where either that read digit is a substitution (neither of the two:
  "47" read "9"), or the two true digits' ink boxes touch or overlap horizontally (the pair was one blob
  of ink: "4711" read "411" with the 4 and 7 touching);
* ``missing``: any other deleted digit ("1928" read "128"; also a deletion next to a *separate* digit);
* ``extra``: an inserted digit ("1928" read "19288");
* ``misread``: substitutions only ("1928" read "1828").

The edit counts themselves (``edits``: substitutions, deletions, insertions, merged pairs) are reported
too, over every number.

**Calibration** of the answer's ``probability`` (the row's whole-string probability; 0 when no digit was
found): ECE over 15 equal-width bins of exact correctness, the accuracy and the coverage (share of all
numbers) of answers at probability >= 0.9, and the accuracy and share of answers not marked ``unsure``
(``--min-confidence``, default 0.5; a photo without an answer counts as unsure).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KINDS = ("no_digit", "merged", "missing", "extra", "misread")  # in the order a wrong number is classified
N_BINS = 15
SURE = 0.9  # the probability above which answers are judged (accuracy and coverage)

# (name, key, comparison, target): what the issue asks of the reader
TARGETS = [
    ("combined exact-number accuracy", "exact", ">=", 0.97),
    ("combined digit accuracy", "digits", ">=", 0.995),
    ("touching/overlapping exact", "touching_exact", ">=", 0.90),
    ("lowest condition's exact", "min_condition_exact", ">=", 0.93),
    ("accuracy at probability >= 0.9", "accuracy_at_90", ">=", 0.97),
    ("ECE (15 bins)", "ece", "<=", 0.03),
    ("12 MP photo p50, one core (s)", "big_p50_s", "<=", 0.2),
]


# --------------------------------------------------------------------------- alignment and failure kinds


def align(true: str, read: str) -> list[tuple[str, int | None, int | None]]:
    """A minimal-cost (Levenshtein, unit costs) alignment of ``read`` to ``true`` as a list of
    ``(op, i, j)``: ``"="`` true[i] read as read[j], ``"sub"`` read as another digit, ``"del"`` true[i]
    not read (``j`` None), ``"ins"`` read[j] not in the true number (``i`` None); in reading order."""
    n, m = len(true), len(read)
    d = np.zeros((n + 1, m + 1), int)
    d[:, 0] = np.arange(n + 1)
    d[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j - 1] + (true[i - 1] != read[j - 1]), d[i - 1, j] + 1, d[i, j - 1] + 1)
    ops: list[tuple[str, int | None, int | None]] = []
    i, j = n, m
    while i or j:  # backtrack: a diagonal step first, then a deletion, then an insertion
        if i and j and d[i, j] == d[i - 1, j - 1] + (true[i - 1] != read[j - 1]):
            ops.append(("=" if true[i - 1] == read[j - 1] else "sub", i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and d[i, j] == d[i - 1, j] + 1:
            ops.append(("del", i - 1, None))
            i -= 1
        else:
            ops.append(("ins", None, j - 1))
            j -= 1
    return ops[::-1]


def touching(a: Any, b: Any) -> bool:
    """Two ink boxes (left, top, right, bottom; right exclusive) that touch or overlap horizontally."""
    return min(a[2], b[2]) - max(a[0], b[0]) >= 0


def classify(true: str, read: str | None, boxes: list[Any] | None = None) -> dict[str, Any]:
    """The outcome of one number: ``kind`` (None when right, else one of KINDS, see the module's
    docstring), ``matches`` (true digits read right) and the alignment's ``edits``. ``read`` None: no
    digit was found; ``boxes``: the true digits' ink boxes (the "touching" test of ``merged``)."""
    edits = {"substitutions": 0, "deletions": 0, "insertions": 0, "merged_pairs": 0}
    if read is None:
        return {"kind": "no_digit", "matches": 0, "edits": {**edits, "deletions": len(true)}}
    ops = align(true, read)
    by_true = {i: op for op, i, _ in ops if i is not None}
    merged = 0
    for op, i, _ in ops:
        if op != "del":
            continue
        assert i is not None
        for k in (i - 1, i + 1):  # a neighbour that did get a read digit
            if by_true.get(k) not in ("=", "sub"):
                continue
            if by_true[k] == "sub" or (boxes is not None and touching(boxes[i], boxes[k])):
                merged += 1
                break
    edits["substitutions"] = sum(op == "sub" for op, _, _ in ops)
    edits["deletions"] = sum(op == "del" for op, _, _ in ops)
    edits["insertions"] = sum(op == "ins" for op, _, _ in ops)
    edits["merged_pairs"] = merged
    matches = sum(op == "=" for op, _, _ in ops)
    if read == true:
        kind = None
    elif merged:
        kind = "merged"
    elif edits["deletions"]:
        kind = "missing"
    elif edits["insertions"]:
        kind = "extra"
    else:
        kind = "misread"
    return {"kind": kind, "matches": matches, "edits": edits}


# --------------------------------------------------------------------------- figures


def ece(p: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error of probabilities ``p`` of being right (equal-width bins)."""
    if len(p) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    gap = sum(abs(correct[bins == b].mean() - p[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins))
    return float(gap / len(p))


def _share(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure of a set of numbers (a condition, the touching ones, all of them)."""
    n = len(records)
    if not n:
        return {"n": 0}
    right = np.array([r["kind"] is None for r in records])
    p = np.array([r["probability"] for r in records], float)
    unsure = np.array([r["unsure"] for r in records])
    rows = np.array([r["rows"] for r in records])
    seconds = np.array([r["seconds"] for r in records])
    sure = p >= SURE
    lengths = np.array([len(r["true"]) for r in records])
    return {
        "n": n,
        "exact": float(right.mean()),
        "exact_strict": float((right & (rows <= 1)).mean()),
        "digits": sum(r["matches"] for r in records) / int(lengths.sum()),
        "failures": {k: sum(r["kind"] == k for r in records) for k in KINDS},
        "edits": {k: sum(r["edits"][k] for r in records) for k in records[0]["edits"]},
        "extra_rows": int((rows > 1).sum()),
        "calibration": {
            "ece": ece(p, right.astype(float)),
            "mean_probability": float(p.mean()),
            "accuracy_at_90": _share(right[sure].sum(), sure.sum()),
            "coverage_at_90": float(sure.mean()),
            "n_at_90": int(sure.sum()),
            "accuracy_not_unsure": _share(right[~unsure].sum(), (~unsure).sum()),
            "share_not_unsure": float((~unsure).mean()),
            "accuracy_unsure": _share(right[unsure].sum(), unsure.sum()),
        },
        "by_length": {
            int(k): {"n": int((lengths == k).sum()), "exact": float(right[lengths == k].mean())}
            for k in np.unique(lengths)
        },
        "speed": {
            "median_s": float(np.median(seconds)),
            "p95_s": float(np.percentile(seconds, 95)),
            "mean_s": float(seconds.mean()),
        },
    }


def judge(figures: dict[str, float | None]) -> list[dict[str, Any]]:
    """Each target with its value and whether it was met (None: not measured in this run)."""
    out = []
    for name, key, cmp, target in TARGETS:
        v = figures.get(key)
        met = None if v is None or np.isnan(v) else bool(v >= target if cmp == ">=" else v <= target)
        out.append({"target": name, "key": key, "value": v, "goal": f"{cmp} {target:g}", "met": met})
    return out
