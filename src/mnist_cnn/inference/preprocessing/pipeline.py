"""The pipeline: decode -> ink and background -> page structure -> segmentation -> render.

:func:`analyse` finds the ink in two passes. A coarse block background finds the digit well enough to
measure its stroke width; then a morphological background (closing for dark ink, opening for bright
ink) with a window ~3 stroke widths removes everything wider than a stroke (shadows, gradients, paper
edges) while keeping the strokes, and the ink is found again on it. Paper lines are searched once, on
the first pass; a printed box around the digit is searched on each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.errors import ImageError
from mnist_cnn.inference.preprocessing.decode import FULL_SIZE, MAX_PIXELS, load_image
from mnist_cnn.inference.preprocessing.frames import frame_mask
from mnist_cnn.inference.preprocessing.ink import (
    Analysis,
    background,
    components,
    floors,
    ink_map,
    morph_background,
    otsu,
    polarity,
    pool,
    robust_sigma,
    sample,
)
from mnist_cnn.inference.preprocessing.lines import line_mask
from mnist_cnn.inference.preprocessing.params import DEFAULT, Params
from mnist_cnn.inference.preprocessing.render import render, stroke_width
from mnist_cnn.inference.preprocessing.result import PreprocessResult
from mnist_cnn.inference.preprocessing.rows import RowCrop, find_rows, in_shade, row_crop
from mnist_cnn.inference.preprocessing.segment import along_border, digit_components, segment_digits


def preprocess(image: Any, max_pixels: int = MAX_PIXELS, params: Params = DEFAULT) -> PreprocessResult:
    """A PIL image, encoded bytes, a path or an array with one digit -> MNIST-like 28x28.

    Raises :class:`ImageError` when the image cannot be decoded or shows no digit."""
    img = load_image(image, max_pixels, params.jpeg_min_side)
    an = analyse(img, params)
    return _in_input_pixels(render(an, digit_components(an)), img)


def preprocess_multi(image: Any, max_pixels: int = MAX_PIXELS, params: Params = DEFAULT) -> list[PreprocessResult]:
    """A row of several digits (e.g. "2026") -> one 28x28 per digit, left to right."""
    img = load_image(image, max_pixels, params.jpeg_min_side)
    an = analyse(img, params)
    return [_in_input_pixels(render(an, group), img) for group in segment_digits(an)]


def preprocess_rows(image: Any, max_pixels: int = MAX_PIXELS, params: Params = DEFAULT) -> list[RowCrop]:
    """The rows of handwriting (numbers) in an image, top to bottom, as the number reader's input;
    boxes in the input's pixels."""
    img = _enlarged(load_image(image, max_pixels, params.jpeg_min_side), params.row_min_side)
    an = in_shade(analyse(img, params))
    crops = [row_crop(an, row) for row in find_rows(an)]
    full = img.info.get(FULL_SIZE)
    if full is not None:  # decoded reduced: boxes and scales in the file's pixels
        for c in crops:
            c.box = _box_in_input(c.box, img, full)
            c.scale /= full[0] / img.width
            c.size = (int(full[0]), int(full[1]))
    return crops


