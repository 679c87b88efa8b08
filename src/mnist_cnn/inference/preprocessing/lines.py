"""Stage 3a, page structure: the thin straight lines of ruled and squared paper.

A small Hough transform restricted to near-horizontal slants (:func:`horizontal_lines`, run on the
transpose for vertical lines) takes the strongest line, checks that it is thin and long, removes it
and looks again. The lines are taken out of the ink map, except where a stroke continues on both
sides of them (:func:`line_mask`). Pictures that cannot hold a line long enough (a 28x28 digit, a
small scan whose ink spans too little) skip the search: the common case pays nothing for the rare one.
"""

from __future__ import annotations

import numpy as np

from mnist_cnn.inference.preprocessing import opencv
from mnist_cnn.inference.preprocessing.params import DEFAULT, LineRule, Params


def line_mask(on: np.ndarray, min_len: float, p: Params = DEFAULT) -> np.ndarray:
    """Pixels of the thin straight lines in ``on`` (bool [h, w]): near-horizontal ones, and near-vertical
    ones found the same way on the transpose. Where a stroke crosses a line (ink other than lines
    continues on both sides of it), the line's pixels stay: they are the stroke's too."""
    rule = p.paper_line
    hor = _paper_lines(horizontal_lines(on, min_len, rule, p, paper=True), p)
    ver = _paper_lines(horizontal_lines(on.T, min_len, rule, p, paper=True), p).T
    rest = on & ~hor & ~ver
    reach = p.line_max_thick + 3
    return (hor & ~between(rest, hor, reach)) | (ver & ~between(rest.T, ver.T, reach).T)


def _paper_lines(lines: np.ndarray, p: Params) -> np.ndarray:
    """``lines`` (near-horizontal, bool [h, w]), or none of them if it is a single line across less
    than ``p.lone_line_span`` of the picture: ruled and squared paper repeat their lines, a form's
    baseline runs across the page, but a thin pen's straight stroke (a 1, a 4's stem, a 2's base)
    is one short line, and it is the digit."""
    from scipy import ndimage as ndi

    if not lines.any():
        return lines
    _, n = ndi.label(ndi.binary_dilation(lines, np.ones((3, 15), bool)))
    cols = np.flatnonzero(lines.any(0))
    if n > 1 or cols[-1] - cols[0] + 1 >= p.lone_line_span * lines.shape[1]:
        return lines
    return np.zeros_like(lines)


def between(rest: np.ndarray, line: np.ndarray, reach: int) -> np.ndarray:
    """Pixels of ``line`` with ``rest`` ink within ``reach`` px above and below (one column either side)."""
    from scipy import ndimage as ndi

    ink = ndi.binary_dilation(rest, np.ones((1, 3), bool))
    c = np.concatenate([np.zeros((reach + 1, ink.shape[1]), np.int32), np.cumsum(ink, 0, dtype=np.int32)])
    h = ink.shape[0]
    y = np.arange(h) + reach + 1  # row y's cumulative count sits at c[y + reach + 1]
    above = c[y - 1] - c[y - 1 - reach]
    below = c[np.minimum(y + reach, h + reach)] - c[y]
    return line & (above > 0) & (below > 0)


def horizontal_lines(
    on: np.ndarray, min_len: float, rule: LineRule, p: Params = DEFAULT, paper: bool = False
) -> np.ndarray:
    """Near-horizontal lines (bool [h, w]), :func:`_hough_lines`; with ``paper``, only what
    :func:`_paper_only` keeps of them."""
    out = np.zeros_like(on)
    ys, xs = np.nonzero(on)
    found = _hough_lines(on, ys, xs, min_len, rule, p)
    for idx in _paper_only(found, xs, on.shape[1], p) if paper else found:
        out[ys[idx], xs[idx]] = True
    return out


