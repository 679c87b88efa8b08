"""Stage 5b, rows: where the handwritten numbers are, and each as the number reader's input.

:func:`find_rows` keeps the components that look like handwriting (not paper lines or a form's box,
which the earlier stages took out; not a comb's dividers; not what runs along the picture's border,
like a page edge or the table beyond it; not specks, though short pieces close together that make a
digit-sized group are a broken digit), measures the writing's height from the
heaviest of them, and groups them into rows by vertical overlap, splitting a row at a gap wider than
2.5 digit heights and joining a row to the one it continues at a slant. Rows much lighter than the
heaviest (a stray scribble) are dropped. Rows come back top to bottom, pieces left to right.

:func:`in_shade` first adds the digits under a hard shadow, which the lit digits' threshold misses.

:func:`row_crop` cuts a row out at full resolution as soft ink (0..1, lines crossing it removed
except where strokes cross them) and scales it so the ink is 24 px tall in a 32-px crop, the input of
:class:`~mnist_cnn.models.reader.Crnn`. :class:`RowCrop` maps crop pixels back to the picture's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.errors import ImageError
from mnist_cnn.inference.preprocessing.ink import Analysis, components, floors
from mnist_cnn.inference.preprocessing.render import cut_out, stroke_width, tight
from mnist_cnn.inference.preprocessing.segment import along_border, comps_box, is_divider, lines_near

HEIGHT, INK_TOP, INK_HEIGHT, PAD = 32, 4, 24, 4  # crop height, the ink's top row and height, side margin (px)
MIN_STROKE = 1.8  # px at the crop's scale: thinner strokes (a fine pen on a big photo) are thickened
Comp = dict[str, Any]


@dataclass
class RowCrop:
    """A row of handwriting as the reader's input and where it came from."""

    image: np.ndarray  # float32 [32, W] 0..1, bright ink; W a multiple of 4
    box: tuple[int, int, int, int]  # the ink's box in the decoded picture's pixels (l, t, r, b)
    scale: float  # crop px per picture px
    size: tuple[int, int] = (0, 0)  # the picture's (width, height)

    def to_picture(self, x0: float, x1: float) -> tuple[int, int, int, int]:
        """The box (picture px) of the ink between crop columns ``x0`` and ``x1``."""
        a, b = max(0, int(x0)), min(self.image.shape[1], int(np.ceil(x1)))
        cols = self.image[:, a:b]
        rows = np.flatnonzero(cols.max(axis=1) > 0.2) if cols.size else np.array([], int)
        on = np.flatnonzero(cols.max(axis=0) > 0.2) if cols.size else np.array([], int)
        if rows.size == 0 or on.size == 0:
            rows, on = np.array([INK_TOP, INK_TOP + INK_HEIGHT - 1]), np.array([0, max(0, b - a - 1)])
        x, y, s = self.box[0], self.box[1], self.scale
        w, h = self.size if self.size != (0, 0) else (self.box[2], self.box[3])
        return (
            int(np.clip(x + (a + on[0] - PAD) / s, 0, w)),
            int(np.clip(y + (rows[0] - INK_TOP) / s, 0, h)),
            int(np.clip(np.ceil(x + (a + on[-1] + 1 - PAD) / s), 0, w)),
            int(np.clip(np.ceil(y + (rows[-1] + 1 - INK_TOP) / s), 0, h)),
        )


def _height(c: Comp) -> int:
    return c["bbox"][3] - c["bbox"][1]


