"""Stage 3b, page structure: a box printed around the digit (a form's field, a cell of a comb).

Equally thin straight lines along at least three sides of the digit's components' box are a frame
(:func:`frame_mask`; a side hidden in a stroke along it counts); its pixels are taken out of the ink
map, except where a stroke crosses, touches or follows them.
"""

from __future__ import annotations

import numpy as np

from mnist_cnn.errors import ImageError
from mnist_cnn.inference.preprocessing.ink import Analysis
from mnist_cnn.inference.preprocessing.lines import horizontal_lines
from mnist_cnn.inference.preprocessing.params import DEFAULT, Params
from mnist_cnn.inference.preprocessing.segment import comps_box, digit_components


def frame_mask(an: Analysis) -> np.ndarray:
    """The pixels of a box drawn around the digit (a form's field, or a cell of a comb), or nothing:
    equally thin straight lines across the digit's components' box on at least three sides of its
    main stroke (sides already removed as long lines count), and a comb's dividers between them.
    The lines are looked for in the strong ink (their cores: the components' faint fringes would make
    a printed line look thick), then, if no box is found, in all of the digit's ink: a box printed
    fainter than the handwriting lies below the strong ink's threshold but joins the digit."""
    out = np.zeros(an.labels.shape, bool)
    if not an.comps:
        return out
    try:
        comps = digit_components(an)
    except ImageError:
        return out
    l, t, r, b = comps_box(comps)
    if min(r - l, b - t) < 8:
        return out
    digit = np.isin(an.labels[t:b, l:r], [c["label"] for c in comps])
    ink = an.ink[t:b, l:r]
    strong = digit & (ink > an.threshold)
    frame = _frame_in(strong, digit, an, comps, (l, t, r, b))
    if not frame.any() and _faint_runs(digit, strong):  # a faint box: most of it below the threshold
        frame = _frame_in(digit, digit, an, comps, (l, t, r, b))
        frame &= bool(frame.any()) and float(np.median(ink[frame])) < an.threshold
    out[t:b, l:r] = frame
    return out


def _faint_runs(digit: np.ndarray, strong: np.ndarray) -> bool:
    """Whether the digit's faint ink (bool [h, w] ``digit`` less ``strong``) away from its strong ink
    runs along a third of a row or a column, as a faint box's side would: the strokes' own fringe lies
    beside them, and the search is skipped (it costs a Hough transform)."""
    from scipy import ndimage as ndi

    faint = digit & ~ndi.binary_dilation(strong, np.ones((5, 5), bool))
    h, w = faint.shape
    return bool(faint.sum(1).max() >= w / 3 or faint.sum(0).max() >= h / 3)


def _frame_in(
    mask: np.ndarray, digit: np.ndarray, an: Analysis, comps: list[dict], box: tuple[int, int, int, int]
) -> np.ndarray:
    """:func:`frame_mask`'s box in ``mask`` (the ink of the components' ``box``, bool [h, w]), as
    pixels of ``digit`` (all of the components' pixels there), or nothing."""
    l, t, r, b = box
    cw, ch = r - l, b - t
    # a printed box may be bolder than paper lines (Params.frame_line): the four sides are evidence enough;
    # sides removed before as long lines, just outside the box (crossings went with them), count
    p, rule = an.p, an.p.frame_line
    known = [False] * 4 if an.lines is None else _known_sides(an.lines, box, p)
    ml, mt, mr, mb = comps[0]["bbox"]  # the main component: the frame's sides lie on either side of it
    centre = ((mt + mb) / 2 - t, (ml + mr) / 2 - l)
    hor, new = _frame_lines(horizontal_lines(mask, 0.6 * cw, rule, p), cw, centre[0], known[:2])
    ver_t, new_lr = _frame_lines(horizontal_lines(mask.T, 0.6 * ch, rule, p), ch, centre[1], known[2:])
    ver, new = ver_t.T, new + new_lr
    # a frame has (nearly) all four sides, at least two of them found here (one straight stroke of
    # a thin-pen digit between two ruled lines is not a frame)
    found = sum(new)
    if found >= 2:  # a side that a stroke touches is one thick band: found at the box's very edge
        new = _edge_sides(mask, hor, ver, new, known, p)
        new = _hidden_sides(mask, hor, ver, new, known, centre, p)
    sides = sum(a or b for a, b in zip(new, known))
    if found >= 2 and sides >= 3:
        frame, ink = _frame_pixels(digit, hor, ver, p), an.ink[t:b, l:r]
        # three sides around (nearly) nothing are a digit of straight strokes (a thin pen's 3 like
        # a ']'), not a box: a form's box has the digit inside it, or all four sides when empty
        if sides == 4 or ink[mask & ~frame].sum() >= p.frame_inside * ink[frame].sum():
            return frame
    return np.zeros_like(mask)