def _paper_only(found: list[np.ndarray], xs: np.ndarray, w: int, p: Params) -> list[np.ndarray]:
    """Of the lines found (each as its pixels' indices), the paper's: where a line's band holds more
    than ``p.line_stroke`` x the lines' typical thickness, a stroke runs along it there (a 1 beside a
    squared line, whose band took both), and those pixels stay ink. Paper repeats its lines: with
    fewer than three (a page's edge, a stroke), there is no typical thickness to go by."""
    if len(found) < 3:
        return found
    per_col = [np.bincount(xs[idx], minlength=w) for idx in found]
    typical = float(np.median([np.median(c[c > 0]) for c in per_col]))
    out = []
    for idx, c in zip(found, per_col, strict=True):
        thin = np.count_nonzero((c > 0) & (c <= 1.5 * typical)) / np.count_nonzero(c)
        out.append(idx[c[xs[idx]] <= p.line_stroke * typical] if thin >= 0.4 else idx)
    return out


def _hough_lines(
    on: np.ndarray, ys: np.ndarray, xs: np.ndarray, min_len: float, rule: LineRule, p: Params
) -> list[np.ndarray]:
    """Near-horizontal lines of ``on`` (its ink at ``ys``, ``xs``): a Hough transform restricted to
    small slants (ink counted along each sheared row of each slant), taking the strongest line,
    checking that it is thin and long, and removing its pixels from the counts until no line is
    left. Each line as its pixels (indices into ``ys``, ``xs``)."""
    h, w = on.shape
    found: list[np.ndarray] = []
    # a line is a run of at least this many columns: ink spanning fewer (a 28x28 digit, a form's
    # small box) holds none, and the search is skipped
    if ys.size < min_len or xs.max() - xs.min() + 1 < max(min_len, rule.min_px):
        return found
    if not _thin_line_possible(on, min_len, rule):
        return found
    offs, counts = _slant_counts(ys, xs, (h, w), rule.max_thick + 2, rule.turn, p)
    n = counts.shape[1]
    alive = np.ones(ys.size, bool)
    blocked = np.zeros_like(counts, dtype=bool)
    c3 = np.zeros_like(counts)
    changed = True
    for _ in range(200):  # at most this many lines (squared paper has a few dozen)
        if changed:  # counts within 1 px of each row: a line slightly off the slant grid still adds up
            c3 = counts + np.roll(counts, 1, 1) + np.roll(counts, -1, 1)
            c3[blocked] = 0
            changed = False
        s, peak = (int(v) for v in np.unravel_index(int(np.argmax(c3)), c3.shape))
        if c3[s, peak] < min_len:
            break
        first = max(0, peak - 1)
        o = first + int(np.argmax(counts[s, first : peak + 2]))  # the peak row of the three
        lo, hi = _band(counts[s], o)
        done = (slice(max(0, s - 4), s + 5), slice(max(0, lo - 2), hi + 3))
        blocked[done] = True  # this peak, done either way
        c3[done] = 0
        if hi - lo + 1 > rule.max_thick:  # thicker than a line: a pen stroke
            continue
        lo, hi = lo - 1, hi + 1  # with the anti-aliased fringe
        sel = alive & (offs[s] >= lo) & (offs[s] <= hi)
        segs = _runs(xs[sel], w, min_len=max(min_len, rule.min_px, rule.per_thick * (hi - lo - 1)))
        if not segs.any():
            continue
        take = sel & segs[xs]
        if rule.straight and hi - lo - 1 > rule.straight * take.sum() / segs.sum() + 1:
            continue
        found.append(np.flatnonzero(take))
        counts -= _row_counts(offs[:, take], n)  # its pixels no longer count towards other lines
        alive &= ~take
        changed = True
    return found


def _thin_line_possible(on: np.ndarray, min_len: float, rule: LineRule) -> bool:
    """Whether ``on`` has enough *thin* ink to hold a line: pixels in vertical runs shorter than a
    line's thickness (an opening keeps the rest). A line's count along its row must reach ``min_len``;
    with under half of that in thin ink, strokes crossing it would have to supply the rest. Bold
    strokes of a scan or a canvas drawing fail this at once, for the cost of one OpenCV opening."""
    cv2 = opencv.cv2()
    m = on.astype(np.uint8)
    k = (rule.max_thick + 3) | 1  # odd: OpenCV's opening with an even kernel shifts the result by a pixel
    thin = m > cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((k, 1), np.uint8))
    return bool(np.count_nonzero(thin) >= min_len / 2)