def find_rows(an: Analysis) -> list[list[Comp]]:
    """The rows of handwriting, top to bottom, each a list of components left to right."""
    comps: list[Comp] = []
    bars: list[Comp] = []
    for c in an.comps:
        if c["area"] >= 4:
            (bars if is_divider(c, an.lines) else comps).append(c)
    if not comps:
        raise ImageError("no digit found: only lines, an empty box or specks; photograph the digits themselves")
    heavy = sorted(comps, key=lambda c: -c["mass"])[:8]
    ref = float(np.median([_height(c) for c in heavy if c["mass"] >= 0.1 * heavy[0]["mass"]]))  # not specks
    comps += _written_bars(an, bars, heavy)
    shape = an.labels.shape
    comps = [c for c in comps if along_border(c["bbox"], shape) <= 1.2 * ref]  # a page edge, the table
    big = max((c["mass"] for c in comps), default=0.0)
    sig = [
        c for c in comps + _broken(comps, ref, big) if 0.4 * ref <= _height(c) <= 3 * ref and c["mass"] >= 0.03 * big
    ]
    if not sig:
        raise ImageError("no digit found: only the page's edge or the table; photograph the digits themselves")
    rows: list[list[Comp]] = []
    for c in sorted(sig, key=lambda c: -c["mass"]):  # the heaviest seed the rows: a broken piece never does
        fits = [r for r in rows if _overlap(r, c) >= 0.5 * min(_height(c), _band(r))]
        if fits:
            max(fits, key=lambda r: _overlap(r, c)).append(c)
        else:
            rows.append([c])
    pieces = _chained([p for r in rows for p in _split(sorted(r, key=lambda c: c["bbox"][0]), 2.5 * ref)], 2.5 * ref)
    heaviest = max(sum(c["mass"] for c in p) for p in pieces)
    pieces = [p for p in pieces if sum(c["mass"] for c in p) >= 0.2 * heaviest]
    pieces = [[part for c in p for part in c.get("parts", [c])] for p in pieces]  # a broken digit's pieces
    pieces = [_without_rules(_with_small_parts(p, comps, ref), an.lines) for p in pieces]
    return sorted(pieces, key=lambda p: comps_box(p)[1::-1])  # top, then left


def in_shade(an: Analysis) -> Analysis:
    """``an`` with the digits under a shadow added to its components. A shadow scales the paper and
    the ink alike (dark ink on light paper): its digits have a third of the lit contrast and fall under
    the threshold the lit ones set ("3812" read "38"). Where the paper is darker than ``p.shade`` x the
    lit paper, the thresholds are scaled by the paper's brightness; a component found so is kept when
    its ink is as strong against its paper as the lit digits' (within ``p.shade_contrast``): a table's
    grain beyond the page edge is not (on validation photos: 0.3-0.5 of the lit digits'; shaded
    digits about 1). Each component is looked at within its box only."""
    p = an.p
    if an.sign > 0 or not an.comps:
        return an
    paper = an.bg.mean(axis=2)  # [h, w] the background's brightness
    shade = np.clip(paper / max(float(np.percentile(paper, 90)), 1.0), 0.15, 1.0)  # 1: lit paper
    if shade.min() > p.shade:
        return an
    least, least_low = floors(an.noise, p)
    labels, found = components(an.ink, np.maximum(an.low * shade, least_low), np.maximum(an.threshold * shade, least))

    def where(c: Comp, of: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray]:  # its box, its pixels there
        left, top, right, bottom = c["bbox"]
        box = (slice(top, bottom), slice(left, right))
        return box, of[box] == c["label"]

    def contrast(box: tuple[slice, slice], m: np.ndarray) -> float:  # the strongest fifth of the ink over its paper
        v = an.ink[box][m]
        top = v >= np.percentile(v, 80)
        return float(np.median(v[top] / np.maximum(paper[box][m][top], 1.0)))

    heavy = sorted(an.comps, key=lambda c: -c["mass"])[:8]
    lit = float(np.median([contrast(*where(c, an.labels)) for c in heavy]))
    known = np.isin(an.labels, [c["label"] for c in an.comps])
    out, merged, label = [], an.labels.copy(), int(an.labels.max()) + 1
    for c in found:
        box, m = where(c, labels)
        if known[box][m].any() or np.median(shade[box][m]) > p.shade or contrast(box, m) < p.shade_contrast * lit:
            continue
        merged[box][m] = label
        out.append({**c, "label": label})
        label += 1
    return replace(an, labels=merged, comps=an.comps + out) if out else an


def _written_bars(an: Analysis, bars: list[Comp], heavy: list[Comp]) -> list[Comp]:
    """The straight bars between two paper lines that are written strokes, not a comb's dividers (a
    1 on squared paper): as bold as the digits' strokes (on validation renderings: printed dividers
    at most 0.73 of the digits' stroke width, written 1s 0.81 and up), or one of a stack of pieces
    (x-overlapping, one above the other across a removed line) that a crossing line cut apart."""
    lines = an.lines
    if not bars or lines is None:  # a divider runs between removed lines: none without them
        return []
    width = stroke_width(np.isin(an.labels, [c["label"] for c in heavy]))

    def stacked(a: Comp, b: Comp) -> bool:  # b just above or below a, a removed line between them
        (l1, t1, r1, b1), (l2, t2, r2, b2) = a["bbox"], b["bbox"]
        top, bottom = min(b1, b2), max(t1, t2)  # the gap's rows
        near = max(l1, l2) - min(r1, r2) <= 2 * width  # a slanted stroke's pieces are offset
        if a is b or not near or not 0 <= bottom - top <= 3 * width:
            return False
        return bool(lines[top : bottom + 1, min(l1, l2) : max(r1, r2) + 1].any())

    return [
        c for c in bars if stroke_width(an.labels == c["label"]) >= 0.78 * width or any(stacked(c, o) for o in bars)
    ]


