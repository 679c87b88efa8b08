"""Stage 4, segmentation: which connected components of the ink are the digit (or the digits of a row).

The digit is the strongest component (ink mass to a power, discounted when it touches the picture's
border, is a comb's divider, or sits off-centre), grown by every component near it: pieces cut off by
a removed line, broken or dotted strokes, specks only when very close (:func:`digit_components`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mnist_cnn.errors import ImageError
from mnist_cnn.inference.preprocessing.ink import Analysis
from mnist_cnn.inference.preprocessing.params import DEFAULT, Params


def comps_box(comps: list[dict[str, Any]]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) around the components' boxes, analysis px."""
    return (
        min(c["bbox"][0] for c in comps),
        min(c["bbox"][1] for c in comps),
        max(c["bbox"][2] for c in comps),
        max(c["bbox"][3] for c in comps),
    )


def _touches_border(bbox: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    left, top, right, bottom = bbox
    return left == 0 or top == 0 or right == shape[1] or bottom == shape[0]


def along_border(bbox: tuple[int, int, int, int], shape: tuple[int, ...]) -> int:
    """How far a component's box runs along the picture's border where it touches it (0: it does not)."""
    left, top, right, bottom = bbox
    along = 0
    if left == 0 or right == shape[1]:
        along = bottom - top
    if top == 0 or bottom == shape[0]:
        along = max(along, right - left)
    return along


def _main_component(an: Analysis) -> dict[str, Any]:
    """The digit's main stroke: the most ink, border-touching blobs (shadow edges, paper edges) discounted."""

    h, w = an.labels.shape

    p = an.p

    def score(c: dict[str, Any]) -> float:
        # a page edge, the table or a neighbour's digit cut by the photo's border are rarely the
        # subject, and the subject is rarely in a corner
        left, top, right, bottom = c["bbox"]
        off = np.hypot((left + right) / w - 1, (top + bottom) / h - 1) / np.sqrt(2)  # 0 centre .. 1 corner
        # a comb's divider likewise (validation renderings, seed 1: form_box 291 -> 292 of 300,
        # notebook_all 247 -> 248; leaving dividers out of the digit's pieces too lost 9 form_box digits)
        aside = _touches_border(c["bbox"], an.labels.shape) or is_divider(c, an.lines)
        return c["mass"] ** p.mass_pow * (p.aside if aside else 1.0) * (1 - 0.6 * off)

    if not an.comps:  # everything was paper lines or a form's empty box
        raise ImageError("no digit found: only lines or an empty box; photograph the digit itself")
    best = max(an.comps, key=score)
    if best["area"] < 4:
        raise ImageError("no digit found: only specks of ink; photograph the digit larger and sharper")
    return best


def is_divider(c: dict[str, Any], lines: np.ndarray | None) -> bool:
    """Whether ``c`` is a printed divider: a straight bar (thin, filling its box) running from one
    removed line to another, like the dividers of a comb of boxes between its top and bottom lines."""
    if lines is None:
        return False
    l, t, r, b = c["bbox"]
    if b - t < r - l:  # a horizontal bar: the same test on the transpose
        return is_divider({**c, "bbox": (t, l, b, r)}, lines.T)
    if r - l > 0.2 * (b - t) or c["area"] < 0.6 * (r - l) * (b - t):
        return False
    m = 3  # px: the bar's ends stop at the lines' (removed) pixels, or cross them (kept: look beside)
    cols = slice(max(0, l - m), r + m)
    return bool(lines[max(0, t - m) : t + m, cols].any() and lines[max(0, b - m) : b + m, cols].any())


def _near(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: float) -> bool:
    return not (b[0] > a[2] + margin or b[2] < a[0] - margin or b[1] > a[3] + margin or b[3] < a[1] - margin)


def digit_components(an: Analysis) -> list[dict[str, Any]]:
    """The main component plus the pieces of the same digit: grown from the main one, adding any
    component within a quarter of the digit's size of the box so far if a removed line runs
    beside it (a box's side cut it off), other pieces within 0.15 of it, a speck within a tenth
    (broken or dotted strokes chain in; specks and scribbles elsewhere in the picture and anything
    running along its border stay out)."""
    main = _main_component(an)
    size = max(main["bbox"][2] - main["bbox"][0], main["bbox"][3] - main["bbox"][1])
    # things running along the picture's border (a page edge, the table, a neighbour's digit) are
    # not the digit's; a stroke's end that just reaches the border is
    keep = [main]
    rest = [c for c in an.comps if c is not main and along_border(c["bbox"], an.labels.shape) <= 0.5 * size]
    box = main["bbox"]
    grew = True
    while grew and rest:
        margin = an.p.chain_reach * max(box[2] - box[0], box[3] - box[1]) + 1
        # a speck (a dot, a scribble's end) joins only when it is much closer: it would add
        # nothing to the digit's shape but stretch its box
        near = [c for c in rest if _near(box, c["bbox"], _reach(c, main, an.lines, margin, an.p))]
        grew = bool(near)
        for c in near:
            keep.append(c)
            rest.remove(c)
            box = _union(box, c["bbox"])
    return keep


def _reach(
    c: dict[str, Any], main: dict[str, Any], lines: np.ndarray | None, margin: float, p: Params = DEFAULT
) -> float:
    """How far (px) ``c`` may be from the digit's box and still join it; ``margin``: the full reach."""
    if c["mass"] < p.speck_mass * main["mass"]:
        return p.speck_reach * margin
    if lines is not None and lines_near(lines, c["bbox"], 2):
        return margin  # a piece that a removed line (a box's side) may have cut off the digit
    return p.free_reach * margin + 1  # + 1 px: a 28x28 5 whose bar is 3 px from its body (MNIST test 1940)


def lines_near(lines: np.ndarray, box: tuple[int, int, int, int], margin: int) -> bool:
    """Whether any pixel of ``lines`` (bool [h, w], the removed lines) lies within ``margin`` px of ``box``."""
    l, t, r, b = box
    return bool(lines[max(0, t - margin) : b + margin, max(0, l - margin) : r + margin].any())


def _union(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def segment_digits(an: Analysis) -> list[list[dict[str, Any]]]:
    """Several digits in a row (``--multi``): significant components grouped by overlapping
    column ranges (a broken stroke stays with its digit), left to right."""
    if not an.comps:
        raise ImageError("no digit found in the image")
    big = max(c["mass"] for c in an.comps)
    tall = max(c["bbox"][3] - c["bbox"][1] for c in an.comps)
    sig = [c for c in an.comps if c["mass"] >= 0.08 * big and (c["bbox"][3] - c["bbox"][1]) >= 0.25 * tall]
    sig.sort(key=lambda c: c["bbox"][0])
    groups: list[list[dict[str, Any]]] = []
    for c in sig:
        if groups:
            gl, _, gr, _ = comps_box(groups[-1])
            overlap = min(gr, c["bbox"][2]) - max(gl, c["bbox"][0])
            if overlap > 0.3 * min(gr - gl, c["bbox"][2] - c["bbox"][0]):
                groups[-1].append(c)
                continue
        groups.append([c])
    return groups