def _slant_counts(
    ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], margin: int, turn: float, p: Params
) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets [S, N] of the pixels (ys, xs) of an [h, w] picture along each searched slant
    (padded so none is negative, with ``margin`` px to spare), and the ink count [S, n] of each
    sheared row. The slants: within ``p.line_angle`` of the horizontal, widened towards the strongest
    line's slant when the page is turned by up to ``turn`` degrees more."""
    h, w = shape
    angle = p.line_angle
    angles = np.arange(-angle - turn, angle + turn + 1e-6, p.line_step)
    pad = int(np.ceil(w / 2 * np.tan(np.radians(angles[-1])))) + margin
    n = h + 2 * pad

    def shear(a: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        # int32: [S, N] is every slant x every inked pixel (a squared page: ~50k), half of int64's memory
        return np.rint(y[None, :] - np.tan(np.radians(a))[:, None] * (x - w / 2)[None, :]).astype(np.int32) + pad

    if turn:  # the strongest line's slant, from every 4th inked pixel (the full count costs 2x as much)
        probe = shear(angles, ys[::4], xs[::4])
        strongest = angles[int(np.argmax(_row_counts(probe, n).max(axis=1)))]
        low, high = min(-angle, strongest - angle), max(angle, strongest + angle)
        angles = angles[(angles >= low) & (angles <= high)]
    offs = shear(angles, ys, xs)
    return offs, _row_counts(offs, n)


def _row_counts(offs: np.ndarray, n: int) -> np.ndarray:
    """int64 [S, n]: how many of the pixels fall in each of the ``n`` sheared rows of each slant, given
    their row offsets ``offs`` [S, N] (one bincount over all slants: S calls cost S times the overhead)."""
    s = offs.shape[0]
    flat = (offs + (np.arange(s, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=s * n).reshape(s, n)


def _band(row: np.ndarray, o: int) -> tuple[int, int]:
    """Rows (lo, hi) around peak ``o`` with at least half its count: the line's core (a stroke along
    the line adds less), or the whole width of a stroke running in the line's direction."""
    floor = 0.5 * row[o]
    left = np.flatnonzero(row[:o] < floor)  # the band ends where the count first falls below the floor
    right = np.flatnonzero(row[o + 1 :] < floor)
    lo = int(left[-1]) + 1 if left.size else 0
    hi = o + int(right[0]) if right.size else len(row) - 1
    return lo, hi


def _runs(x: np.ndarray, w: int, min_len: float, gap: int = 4) -> np.ndarray:
    """bool [w]: columns covered by runs of ``x`` (column indices) at least ``min_len`` long, gaps of
    up to ``gap`` px bridged (a faint or crossed stretch of the line).

    The bridging is a binary closing with a ``2 * gap + 1`` window and nothing beyond the picture's
    edges (a gap within ``gap`` px of an edge stays open), plus ``x``'s own columns; done with
    cumulative sums, as it runs once per candidate line."""
    occ = np.zeros(w, np.int32)
    occ[x] = 1
    k = 2 * gap + 1
    cs = np.concatenate([[0], np.cumsum(occ)])
    i = np.arange(w)
    dilated = (cs[np.minimum(w, i + gap + 1)] - cs[np.maximum(0, i - gap)]) > 0
    cd = np.concatenate([[0], np.cumsum(dilated)])
    inside = (i >= gap) & (i < w - gap)
    eroded = np.zeros(w, bool)
    eroded[inside] = (cd[i[inside] + gap + 1] - cd[i[inside] - gap]) == k
    closed = np.concatenate([[False], eroded | (occ > 0), [False]])
    edges = np.flatnonzero(closed[1:] != closed[:-1])  # run starts and ends, alternating
    out = np.zeros(w, bool)
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start >= min_len:
            out[start:stop] = True
    return out