def _broken(comps: list[Comp], ref: float, big: float) -> list[Comp]:
    """The digits the pen broke into pieces each shorter than a digit (a light 8 in five strokes, a 5
    whose bar came apart from its bowl): pieces of at least 1% of the heaviest's ink lying within 0.3
    of the writing's height ``ref`` of each other, grouped; each group of two or more as one
    component (its box, its ink; ``parts``: its pieces). Alone, each piece was too small to be a digit
    and the row left it out ("83870" read "3870")."""
    loose = [c for c in comps if _height(c) < 0.4 * ref and c["mass"] >= 0.01 * big]
    loose = sorted(loose, key=lambda c: -c["mass"])[:64]  # a noisy photo's grain: the heaviest only
    reach = 0.3 * ref  # on validation photos 0.3 joined one more broken 7 than 0.2, and no false digit
    groups: list[list[Comp]] = []
    for c in sorted(loose, key=lambda c: c["bbox"][0]):
        near = [g for g in groups if any(_gap(c["bbox"], o["bbox"]) <= reach for o in g)]
        groups = [g for g in groups if not any(g is n for n in near)] + [[c] + [o for g in near for o in g]]
    return [
        {"bbox": comps_box(g), "mass": sum(c["mass"] for c in g), "area": sum(c["area"] for c in g), "parts": g}
        for g in groups
        if len(g) > 1
    ]


def _gap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    """The distance between two boxes along the axis where they lie furthest apart (0: they overlap)."""
    return max(a[0] - b[2], b[0] - a[2], a[1] - b[3], b[1] - a[3], 0)


def _band(row: list[Comp]) -> int:
    _, top, _, bottom = comps_box(row)
    return bottom - top


def _overlap(row: list[Comp], c: Comp) -> int:
    _, top, _, bottom = comps_box(row)
    return min(bottom, c["bbox"][3]) - max(top, c["bbox"][1])


def _split(row: list[Comp], gap: float) -> list[list[Comp]]:
    """A row (left to right) cut where the ink pauses for more than ``gap`` px."""
    out, right = [[row[0]]], row[0]["bbox"][2]
    for c in row[1:]:
        if c["bbox"][0] - right > gap:
            out.append([c])
        else:
            out[-1].append(c)
        right = max(right, c["bbox"][2])
    return out


def _chained(pieces: list[list[Comp]], gap: float) -> list[list[Comp]]:
    """``pieces`` (each left to right) with a piece joined to the one it continues (:func:`_continues`),
    again until none does. A row photographed at a slant climbs or drops as it goes: grouped by the
    whole row's band, its far end made a second row ("8051964" read "8051" and "964")."""
    out = sorted(pieces, key=lambda p: comps_box(p)[0])
    while True:
        pairs = ((i, j) for i, a in enumerate(out) for j, b in enumerate(out) if i != j and _continues(a, b, gap))
        pair = next(pairs, None)
        if pair is None:
            return out
        i, j = pair
        out[i] = sorted(out[i] + out[j], key=lambda c: c["bbox"][0])
        del out[j]


def _continues(a: list[Comp], b: list[Comp], gap: float) -> bool:
    """Whether ``b`` continues ``a``: it starts right of all of ``a``, within ``gap`` px of its last
    digit, and its first digit overlaps that last digit in height by a third of theirs."""
    end, first = max(a, key=lambda c: c["bbox"][2]), min(b, key=lambda c: c["bbox"][0])
    lap = min(end["bbox"][3], first["bbox"][3]) - max(end["bbox"][1], first["bbox"][1])
    return (
        0 <= first["bbox"][0] - end["bbox"][2] <= gap
        and first["bbox"][0] >= comps_box(a)[2]
        and lap >= min(_height(end), _height(first)) / 3
    )