def _edge_sides(
    mask: np.ndarray, hor: np.ndarray, ver: np.ndarray, new: list[bool], known: list[bool], p: Params = DEFAULT
) -> list[bool]:
    """Sides (top, bottom, left, right) of a box, two of whose sides ``new`` were found as lines, that
    run along the box's outer edge (``mask`` [h, w] is the box's ink): a stroke touching a printed side
    makes it one band too bold to pass for a line, but the side still starts at the edge end to end.
    Its pixels, the first few inked ones from the edge in each column (row), as thick as the found
    sides, are marked in ``hor``/``ver`` in place (a stroke touching it keeps the rest of its ink)."""
    thick = (hor | ver).sum() / max(1, sum(new)) / max(mask.shape)  # the found sides' mean thickness, px
    k, t = int(np.ceil(2 * thick)) + 2, int(np.ceil(thick)) + 1
    out = list(new)
    views = [  # each side seen as the top rows of a view of the arrays
        (lambda a: a, hor),
        (lambda a: a[::-1], hor),
        (lambda a: a.T, ver),
        (lambda a: a.T[::-1], ver),
    ]
    for i, (view, lines) in enumerate(views):
        if new[i] or known[i]:
            continue
        m = view(mask)
        hit = m[:k].any(axis=0)  # [w] columns inked near the edge
        if hit.mean() < p.edge_cover:
            continue
        first = np.argmax(m[:k], axis=0)  # [w] the first inked row from the edge, per column
        rows = np.arange(m.shape[0])[:, None]
        side = hit & (rows >= first) & (rows < first + t)  # [h, w] in the view
        view(lines)[...] |= side & m
        out[i] = True
    return out


def _hidden_sides(
    mask: np.ndarray,
    hor: np.ndarray,
    ver: np.ndarray,
    new: list[bool],
    known: list[bool],
    centre: tuple[float, float],
    p: Params = DEFAULT,
) -> list[bool]:
    """Sides (top, bottom, left, right) of a box hidden in a stroke that runs along them (a 6 whose
    back lies on the box's left side): where the two sides across them were found (top and bottom,
    or left and right, on either side of ``centre``, the main stroke's middle, (row, column)), both
    end at the hidden side, and are thin (at most half ``p.line_max_thick``, a printed box's). It is
    taken when ink (``mask``) runs along at least ``p.edge_cover`` of its course between them; its
    pixels are marked in ``hor``/``ver`` in place (the stroke along it keeps its ink: :func:`_frame_pixels`)."""
    out = list(new)
    for lines, across, m, c, pair in ((hor, ver, mask, centre[0], (2, 3)), (ver.T, hor.T, mask.T, centre[1], (0, 1))):
        split = int(np.clip(round(c), 1, lines.shape[0] - 1))
        first, second = lines[:split], lines[split:]
        if not first.any() or not second.any():
            continue
        fc, sc = np.flatnonzero(first.any(0)), np.flatnonzero(second.any(0))
        y0, y1 = int(np.flatnonzero(first.any(1)).max()) + 1, split + int(np.flatnonzero(second.any(1)).min())
        thick = max(1, round(int(first.sum()) / fc.size))  # px across the found sides
        if thick > p.line_max_thick // 2:  # bold: a ring's flanks (its arc would pass for the side)
            continue
        for side, a, b in ((pair[0], fc[0], sc[0]), (pair[1], fc[-1], sc[-1])):
            if out[side] or known[side] or y1 - y0 < 3 or abs(int(a) - int(b)) > 2 + 0.05 * m.shape[1]:
                continue
            x = round((int(a) + int(b)) / 2)
            xs = slice(x, x + thick + 1) if side == pair[0] else slice(max(0, x - thick), x + 1)
            band = m[y0:y1, xs]
            if band.any(1).mean() >= p.edge_cover:
                across[y0:y1, xs] |= band
                out[side] = True
    return out