def _enlarged(img: Image.Image, min_side: int) -> Image.Image:
    """A picture whose longer side is under ``min_side`` px, enlarged (bicubic) by the whole factor
    that brings it there; ``info[FULL_SIZE]`` keeps its size, so boxes come back in its pixels. At
    ~90 px wide a row of digits is a band as thin as a ruled line, and the line finder took its
    strokes out ("35503" read "8"); the line and filter sizes, in pixels, hold again when enlarged."""
    w, h = img.size
    if max(w, h) >= min_side or FULL_SIZE in img.info:
        return img
    k = -(-min_side // max(w, h))
    out = img.resize((w * k, h * k), Image.Resampling.BICUBIC)
    out.info[FULL_SIZE] = (w, h)
    return out


def _in_input_pixels(result: PreprocessResult, img: Image.Image) -> PreprocessResult:
    """The box, size and stroke filter in the input's pixels when the JPEG was decoded reduced."""
    full = img.info.get(FULL_SIZE)
    if full is None:
        return result
    result.bbox = _box_in_input(result.bbox, img, full)
    result.size = (int(full[0]), int(full[1]))
    result.stroke_filter = int(round(result.stroke_filter * full[0] / img.width))
    return result


def _box_in_input(box: tuple[int, int, int, int], img: Image.Image, full: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box of the reduced decode ``img`` in the pixels of the file (``full`` = its size)."""
    sx, sy = full[0] / img.width, full[1] / img.height
    left, top, right, bottom = box
    return (
        int(left * sx),
        int(top * sy),
        min(full[0], int(np.ceil(right * sx))),
        min(full[1], int(np.ceil(bottom * sy))),
    )


@dataclass
class _Picture:
    """A decoded image at full and at analysis resolution, and its ink's polarity."""

    full: np.ndarray  # uint8 [H, W, C] full resolution (C = 1 or 3), a view of the decoded image
    small: np.ndarray  # float32 [h, w, C] the analysis copy, reduced towards the ink
    factor: int  # full-res px per analysis px
    sign: float  # +1: ink brighter than the background; -1: darker
    p: Params


def analyse(img: Image.Image, p: Params = DEFAULT) -> Analysis:
    """Background, polarity, threshold and components of a decoded ``L``/``RGB`` image (two passes)."""
    pic = _picture(img, p)
    # a percentile towards the paper side ignores ink that covers up to ~3/4 of a block
    first = find_ink(pic, background(pic.small, percentile=25.0 if pic.sign > 0 else 75.0))
    digit = digit_components(first)
    width = stroke_width(np.isin(first.labels, [c["label"] for c in digit]) & (first.ink > first.threshold))
    size = int(max(5, 3 * width)) | 1  # odd window, comfortably wider than a stroke
    if size >= min(pic.small.shape[:2]) // 2:
        return first  # strokes as wide as the picture: the block background is the better model
    # the lines found on the first pass are the same lines: not searched for again
    return find_ink(pic, morph_background(pic.small, pic.sign, size, p), first.lines)


def _picture(img: Image.Image, p: Params) -> _Picture:
    """The analysis copy (longer side <= ``p.analysis_side``, integer reduction) and the polarity."""
    full = np.asarray(img)  # uint8, no copy: a 48 MP photo stays 144 MB, not 576
    full = full[..., None] if full.ndim == 2 else full  # [H, W, C]
    factor = max(1, -(-max(img.size) // p.analysis_side))  # ceil: integer reduction
    small = np.asarray(img.reduce(factor) if factor > 1 else img, dtype=np.float32)
    small = small[..., None] if small.ndim == 2 else small  # [h, w, C] box-reduced
    sign = polarity(small, background(small, percentile=50.0), p)
    if factor > 1:  # reduce towards the ink instead: a thin pen line keeps its full contrast
        small = pool(full, factor, np.maximum if sign > 0 else np.minimum).astype(np.float32)
    return _Picture(full, small, factor, sign, p)


def find_ink(pic: _Picture, bg: np.ndarray, lines: np.ndarray | None = None) -> Analysis:
    """Ink map, noise, hysteresis thresholds and components against background ``bg`` [h, w, C]; ruled
    or squared paper lines and long frame edges (found here unless ``lines`` is given) are not ink."""
    p = pic.p
    ink = ink_map(pic.small, bg, pic.sign)
    ink -= np.median(sample(ink))  # the typical background pixel is 0 ink
    noise = robust_sigma(ink)
    if lines is None:
        lines = line_mask(ink > floors(noise, p)[0], p.line_min_span * min(ink.shape), p)
    ink[lines] = np.minimum(ink[lines], 0.0)
    peak = _peak(ink)
    if not _stands_out(peak, noise, p):  # faint, or buried in noise: denoised, it may stand out
        ink, noise, peak = _denoised(ink, lines, p)
    if not _stands_out(peak, noise, p):
        raise ImageError(
            f"no digit found: the image is blank or too faint (ink {round(peak)} grey levels above a "
            f"background with noise {noise:.1f}); use a darker pen or more light"
        )
    an = _segment(pic, bg, ink, noise, peak, lines)
    frame = frame_mask(an)
    if frame.any():  # a form's box around the digit: out too, and the digit found again without it
        ink[frame] = np.minimum(ink[frame], 0.0)
        an = _segment(pic, bg, ink, noise, peak, lines | frame)
    return an


def _peak(ink: np.ndarray) -> float:
    """The ink's 20th strongest pixel: the contrast of real strokes, not of a few hot pixels."""
    flat = ink.ravel()
    return float(np.partition(flat, -20)[-20]) if flat.size > 20 else float(flat.max())


def _denoised(ink: np.ndarray, lines: np.ndarray, p: Params) -> tuple[np.ndarray, float, float]:
    """A noisy picture (low light: the sensor's gain turned up) smoothed at a growing scale until its
    strokes stand out of the noise, which is measured without the paper lines (a dense grid is not
    noise): (ink, noise, peak) of the first scale that shows ink, else of the last tried."""
    from scipy import ndimage as ndi

    for sigma in (1.0, 2.0):
        smooth = ndi.gaussian_filter(ink, sigma)
        smooth[lines] = np.minimum(smooth[lines], 0.0)
        noise, peak = robust_sigma(np.where(lines, 0.0, smooth)), _peak(smooth)
        if _stands_out(peak, noise, p):
            break
    return smooth, noise, peak


def _stands_out(peak: float, noise: float, p: Params) -> bool:
    """Whether ink this strong is a digit: clear of the minimum contrast and of the noise."""
    return peak >= max(p.min_contrast, 2 * p.noise_k * noise)


def _without_halo(ink: np.ndarray, lines: np.ndarray, threshold: float, reach: int, within: np.ndarray) -> np.ndarray:
    """``ink`` less its faint pixels (below ``threshold``) in ``within`` that lie within ``reach`` px of
    a removed line: the line's blurred fringe, which hysteresis chains from digit to digit along the
    line (on squared paper a whole number became one component running along the border, and was
    dropped as the page's edge). Strokes keep their cores."""
    from scipy import ndimage as ndi

    near = ndi.binary_dilation(lines, np.ones((2 * reach + 1,) * 2, bool)) & ~lines & within
    return np.where(near & (ink < threshold), np.minimum(ink, 0.0), ink)


def _segment(pic: _Picture, bg: np.ndarray, ink: np.ndarray, noise: float, peak: float, lines: np.ndarray) -> Analysis:
    """Hysteresis thresholds, components and the stroke level of an ink map."""
    p = pic.p
    least, least_low = floors(noise, p)
    threshold = max(otsu(ink[ink > 0], peak), least)
    low = max(0.5 * threshold, least_low)  # hysteresis: faint parts of strokes
    labels, comps = components(ink, low, threshold)
    glued = [c["label"] for c in comps if along_border(c["bbox"], ink.shape)] if p.line_halo and lines.any() else []
    if glued:  # a removed line's faint fringe may chain the digits to the border: only there, it goes
        ink = _without_halo(ink, lines, threshold, p.line_halo, np.isin(labels, glued))
        labels, comps = components(ink, low, threshold)
    strong = ink > threshold
    level = float(np.percentile(ink[strong], 75)) if strong.any() else peak
    return Analysis(
        pic.full, float(pic.factor), bg, pic.sign, ink, noise, threshold, low, level, labels, comps, lines, p
    )