def _without_rules(row: list[Comp], lines: np.ndarray | None) -> list[Comp]:
    """The row without the straight printed bars at its ends: a form box's side or a page's edge left
    in the ink, which would read as a 1. A bar is as tall as the digits but much thinner than their
    strokes: its area over its length is under 6.4% of their height (on validation renderings: box
    sides and page edges 5.5-5.8%, written 1s 5.4% and up; MNIST's strokes are 13%). Where no paper
    line (``lines``: the removed lines' mask) comes near it, a bar must be under 5% (a page's edge
    3.4%): a thin 1 on plain paper, in shade or blurred (5.4-6.2%) was taken for one ("12036" read "2036")."""
    tall = [_height(c) for c in row if _height(c) >= 0.5 * max(_height(m) for m in row)]
    median = float(np.median(tall)) if tall else 0.0

    def bar(c: Comp) -> bool:
        w, h = c["bbox"][2] - c["bbox"][0], _height(c)
        thin = c["area"] / float(np.hypot(w, h)) / max(median, 1e-6)
        if w >= 0.5 * median or h < 0.8 * median or thin >= 0.064:
            return False
        return thin < 0.05 or _near_lines(c, lines)

    while len(row) > 1 and bar(row[0]):
        row = row[1:]
    while len(row) > 1 and bar(row[-1]):
        row = row[:-1]
    return row


def _near_lines(c: Comp, lines: np.ndarray | None) -> bool:
    """Whether a removed paper line passes within a fifth of ``c``'s height (3 px at least) of its box."""
    return lines is not None and lines_near(lines, c["bbox"], max(3, _height(c) // 5))


def _with_small_parts(row: list[Comp], comps: list[Comp], ref: float) -> list[Comp]:
    """The row plus the smaller pieces inside its band (a broken stroke, a 1's serif)."""
    l, t, r, b = comps_box(row)
    m = 0.3 * ref
    extra = [
        c
        for c in comps
        if c not in row
        and c["bbox"][0] >= l - m
        and c["bbox"][2] <= r + m
        and c["bbox"][1] >= t - m
        and c["bbox"][3] <= b + m
    ]
    return sorted(row + extra, key=lambda c: c["bbox"][0])


def row_crop(an: Analysis, row: list[Comp]) -> RowCrop:
    """``row`` cut out of the picture at full resolution as the reader's 32-px-tall input."""
    from scipy import ndimage as ndi

    box, v = cut_out(an, row, margin=2)  # v: float32 [bh, bw] 0..1
    H, W = an.pixels.shape[:2]
    on = v > 0.05 * float(v.max()) if v.size else v
    if not v.size or not on.any():
        raise ImageError("no digit found after background removal; try a photo with more contrast")
    ys, xs = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    v = tight(v)
    ink = (box[0] + int(xs[0]), box[1] + int(ys[0]), box[0] + int(xs[-1]) + 1, box[1] + int(ys[-1]) + 1)
    f = INK_HEIGHT / v.shape[0]
    width = stroke_width(v, 0.5) * f
    if 0 < width < MIN_STROKE:
        k = int(round((MIN_STROKE + 0.4 - width) / f)) + 1
        v = ndi.maximum_filter(v, size=k)
    w = max(1, round(v.shape[1] * f))
    small = np.asarray(
        Image.fromarray(v.astype(np.float32), mode="F").resize(
            (w, INK_HEIGHT), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
    )
    return RowCrop(to_reader_crop(np.clip(small, 0, None)), ink, f, (W, H))


def to_reader_crop(ink: np.ndarray) -> np.ndarray:
    """Ink [24, w] (any scale) -> the reader's input: float32 [32, W] 0..1, peak 1, the ink at rows
    4..27 and PAD columns in, W the next multiple of 4."""
    w = ink.shape[1]
    out = np.zeros((HEIGHT, -(-(w + 2 * PAD) // 4) * 4), np.float32)
    out[INK_TOP : INK_TOP + INK_HEIGHT, PAD : PAD + w] = ink / max(float(ink.max()), 1e-6)
    return out


def as_uint8(crop: np.ndarray) -> np.ndarray:
    """A reader crop (float 0..1) as stored and saved: uint8 0..255."""
    return np.clip(np.rint(crop * 255), 0, 255).astype(np.uint8)