def _known_sides(lines: np.ndarray, box: tuple[int, int, int, int], p: Params) -> list[bool]:
    """(top, bottom, left, right): whether a line of ``lines`` (bool [h, w]) runs along that side of ``box``."""
    l, t, r, b = box
    m = p.line_max_thick + 2
    old = lines[max(0, t - m) : b + m, max(0, l - m) : r + m]
    return _ends(old, m) + _ends(old.T, m)


def _ends(a: np.ndarray, m: int) -> list[bool]:
    """Whether lines in ``a`` cover most of its width within its first / last rows (``m`` + 15%)."""
    k = m + int(0.15 * max(0, a.shape[0] - 2 * m))
    return [bool(a[:k].any(0).mean() >= 0.6), bool(a[-k:].any(0).mean() >= 0.6)]


def _frame_lines(hor: np.ndarray, span: int, centre: float, known: list[bool]) -> tuple[np.ndarray, list[bool]]:
    """Of the near-horizontal lines ``hor`` [h, w] found in a digit's box, the ones that can be its
    frame -> (their pixels, [any above ``centre`` (the digit's middle row), any below]): lines across
    the whole box (a 7's bar does not span it; a comb's dividers, seen on the transpose, do) and the
    outermost line near the top and the bottom (a tilted box's sides span less), all about equally
    thin (a pen stroke across the box is bolder than the printed lines). On a side already ``known``
    (removed before as a long line) a line is a stroke."""
    from scipy import ndimage as ndi

    h = hor.shape[0]
    # one label per line: pixels a few columns apart along a line (a crossed stretch) belong together
    labels, _ = ndi.label(ndi.binary_dilation(hor, np.ones((1, 9), bool)), np.ones((3, 3), bool))
    labels *= hor
    lines = []  # (label, first row, last row + 1, columns spanned, thickness)
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None:
            length = sl[1].stop - sl[1].start
            lines.append((k, sl[0].start, sl[0].stop, length, int((labels[sl] == k).sum()) / length))
    top = [ln for ln in lines if ln[1] < 0.15 * h and not known[0]]
    bottom = [ln for ln in lines if ln[2] > 0.85 * h and not known[1]]
    outer = ([min(top, key=lambda ln: ln[1])] if top else []) + ([max(bottom, key=lambda ln: ln[2])] if bottom else [])
    stroke = [known[0] and ln[2] <= centre or known[1] and ln[1] >= centre for ln in lines]
    full = [ln for ln, s in zip(lines, stroke) if ln[3] >= 0.85 * span and not s]
    cand = full + [ln for ln in outer if ln not in full]
    if not cand:
        return np.zeros_like(hor), [False, False]
    thin = min(ln[4] for ln in cand)
    keep = [ln for ln in cand if ln[4] <= 1.25 * thin + 1.5]
    sides = [any(ln[2] <= centre for ln in keep), any(ln[1] >= centre for ln in keep)]
    return np.isin(labels, [ln[0] for ln in keep]), sides


def _frame_pixels(mask: np.ndarray, hor: np.ndarray, ver: np.ndarray, p: Params) -> np.ndarray:
    """The frame's lines widened by 2 px across (their faint fringes, within the components'
    ``mask``), where the ink across them is no thicker than the line: a stroke that crosses a side,
    touches it or runs along it keeps its pixels (a 0 whose side lies on the box's edge stays a 0)."""
    from scipy import ndimage as ndi

    lines = hor | ver
    hor = ndi.binary_dilation(hor, np.ones((5, 1), bool)) & mask
    ver = ndi.binary_dilation(ver, np.ones((1, 5), bool)) & mask
    slack = p.frame_slack
    return (hor & _bare_runs(mask, lines, slack)) | (ver & _bare_runs(mask.T, lines.T, slack).T)


def _bare_runs(mask: np.ndarray, lines: np.ndarray, slack: int) -> np.ndarray:
    """Pixels of ``mask``'s vertical runs (bool [h, w], one column's consecutive pixels) that touch
    ``lines`` and hold at most ``slack`` px more than their line pixels: a printed line seen across,
    not a stroke that crosses or follows it."""
    h, w = mask.shape
    starts = mask & ~np.vstack([np.zeros((1, w), bool), mask[:-1]])
    run = np.where(mask, np.cumsum(starts, 0) + np.arange(w) * (h + 1), 0)  # [h, w] one id per run
    length = np.bincount(run.ravel(), minlength=(h + 1) * w)
    on_line = np.bincount(run[lines & mask], minlength=(h + 1) * w)
    bare = (on_line > 0) & (length <= on_line + slack)
    bare[0] = False  # id 0: not ink
    return bare[run]
