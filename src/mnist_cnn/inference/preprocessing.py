"""Turn a user's image (photo, scan, screenshot, canvas drawing) into an MNIST-like 28x28 digit.

MNIST digits are bright strokes on a black background, the digit's bounding box scaled so its
longer side is 20 px (aspect kept, anti-aliased) and pasted into 28x28 so that its centre of mass
sits at the centre. Real images differ in every respect, so :func:`preprocess` does, in order:

1. **decode** safely (:func:`decode_image`): pixel-count cap checked from the header before
   decoding (decompression bombs), truncated/corrupt files refused, first frame of an
   animation, 16-bit and CMYK converted, EXIF orientation applied, transparency composited on
   a contrasting background;
2. **greyscale + polarity** on an *analysis* copy (longer side <= 512 px): the strokes are the
   strongest departures from a block-median background in any colour channel; whichever
   direction (darker or brighter) clearly dominates is the ink, else a light border means dark
   ink. The analysis copy is then pooled towards the ink (min for dark ink) so a thin pen line
   keeps its contrast, and the "ink" map is the largest per-channel departure from the
   background in the ink's direction: coloured ink on coloured paper shows as well as black on white;
3. **background suppression**, two passes: a block-percentile background finds the digit well
   enough to measure its stroke width; then a grey closing/opening ~3 stroke widths wide (which
   keeps shadows, gradients and paper blotches but not strokes) is the background. Threshold:
   Otsu's on the ink map, never below 4 robust sigmas of the background (paper texture, JPEG
   noise); hysteresis down to half of it keeps faint stretches of a stroke. The digit is the
   strongest component grown by every component near it (broken or dotted strokes); specks
   elsewhere stay out. No significant ink -> :class:`~mnist_cnn.errors.ImageError`
   ("no digit found"), not a guess;
   **a digit on a page**: ruled and squared paper lines (thin, straight, across the picture, up to
   12 degrees off the axes) are found with a small Hough transform and taken out of the ink map,
   except where a stroke continues on both sides of them; a box drawn around the digit (a form's
   field: straight lines along three or four sides of the digit's box) is taken out the same way;
   the noise is the median of local block noise (a textured table in part of the picture does not
   raise it); a border of two kinds (page and table) leaves the polarity to the middle of the
   picture; components cut by the picture's border count little and never join the digit, and
   the digit is preferred near the centre;
4. **crop at full resolution** to the digit's bounding box (crops larger than 1000 px are then
   box-reduced to 1000); ink mapped to 0..1 from just above the noise to the stroke level, so
   strokes keep anti-aliased edges like MNIST's; strokes far thinner than MNIST's at the final
   scale are thickened (a fine pen on a big photo would otherwise vanish), far bolder ones thinned;
5. **scale** the longer side to 20 px with Lanczos (aspect kept), **paste** into 28x28 and
   shift by whole pixels so the centre of mass lands where MNIST's does (row 14, column 14).

A real MNIST digit passes through nearly unchanged (median correlation 0.9999 on test digits).
numpy, Pillow and scipy.ndimage only.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from mnist_cnn.errors import ImageError, first_line

MAX_FILE_BYTES = 200 * 2**20  # largest image file read: a 48 MP PNG fits; a 2 GB (sparse) file is refused unread
MAX_PIXELS = 50_000_000  # default decode cap (width*height): a 48 MP phone photo fits, a bomb does not
ANALYSIS_SIDE = 512  # longer side of the copy used to find the digit (background, threshold, components)
WORK_SIDE = 1000  # the full-resolution crop is box-reduced to at most this (still 50x the output)
OUT_SIZE, BOX = 28, 20  # MNIST: 28x28 frame, digit's longer side 20 px
COM_TARGET = (14.0, 14.0)  # mean centre of mass (row, col) of MNIST test digits, in pixel indices
# stroke width (2*area/perimeter of the >=128 mask) of MNIST test digits at the 28x28 scale:
# 5th percentile 2.05, median 2.66, 95th percentile 4.1. Thinner than THIN: thickened to the
# median; thicker than THICK (a bold marker, beyond MNIST's range): thinned to THICK_TARGET.
STROKE_THIN, STROKE_TARGET, STROKE_THICK, THICK_TARGET = 2.0, 2.6, 6.0, 4.5
MIN_CONTRAST = 20.0  # grey levels (of 255) of ink above the background needed to call it a digit
NOISE_K = 4.0  # threshold >= NOISE_K robust sigmas of the background
EDGE_SLACK = 2 * MIN_CONTRAST  # grey levels the smoothed background may depart from the morphological one
# ... and beyond it towards the paper at most the lowest ink threshold: a band of a dark table beside
# a page edge then never becomes ink on its own (with EDGE_SLACK it did, a line joining the digit),
# while a stroke inside a hard shadow keeps a little of the lift. Chosen on validation renderings
# (generator seed 1; 0 / 10 / 20 / 40: page_edge 98.0 / 98.0 / 97.3 / 92.0%, shadow 97.3 / 98.7 / 98.0 / 96.0%)
SPILL = MIN_CONTRAST / 2
# the paper's brightness: this percentile of the border's (chosen on validation renderings, seed 1:
# the median took a shadow or the table beyond a page edge for the paper, 15 of 600 wrong polarities)
PAPER_PERCENTILE = 90.0
# contrast / noise -> the calibration's grey-level scale: 2x (chosen on validation renderings, seed 1,
# two folds, against 4x, 8x and the plain contrast: the photo-like set's held-out ECE 0.019 instead of
# 0.050, notebook_all 0.048 instead of 0.043; a dim but clean digit is no longer made unsure)
SIGNAL_GAIN = 2.0


@dataclass
class PreprocessResult:
    """The 28x28 digit and what was decided on the way (for --save-preprocessed, debugging, the web page)."""

    image: np.ndarray  # uint8 [28, 28], bright digit on black, MNIST-like
    inverted: bool  # True: the input was dark ink on a light background (polarity flipped)
    bbox: tuple[int, int, int, int]  # digit box (left, top, right, bottom) in input pixels, after EXIF rotation
    size: tuple[int, int]  # input (width, height) after EXIF rotation
    background: float  # median background level, grey levels 0..255 (input polarity)
    contrast: float  # typical ink level above the background, grey levels
    noise: float  # robust sigma of the background, grey levels
    threshold: float  # ink threshold used for the digit mask, grey levels
    stroke_width: float  # estimated stroke width at the 28x28 scale before correction
    stroke_filter: int  # >0: strokes thickened by a max filter of this size (full-res px); <0: thinned
    components: int  # connected components kept as the digit
    shift: tuple[int, int] = (0, 0)  # (rows, cols) the 20-px digit was moved from the frame centre by

    @property
    def signal(self) -> float:
        """How clearly the ink stands out of the paper's noise, on the grey-level scale the calibration's
        contrast power takes: ``SIGNAL_GAIN * contrast / noise`` (noise at least half a grey level), at
        most 255. Ink 64 or more grey levels from clean paper stays at 255; a hairline lost in the
        blotches of a textured page or a coarse JPEG falls low."""
        return float(min(255.0, SIGNAL_GAIN * self.contrast / max(self.noise, 0.5)))

    def summary(self) -> dict[str, Any]:
        """The diagnostics as a JSON-friendly dict (without the image)."""
        return {
            "inverted": self.inverted,
            "bbox": list(self.bbox),
            "size": list(self.size),
            "background": round(self.background, 1),
            "contrast": round(self.contrast, 1),
            "noise": round(self.noise, 2),
            "threshold": round(self.threshold, 1),
            "stroke_width": round(self.stroke_width, 2),
            "stroke_filter": self.stroke_filter,
            "components": self.components,
            "shift": list(self.shift),
            "signal": round(self.signal, 1),
        }


# --------------------------------------------------------------------------- decoding


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Encoded image bytes -> PIL image in mode ``L`` or ``RGB`` (8 bit), upright, first frame.

    Raises :class:`ImageError` (one line) for empty, unrecognised, truncated or corrupt files and
    for images with more than ``max_pixels`` pixels (checked from the header, before decoding)."""
    if not data:
        raise ImageError("the image is empty (0 bytes); send a PNG or JPEG of a digit")
    from PIL import UnidentifiedImageError

    # our cap is checked from the header, before any pixel is decoded; Pillow's own bomb error
    # (above ~179 MP) can only come first when max_pixels is set higher than that
    try:
        img = Image.open(io.BytesIO(bytes(data)))
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format; send a PNG, JPEG, GIF, BMP, TIFF or WebP") from None
    except Image.DecompressionBombError:
        raise ImageError(f"the image has too many pixels (limit {max_pixels:,}); send a smaller image") from None
    except Exception as exc:  # noqa: BLE001 - plugins raise SyntaxError, ValueError, struct.error ...
        raise ImageError(f"cannot read the image header ({_why(exc)}); the file is corrupt") from None
    w, h = img.size
    if w < 1 or h < 1 or w * h > max_pixels:
        raise ImageError(
            f"the image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,} "
            "(decompression bomb guard); send a smaller image"
        )
    try:
        img.seek(0)  # animated GIF/PNG/WebP: the first frame
        img.load()
        return standard_mode(upright(img))
    except Exception as exc:  # noqa: BLE001 - truncated data is an OSError, broken streams anything
        raise ImageError(f"the image data is truncated or corrupt ({_why(exc)}); re-save or re-send it") from None


def _why(exc: BaseException) -> str:
    return first_line(exc)[:120]


def upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phone photos are stored sideways with a 'rotate' tag)."""
    try:
        return ImageOps.exif_transpose(img) or img
    except Exception:  # noqa: BLE001 - a malformed EXIF block should not lose the image
        return img


def standard_mode(img: Image.Image) -> Image.Image:
    """Any mode -> ``L`` (grey) or ``RGB``, 8 bits; transparency composited on a contrasting colour."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _flatten_alpha(img.convert("RGBA"))
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """16/32-bit integer or float grey -> uint8: 16-bit scales by 1/257, float 0..1 by 255."""
    a = a.astype(np.float64)
    top = float(np.nanmax(a)) if a.size else 0.0
    if top > 255:
        a = a / 257.0  # 16-bit range
    elif 0 < top <= 1.0:
        a = a * 255.0  # float 0..1
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def _flatten_alpha(rgba: Image.Image) -> Image.Image:
    """Composite on white, unless the visible pixels are light (white strokes on a transparent
    canvas would vanish on white): then on black. Fully opaque images are just dropped to RGB."""
    a = np.asarray(rgba)
    alpha = a[..., 3]
    if alpha.min() == 255:
        return rgba.convert("RGB")
    visible = alpha > 127
    light = visible.any() and float(a[..., :3][visible].mean()) > 127
    bg = Image.new("RGBA", rgba.size, (0, 0, 0, 255) if light else (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def load_image(image: Any, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A PIL image, encoded bytes, a file path or a uint8 array -> PIL image in ``L``/``RGB``."""
    if isinstance(image, Image.Image):
        w, h = image.size
        if w * h == 0:
            raise ImageError(f"the image is {w}x{h} pixels: nothing to read; send an image of a digit")
        if w * h > max_pixels:
            raise ImageError(f"the image is {w}x{h} = {w * h:,} pixels; the limit is {max_pixels:,}")
        return standard_mode(upright(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image), max_pixels)
    if isinstance(image, (str, os.PathLike)):
        return decode_image(read_image_file(image), max_pixels)
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ImageError(f"array of shape {image.shape} has no pixels; pass an image of a digit")
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (3, 4)):
            return load_image(Image.fromarray(_to_uint8(image) if image.dtype != np.uint8 else image), max_pixels)
        raise ImageError(f"array of shape {image.shape}: expected [H, W] grey or [H, W, 3|4] colour")
    raise ImageError(f"cannot preprocess a {type(image).__name__}; pass a PIL image, bytes, a path or an array")


def read_image_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of an image file, refusing one larger than ``max_bytes`` before reading it."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise ImageError(
                    f"{p}: the file is {size / 2**20:,.0f} MiB; image files over "
                    f"{max_bytes / 2**20:,.0f} MiB are refused (is it really a photo?)"
                )
            return fh.read(max_bytes)
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a folder, expected an image file") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or exc})") from None


# --------------------------------------------------------------------------- analysis (find the ink)


@dataclass
class Analysis:
    """The image, its background model and the ink mask at analysis resolution."""

    pixels: np.ndarray  # uint8 [H, W, C] full resolution (C = 1 or 3)
    scale: float  # full-res px per analysis px (the integer reduction factor)
    bg: np.ndarray  # float32 [h, w, C] background estimate at analysis resolution
    sign: float  # +1: ink brighter than background; -1: darker (inverted)
    ink: np.ndarray  # float32 [h, w] ink strength (>= 0 is towards the ink side), grey levels
    noise: float
    threshold: float  # strong ink: a component needs some pixel above it
    low: float  # weak ink: components extend down to it (hysteresis)
    level: float  # stroke ink level: 75th percentile of the strong ink (chosen on validation digits)
    labels: np.ndarray  # int32 [h, w] connected components of ink > threshold (0 = background)
    comps: list[dict[str, Any]] = field(default_factory=list)  # per label: area, mass, bbox (analysis px)
    lines: np.ndarray | None = None  # bool [h, w]: paper lines and frames removed from the ink map


def analyse(img: Image.Image) -> Analysis:
    """Background, polarity, threshold and components of a decoded ``L``/``RGB`` image.

    Two passes: a coarse block background finds the digit well enough to measure its stroke
    width; then a morphological background (closing for dark ink, opening for bright ink) with
    a window ~3 stroke widths removes everything wider than a stroke (shadows, gradients, paper
    edges) while keeping the strokes, and the ink is found again on it."""
    full = np.asarray(img)  # uint8, no copy: a 48 MP photo stays 144 MB, not 576
    full = full[..., None] if full.ndim == 2 else full  # [H, W, C]
    factor = max(1, -(-max(img.size) // ANALYSIS_SIDE))  # ceil: integer reduction
    small = np.asarray(img.reduce(factor) if factor > 1 else img, dtype=np.float32)
    small = small[..., None] if small.ndim == 2 else small  # [h, w, C] box-reduced
    sign = polarity(small, background(small, percentile=50.0))
    if factor > 1:  # reduce towards the ink instead: a thin pen line keeps its full contrast
        small = pool(full, factor, np.maximum if sign > 0 else np.minimum).astype(np.float32)
    # a percentile towards the paper side ignores ink that covers up to ~3/4 of a block
    first = find_ink(full, small, factor, background(small, percentile=25.0 if sign > 0 else 75.0), sign)
    digit = digit_components(first)
    width = stroke_width(np.isin(first.labels, [c["label"] for c in digit]) & (first.ink > first.threshold))
    size = int(max(5, 3 * width)) | 1  # odd window, comfortably wider than a stroke
    if size >= min(small.shape[:2]) // 2:
        return first  # strokes as wide as the picture: the block background is the better model
    # the lines found on the first pass are the same lines: not searched for again
    return find_ink(full, small, factor, morph_background(small, sign, size), sign, first.lines)


def pool(a: np.ndarray, f: int, fn: Any) -> np.ndarray:
    """``fn`` (np.minimum / np.maximum) over ``f`` x ``f`` blocks of ``a`` [H, W, C] -> [ceil(H/f), ceil(W/f), C]."""
    H, W, C = a.shape
    h, w = -(-H // f), -(-W // f)
    padded = np.pad(a, ((0, h * f - H), (0, w * f - W), (0, 0)), mode="edge")
    rows = fn.reduce(padded.reshape(h, f, w * f, C), axis=1)  # [h, W', C]: one axis at a time is much faster
    return fn.reduce(rows.reshape(h, w, f, C), axis=2)


def find_ink(
    full: np.ndarray, small: np.ndarray, factor: int, bg: np.ndarray, sign: float, lines: np.ndarray | None = None
) -> Analysis:
    """Ink map, noise, hysteresis thresholds and components against background ``bg``; ruled or
    squared paper lines and long frame edges (found here unless ``lines`` is given) are not ink."""
    ink = ink_map(small, bg, sign)
    ink -= np.median(_sample(ink))  # the typical background pixel is 0 ink
    noise = robust_sigma(ink)
    if lines is None:
        lines = line_mask(ink > max(NOISE_K * noise, MIN_CONTRAST / 2), LINE_MIN_SPAN * min(ink.shape))
    ink[lines] = np.minimum(ink[lines], 0.0)
    flat = ink.ravel()
    peak = float(np.partition(flat, -20)[-20]) if flat.size > 20 else float(flat.max())  # 20th strongest pixel
    if peak < max(MIN_CONTRAST, 2 * NOISE_K * noise):
        raise ImageError(
            f"no digit found: the image is blank or too faint (ink {round(peak)} grey levels above a "
            f"background with noise {noise:.1f}); use a darker pen or more light"
        )
    an = _segment(full, factor, bg, sign, ink, noise, peak, lines)
    frame = frame_mask(an)
    if frame.any():  # a form's box around the digit: out too, and the digit found again without it
        ink[frame] = np.minimum(ink[frame], 0.0)
        an = _segment(full, factor, bg, sign, ink, noise, peak, lines | frame)
    return an


def _segment(
    full: np.ndarray,
    factor: int,
    bg: np.ndarray,
    sign: float,
    ink: np.ndarray,
    noise: float,
    peak: float,
    lines: np.ndarray,
) -> Analysis:
    """Hysteresis thresholds, components and the stroke level of an ink map."""
    threshold = max(otsu(ink[ink > 0], peak), NOISE_K * noise, MIN_CONTRAST / 2)
    low = max(0.5 * threshold, 0.75 * NOISE_K * noise, MIN_CONTRAST / 4)  # hysteresis: faint parts of strokes
    labels, comps = components(ink, low, threshold)
    strong = ink > threshold
    level = float(np.percentile(ink[strong], 75)) if strong.any() else peak
    return Analysis(full, float(factor), bg, sign, ink, noise, threshold, low, level, labels, comps, lines)


def frame_mask(an: Analysis) -> np.ndarray:
    """The pixels of a box drawn around the digit (a form's field, or a cell of a comb), or nothing:
    equally thin straight lines across the digit's components' box on at least three sides of its
    main stroke (sides already removed as long lines count), and a comb's dividers between them."""
    out = np.zeros(an.labels.shape, bool)
    if not an.comps:
        return out
    try:
        comps = digit_components(an)
    except ImageError:
        return out
    l, t, r, b = (min(c["bbox"][k] for c in comps) if k < 2 else max(c["bbox"][k] for c in comps) for k in range(4))
    cw, ch = r - l, b - t
    if min(cw, ch) < 8:
        return out
    # the lines' cores (strong ink): the components' faint fringes would make a printed line look thick
    digit = np.isin(an.labels[t:b, l:r], [c["label"] for c in comps])
    mask = digit & (an.ink[t:b, l:r] > an.threshold)
    # a printed box may be bolder than paper lines (FRAME_LINE): the four sides are evidence enough;
    # sides removed before as long lines, just outside the box (crossings went with them), count
    known = [False] * 4 if an.lines is None else _known_sides(an.lines, (l, t, r, b))
    ml, mt, mr, mb = comps[0]["bbox"]  # the main component: the frame's sides lie on either side of it
    hor, new = _frame_lines(_horizontal_lines(mask, 0.6 * cw, FRAME_LINE), cw, (mt + mb) / 2 - t, known[:2])
    ver_t, new_lr = _frame_lines(_horizontal_lines(mask.T, 0.6 * ch, FRAME_LINE), ch, (ml + mr) / 2 - l, known[2:])
    ver, new = ver_t.T, new + new_lr
    # a frame has (nearly) all four sides, at least two of them found here (one straight stroke of
    # a thin-pen digit between two ruled lines is not a frame)
    found = sum(new)
    if found >= 2:  # a side that a stroke touches is one thick band: found at the box's very edge
        new = _edge_sides(mask, hor, ver, new, known)
    sides = sum(a or b for a, b in zip(new, known))
    if found >= 2 and sides >= 3:
        frame, ink = _frame_pixels(digit, hor, ver), an.ink[t:b, l:r]
        # three sides around (nearly) nothing are a digit of straight strokes (a thin pen's 3 like
        # a ']'), not a box: a form's box has the digit inside it, or all four sides when empty
        if sides == 4 or ink[mask & ~frame].sum() >= FRAME_INSIDE * ink[frame].sum():
            out[t:b, l:r] = frame
    return out


FRAME_INSIDE = 0.1  # ink inside a three-sided frame, as a fraction of the frame's


EDGE_COVER = 0.9  # a side hidden in a stroke's band: the box's outer edge inked along this much of it


def _edge_sides(mask: np.ndarray, hor: np.ndarray, ver: np.ndarray, new: list[bool], known: list[bool]) -> list[bool]:
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
        if hit.mean() < EDGE_COVER:
            continue
        first = np.argmax(m[:k], axis=0)  # [w] the first inked row from the edge, per column
        rows = np.arange(m.shape[0])[:, None]
        side = hit & (rows >= first) & (rows < first + t)  # [h, w] in the view
        view(lines)[...] |= side & m
        out[i] = True
    return out


def _known_sides(lines: np.ndarray, box: tuple[int, int, int, int]) -> list[bool]:
    """(top, bottom, left, right): whether a line of ``lines`` (bool [h, w]) runs along that side of ``box``."""
    l, t, r, b = box
    m = LINE_MAX_THICK + 2
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


def _frame_pixels(mask: np.ndarray, hor: np.ndarray, ver: np.ndarray) -> np.ndarray:
    """The frame's lines widened by 2 px across (their faint fringes, within the components'
    ``mask``), less the stretches where a stroke crosses them."""
    from scipy import ndimage as ndi

    hor = ndi.binary_dilation(hor, np.ones((5, 1), bool)) & mask
    ver = ndi.binary_dilation(ver, np.ones((1, 5), bool)) & mask
    rest = mask & ~hor & ~ver
    return (hor & ~_between(rest, hor)) | (ver & ~_between(rest.T, ver.T).T)


def morph_background(a: np.ndarray, sign: float, size: int) -> np.ndarray:
    """Per channel: grey closing (dark ink) or opening (bright ink) with a ``size`` square removes
    strokes narrower than ``size`` and keeps the rest, shadow edges included; then smoothed."""
    from scipy import ndimage as ndi

    morph = ndi.grey_opening if sign > 0 else ndi.grey_closing
    # smoothed, but hardly beyond the morphological background towards the paper (SPILL): smoothing
    # across a page edge would make a band of the dark table next to it look like ink (a line along
    # the edge that joined the digit); towards the ink it may depart by EDGE_SLACK
    lo, hi = (-SPILL, EDGE_SLACK) if sign > 0 else (-EDGE_SLACK, SPILL)
    out = np.empty_like(a)
    for k in range(a.shape[2]):
        m = morph(a[..., k], size=(size, size), mode="nearest")
        smooth = ndi.uniform_filter(m, size, mode="nearest")
        out[..., k] = np.clip(smooth, m + lo, m + hi)
    return out


def background(a: np.ndarray, percentile: float) -> np.ndarray:
    """Smooth background ``[h, w, C]``: a percentile per block on an ~8x8 grid, median-filtered
    over 3x3 blocks (a block full of ink is outvoted by its neighbours), bilinearly upsampled.
    Small images (< 48 px) get one value per channel: the median of the border."""
    from scipy import ndimage as ndi

    h, w, c = a.shape
    if max(h, w) < 48:
        return np.broadcast_to(np.median(border(a), axis=0), a.shape).astype(np.float32)
    step = max(6, -(-max(h, w) // 8))
    gy, gx = -(-h // step), -(-w // step)
    padded = np.pad(a, ((0, gy * step - h), (0, gx * step - w), (0, 0)), mode="symmetric")
    blocks = padded.reshape(gy, step, gx, step, c).transpose(0, 2, 1, 3, 4).reshape(gy, gx, step * step, c)
    grid = np.percentile(blocks, percentile, axis=2).astype(np.float32)  # [gy, gx, C]
    out = np.empty_like(a)
    for k in range(c):
        g = ndi.median_filter(grid[..., k], size=3, mode="nearest")
        # pixel coordinate p sits at grid coordinate p / step (block i spans [i, i + 1)): interpolate
        up = Image.fromarray(g, mode="F").resize((w, h), Image.Resampling.BILINEAR, box=(0, 0, w / step, h / step))
        out[..., k] = np.asarray(up)
    return out


def border(a: np.ndarray) -> np.ndarray:
    """The pixels ``[n, C]`` of a frame ~4% wide (at least 1 px) around ``a`` ``[h, w, C]``."""
    h, w, c = a.shape
    t = max(1, min(h, w) // 25)
    return np.concatenate(
        [a[:t].reshape(-1, c), a[-t:].reshape(-1, c), a[t:-t, :t].reshape(-1, c), a[t:-t, -t:].reshape(-1, c)]
    )


def polarity(a: np.ndarray, bg: np.ndarray) -> float:
    """+1 if the ink is brighter than the background, -1 if darker.

    The strokes are the strongest departures from the local (block-median) background, in any
    channel. If the k-th strongest bright departure and the k-th strongest dark one differ
    clearly, the larger wins; else (a thick digit filling the frame, a hard shadow's edge or the
    table beyond a page's edge depart both ways) the paper decides: light paper = dark ink. The
    paper is the brightest tenth of the border (a shadow or the table may cover most of it; ink
    that light covers a tenth of a dark border only where a digit fills the frame)."""
    bright = channel_max(a - bg).ravel()
    dark = channel_max(bg - a).ravel()
    k = max(10, bright.size // 5000)
    if bright.size > 2 * k:
        hi, lo = float(np.partition(bright, -k)[-k]), float(np.partition(dark, -k)[-k])
        if abs(hi - lo) > 0.5 * max(hi, lo, 1e-6):
            return 1.0 if hi > lo else -1.0
    paper = float(np.percentile(border(a).mean(axis=1), PAPER_PERCENTILE))
    return -1.0 if paper >= 128 else 1.0


def channel_max(a: np.ndarray) -> np.ndarray:
    """``a.max(axis=2)`` for [h, w, C], as C-1 elementwise maxima: numpy's reduction over a short last
    axis is several times slower."""
    out = a[..., 0].copy()
    for k in range(1, a.shape[2]):
        np.maximum(out, a[..., k], out=out)
    return out


def ink_map(a: np.ndarray, bg: np.ndarray, sign: float) -> np.ndarray:
    """How far each pixel departs from the background towards the ink side, in any channel ``[h, w]``."""
    return channel_max(sign * (a - bg))


def _sample(x: np.ndarray, n: int = 1 << 16) -> np.ndarray:
    """At most about ``n`` evenly strided values of ``x`` (medians of a 512x512 map need no more)."""
    flat = x.ravel()
    return flat[:: max(1, flat.size // n)]


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 * median absolute deviation: the background's noise, ignoring the sparse ink. On a
    big map, the median of the blocks' own values: a textured table or a page edge in part
    of the photo does not raise the paper's noise (which sets the threshold)."""
    if x.ndim == 2 and min(x.shape) >= 64:
        step = min(x.shape) // 8
        h, w = (x.shape[0] // step) * step, (x.shape[1] // step) * step
        blocks = x[:h, :w].reshape(h // step, step, w // step, step).transpose(0, 2, 1, 3).reshape(-1, step * step)
        med = np.median(blocks, axis=1, keepdims=True)
        return float(1.4826 * np.median(np.median(np.abs(blocks - med), axis=1)))
    x = _sample(x)
    med = np.median(x)
    return float(1.4826 * np.median(np.abs(x - med)))


def otsu(values: np.ndarray, top: float, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` in [0, top]: maximises the between-class variance."""
    if values.size < 2 or top <= 0:
        return 0.0
    hist, edges = np.histogram(np.clip(values, 0, top), bins=bins, range=(0, top))
    p = hist.astype(np.float64) / hist.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(p)
    m0 = np.cumsum(p * centres)
    mt = m0[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mt * w0 - m0) ** 2 / (w0 * (1 - w0))
    between = np.nan_to_num(between[:-1])
    return float(edges[1:][int(np.argmax(between))])


def components(ink: np.ndarray, low: float, high: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """8-connected components of ``ink > low`` that reach ``ink > high`` somewhere (hysteresis
    thresholding: a faint stretch of a stroke stays attached), with their area, ink mass and bbox."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(ink > low, structure=np.ones((3, 3), bool))
    comps = []
    if n:
        idx = np.arange(1, n + 1)
        strong = np.zeros(n + 1, bool)
        strong[labels[ink > high]] = True  # components reaching the high threshold
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        masses = ndi.sum_labels(ink, labels, idx)
        for k, sl in enumerate(ndi.find_objects(labels), start=1):
            if strong[k]:
                comps.append(
                    {
                        "label": k,
                        "area": int(areas[k - 1]),
                        "mass": float(masses[k - 1]),
                        "bbox": (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop),
                    }
                )  # l, t, r, b
    return labels.astype(np.int32), comps


def _touches_border(bbox: tuple[int, int, int, int], shape: tuple[int, ...]) -> bool:
    left, top, right, bottom = bbox
    return left == 0 or top == 0 or right == shape[1] or bottom == shape[0]


def _along_border(bbox: tuple[int, int, int, int], shape: tuple[int, ...]) -> int:
    """How far a component's box runs along the picture's border where it touches it (0: it does not)."""
    left, top, right, bottom = bbox
    along = 0
    if left == 0 or right == shape[1]:
        along = bottom - top
    if top == 0 or bottom == shape[0]:
        along = max(along, right - left)
    return along


# a component's claim to be the digit grows with the square root of its ink, not the ink itself: a
# thin ballpoint digit has a tenth of a marker's ink. Validation renderings (seed 1, 300 each),
# power 1 / 0.7 / 0.5 / 0.3: notebook_all 256 / 261 / 261 / 261 of 300 (faint digits beside a
# neighbour's digit cut by the border, a page edge or the table); the other conditions equal
MASS_POW = 0.5
ASIDE = 0.1  # ... times this for things touching the border and a comb's dividers


def _main_component(an: Analysis) -> dict[str, Any]:
    """The digit's main stroke: the most ink, border-touching blobs (shadow edges, paper edges) discounted."""

    h, w = an.labels.shape

    def score(c: dict[str, Any]) -> float:
        # a page edge, the table or a neighbour's digit cut by the photo's border are rarely the
        # subject, and the subject is rarely in a corner
        left, top, right, bottom = c["bbox"]
        off = np.hypot((left + right) / w - 1, (top + bottom) / h - 1) / np.sqrt(2)  # 0 centre .. 1 corner
        # a comb's divider likewise (validation renderings, seed 1: form_box 291 -> 292 of 300,
        # notebook_all 247 -> 248; leaving dividers out of the digit's pieces too lost 9 form_box digits)
        aside = _touches_border(c["bbox"], an.labels.shape) or _divider(c, an.lines)
        return c["mass"] ** MASS_POW * (ASIDE if aside else 1.0) * (1 - 0.6 * off)

    if not an.comps:  # everything was paper lines or a form's empty box
        raise ImageError("no digit found: only lines or an empty box; photograph the digit itself")
    best = max(an.comps, key=score)
    if best["area"] < 4:
        raise ImageError("no digit found: only specks of ink; photograph the digit larger and sharper")
    return best


def _divider(c: dict[str, Any], lines: np.ndarray | None) -> bool:
    """Whether ``c`` is a printed divider: a straight bar (thin, filling its box) running from one
    removed line to another, like the dividers of a comb of boxes between its top and bottom lines."""
    if lines is None:
        return False
    l, t, r, b = c["bbox"]
    if b - t < r - l:  # a horizontal bar: the same test on the transpose
        return _divider({**c, "bbox": (t, l, b, r)}, lines.T)
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
    rest = [c for c in an.comps if c is not main and _along_border(c["bbox"], an.labels.shape) <= 0.5 * size]
    box = main["bbox"]
    grew = True
    while grew and rest:
        margin = CHAIN_REACH * max(box[2] - box[0], box[3] - box[1]) + 1
        # a speck (a dot, a scribble's end) joins only when it is much closer: it would add
        # nothing to the digit's shape but stretch its box
        near = [c for c in rest if _near(box, c["bbox"], _reach(c, main, an.lines, margin))]
        grew = bool(near)
        for c in near:
            keep.append(c)
            rest.remove(c)
            box = _union(box, c["bbox"])
    return keep


CHAIN_REACH = 0.25  # pieces of the digit join from this fraction of its box's size
SPECK_MASS = 0.05  # a component with less ink than this fraction of the main one's is a speck
SPECK_REACH = 0.4  # specks join the digit from this fraction of the usual distance
# ... other pieces that no removed line runs beside, from this fraction. Validation renderings
# (seed 1, 300 each), 1.0 / 0.8 / 0.6 / 0.4: notebook_all 248 / 249 / 251 / 252, stray_marks 298 /
# - / 300 / 300; form_box, all, thin_pen, ballpoint equal. 0.6, not 0.4: real writers lift the pen
# (a 5's bar, a 4's top) further apart than MNIST's digits, which the renderings are made of
FREE_REACH = 0.6


def _reach(c: dict[str, Any], main: dict[str, Any], lines: np.ndarray | None, margin: float) -> float:
    """How far (px) ``c`` may be from the digit's box and still join it; ``margin``: the full reach."""
    if c["mass"] < SPECK_MASS * main["mass"]:
        return SPECK_REACH * margin
    l, t, r, b = c["bbox"]
    if lines is not None and lines[max(0, t - 2) : b + 2, max(0, l - 2) : r + 2].any():
        return margin  # a piece that a removed line (a box's side) may have cut off the digit
    return FREE_REACH * margin + 1  # + 1 px: a 28x28 5 whose bar is 3 px from its body (MNIST test 1940)


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
            gl = min(g["bbox"][0] for g in groups[-1])
            gr = max(g["bbox"][2] for g in groups[-1])
            overlap = min(gr, c["bbox"][2]) - max(gl, c["bbox"][0])
            if overlap > 0.3 * min(gr - gl, c["bbox"][2] - c["bbox"][0]):
                groups[-1].append(c)
                continue
        groups.append([c])
    return groups


# --------------------------------------------------------------------------- lines (ruled, squared paper; boxes)

LINE_ANGLE, LINE_STEP = 12.0, 0.5  # degrees: the slant a ruled line may have (roll, perspective); search step
# degrees a page may be turned further (a photo taken askew): the paper line search then also
# covers LINE_ANGLE around the strongest line's slant, not only around the horizontal (validation
# notebook pages at 20-35 degrees of perspective had far lines at 12-14 degrees, glued to the digit).
# Not for a form's box: within it, the strongest line may be a stroke (a 5's bar).
LINE_TURN = 15.0
LINE_MAX_THICK = 7  # analysis px: a ruled line or a form box is 1-7 px there; a pen stroke running along it is wider
LINE_MIN_SPAN = 0.4  # a ruled line runs across at least this fraction of the picture


class LineRule(NamedTuple):
    """What counts as a straight line: at most ``max_thick`` px thick, at least ``per_thick`` x its
    thickness and ``min_px`` long (and the caller's ``min_len``); if ``straight``, the band it lies in
    at most ``straight`` x its mean thickness + 1 px (a curved stroke spreads over a wider band).
    Slants up to LINE_ANGLE from the horizontal, or ``turn`` degrees more when the strongest line is
    turned that far (a page photographed askew)."""

    max_thick: int
    per_thick: float
    min_px: int
    straight: float = 0.0
    turn: float = 0.0


# ruled and squared paper over the whole picture: at least 12x as long as thick (a short thick bar
# is a stroke, e.g. a 7's top) and 24 px (a 28x28 digit's bars, up to 20 px, are never lines)
PAPER_LINE = LineRule(LINE_MAX_THICK, 12, 24, turn=LINE_TURN)
# a form's printed box, searched only around the digit, where each side must also span most of
# the box: it may be twice as bold, and a bold side of a narrow box (around a 1) is short for its
# thickness, so 8x its thickness is long enough; and straight: a thin pen's 7 has a straight bar,
# but its stem, bent a little, fills a band 2.6x as wide as the stroke (validation boxes: <= 1.6x)
FRAME_LINE = LineRule(2 * LINE_MAX_THICK, 8, 24, straight=1.5)


def line_mask(on: np.ndarray, min_len: float) -> np.ndarray:
    """Pixels of the thin straight lines in ``on`` (bool [h, w]): near-horizontal ones, and near-vertical
    ones found the same way on the transpose. Where a stroke crosses a line (ink other than lines
    continues on both sides of it), the line's pixels stay: they are the stroke's too."""
    hor, ver = _paper_lines(_horizontal_lines(on, min_len)), _paper_lines(_horizontal_lines(on.T, min_len)).T
    rest = on & ~hor & ~ver
    return (hor & ~_between(rest, hor)) | (ver & ~_between(rest.T, ver.T).T)


LONE_LINE_SPAN = 0.8  # a single line (no other parallel to it) must run across this much of the picture


def _paper_lines(lines: np.ndarray) -> np.ndarray:
    """``lines`` (near-horizontal, bool [h, w]), or none of them if it is a single line across less
    than :data:`LONE_LINE_SPAN` of the picture: ruled and squared paper repeat their lines, a form's
    baseline runs across the page, but a thin pen's straight stroke (a 1, a 4's stem, a 2's base)
    is one short line, and it is the digit."""
    from scipy import ndimage as ndi

    if not lines.any():
        return lines
    _, n = ndi.label(ndi.binary_dilation(lines, np.ones((3, 15), bool)))
    cols = np.flatnonzero(lines.any(0))
    if n > 1 or cols[-1] - cols[0] + 1 >= LONE_LINE_SPAN * lines.shape[1]:
        return lines
    return np.zeros_like(lines)


def _between(rest: np.ndarray, line: np.ndarray, reach: int = LINE_MAX_THICK + 3) -> np.ndarray:
    """Pixels of ``line`` with ``rest`` ink within ``reach`` px above and below (one column either side)."""
    from scipy import ndimage as ndi

    ink = ndi.binary_dilation(rest, np.ones((1, 3), bool))
    c = np.concatenate([np.zeros((reach + 1, ink.shape[1]), np.int32), np.cumsum(ink, 0, dtype=np.int32)])
    h = ink.shape[0]
    y = np.arange(h) + reach + 1  # row y's cumulative count sits at c[y + reach + 1]
    above = c[y - 1] - c[y - 1 - reach]
    below = c[np.minimum(y + reach, h + reach)] - c[y]
    return line & (above > 0) & (below > 0)


def _horizontal_lines(on: np.ndarray, min_len: float, rule: LineRule = PAPER_LINE) -> np.ndarray:
    """Near-horizontal lines: a Hough transform restricted to small slants (ink counted along each
    sheared row, one bincount per slant), taking the strongest line, checking that it is thin and
    long, and removing its pixels from the counts until no line is left."""
    h, w = on.shape
    out = np.zeros_like(on)
    ys, xs = np.nonzero(on)
    if ys.size < min_len:
        return out
    offs, counts = _slant_counts(ys, xs, h, w, rule.max_thick + 2, rule.turn)
    n = counts.shape[1]
    alive = np.ones(ys.size, bool)
    blocked = np.zeros_like(counts, dtype=bool)
    c3 = np.zeros_like(counts)
    changed = True
    for _ in range(200):  # at most this many lines (squared paper has a few dozen)
        if changed:  # counts within 1 px of each row: a line slightly off the slant grid still adds up
            c3 = counts + np.roll(counts, 1, 1) + np.roll(counts, -1, 1)
            changed = False
        c3[blocked] = 0
        s, peak = (int(v) for v in np.unravel_index(int(np.argmax(c3)), c3.shape))
        if c3[s, peak] < min_len:
            break
        first = max(0, peak - 1)
        o = first + int(np.argmax(counts[s, first : peak + 2]))  # the peak row of the three
        lo, hi = _band(counts[s], o)
        blocked[max(0, s - 4) : s + 5, max(0, lo - 2) : hi + 3] = True  # this peak, done either way
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
        out[ys[take], xs[take]] = True
        for k in range(len(offs)):  # its pixels no longer count towards other lines
            counts[k] -= np.bincount(offs[k][take], minlength=n)
        alive &= ~take
        changed = True
    return out


def _slant_counts(
    ys: np.ndarray, xs: np.ndarray, h: int, w: int, margin: int, turn: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row offsets [S, N] of the pixels (ys, xs) of an [h, w] picture along each searched slant
    (padded so none is negative, with ``margin`` px to spare), and the ink count [S, n] of each
    sheared row. The slants: within LINE_ANGLE of the horizontal, widened towards the strongest
    line's slant when the page is turned by up to ``turn`` degrees more."""
    angles = np.arange(-LINE_ANGLE - turn, LINE_ANGLE + turn + 1e-6, LINE_STEP)
    pad = int(np.ceil(w / 2 * np.tan(np.radians(angles[-1])))) + margin
    n = h + 2 * pad

    def shear(a: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        # int32: [S, N] is every slant x every inked pixel (a squared page: ~50k), half of int64's memory
        return np.rint(y[None, :] - np.tan(np.radians(a))[:, None] * (x - w / 2)[None, :]).astype(np.int32) + pad

    if turn:  # the strongest line's slant, from every 4th inked pixel (the full count costs 2x as much)
        probe = shear(angles, ys[::4], xs[::4])
        strongest = angles[int(np.argmax([np.bincount(o, minlength=n).max() for o in probe]))]
        low, high = min(-LINE_ANGLE, strongest - LINE_ANGLE), max(LINE_ANGLE, strongest + LINE_ANGLE)
        angles = angles[(angles >= low) & (angles <= high)]
    offs = shear(angles, ys, xs)
    return offs, np.stack([np.bincount(o, minlength=n) for o in offs]).astype(np.int64)  # [S, n]


def _band(row: np.ndarray, o: int) -> tuple[int, int]:
    """Rows (lo, hi) around peak ``o`` with at least half its count: the line's core (a stroke along
    the line adds less), or the whole width of a stroke running in the line's direction."""
    floor = 0.5 * row[o]
    lo = hi = o
    while lo > 0 and row[lo - 1] >= floor:
        lo -= 1
    while hi < len(row) - 1 and row[hi + 1] >= floor:
        hi += 1
    return lo, hi


def _runs(x: np.ndarray, w: int, min_len: float, gap: int = 4) -> np.ndarray:
    """bool [w]: columns covered by runs of ``x`` (column indices) at least ``min_len`` long, gaps of
    up to ``gap`` px bridged (a faint or crossed stretch of the line)."""
    from scipy import ndimage as ndi

    occ = np.zeros(w, bool)
    occ[x] = True
    labels, k = ndi.label(ndi.binary_closing(occ, np.ones(2 * gap + 1, bool), border_value=0) | occ)
    long = 1 + np.flatnonzero(np.bincount(labels.ravel(), minlength=k + 1)[1:] >= min_len)
    return np.isin(labels, long)


# --------------------------------------------------------------------------- render (crop, scale, centre)


def render(an: Analysis, comps: list[dict[str, Any]]) -> PreprocessResult:
    """Crop the chosen components at full resolution and make the 28x28 MNIST-like image."""
    from scipy import ndimage as ndi

    keep = np.isin(an.labels, [c["label"] for c in comps])  # [h, w] analysis mask of the digit
    keep = ndi.binary_dilation(keep, iterations=2)  # room for the anti-aliased stroke edges
    if an.lines is not None and an.lines.any():  # ... but not for the lines crossing them
        keep &= ~an.lines
    l = min(c["bbox"][0] for c in comps)
    t = min(c["bbox"][1] for c in comps)
    r = max(c["bbox"][2] for c in comps)
    b = max(c["bbox"][3] for c in comps)
    H, W = an.pixels.shape[:2]
    s = an.scale
    box = (
        max(0, int((l - 1) * s)),
        max(0, int((t - 1) * s)),
        min(W, int(np.ceil((r + 1) * s))),
        min(H, int(np.ceil((b + 1) * s))),
    )
    v = _soft_ink(an, box, keep)  # float32 [bh, bw] 0..1 at (up to) full resolution
    work_scale = 1.0  # full-res px per work px
    if max(v.shape) > WORK_SIDE:  # box-reduce huge crops: still >= 50x the final 20 px
        f = -(-max(v.shape) // WORK_SIDE)
        v = np.asarray(Image.fromarray(v, mode="F").reduce(f))
        work_scale = float(f)
    v = _tight(v)
    # MNIST's widths were measured at half its ink level: the same cut here, in v's 0..1 units
    lo = ink_floor(an)
    cut = float(np.clip((0.5 * an.level - lo) / max(an.level - lo, 1.0), 0.05, 0.95))
    width = stroke_width(v, cut) * BOX / max(v.shape)  # at the 28x28 scale
    v, filt = _fix_stroke(v, width)
    small = _scale_to_box(_tight(v))
    image, shift = _paste_centred(small)
    bbox_full = (box[0], box[1], box[2], box[3])
    return PreprocessResult(
        image=image,
        inverted=an.sign < 0,
        bbox=bbox_full,
        size=(W, H),
        background=float(np.median(an.bg.mean(axis=2))),
        contrast=an.level,
        noise=an.noise,
        threshold=an.threshold,
        stroke_width=width,
        stroke_filter=int(round(filt * work_scale)),
        components=len(comps),
        shift=shift,
    )


def _soft_ink(an: Analysis, box: tuple[int, int, int, int], keep: np.ndarray) -> np.ndarray:
    """Ink 0..1 of the full-resolution crop ``box``: background (upsampled from the analysis copy)
    removed, 0 at the noise floor, 1 at the typical stroke level; outside the digit's mask 0."""
    x0, y0, x1, y1 = box
    crop = an.pixels[y0:y1, x0:x1].astype(np.float32)  # [bh, bw, C]
    bh, bw = crop.shape[:2]
    s = an.scale
    h, w = an.ink.shape
    src = (x0 / s, y0 / s, min(w, x1 / s), min(h, y1 / s))  # the same box in analysis coordinates
    bg = np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(an.bg[..., k]), mode="F").resize(
                    (bw, bh), Image.Resampling.BILINEAR, box=src
                )
            )
            for k in range(crop.shape[2])
        ],
        axis=2,
    )
    ink = ink_map(crop, bg, an.sign)  # [bh, bw]
    m = np.asarray(Image.fromarray(keep.astype(np.uint8) * 255).resize((bw, bh), Image.Resampling.NEAREST, box=src)) > 0
    lo = ink_floor(an)
    hi = max(an.level, lo + 1.0)
    return (np.clip((ink - lo) / (hi - lo), 0.0, 1.0) * m).astype(np.float32)


def ink_floor(an: Analysis) -> float:
    """Ink below this is background (0) in the output: just above the noise, so the strokes keep
    their anti-aliased edges like MNIST's (the digit's mask already excludes the rest)."""
    return min(an.low, max(3.0 * an.noise, MIN_CONTRAST / 4))


def _tight(v: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """``v`` cropped to the box of its pixels above ``floor`` (of the max)."""
    on = v > floor * float(v.max())
    if not on.any():  # e.g. a faint 1-px stroke that stroke thinning removed
        raise ImageError("no digit found after background removal; try a photo with more contrast")
    rows, cols = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
    return v[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def stroke_width(v: np.ndarray, cut: float = 0.5) -> float:
    """Mean stroke width in pixels of ``v``'s mask (>= cut): 2 * area / boundary length, exact for
    long strokes of width >= 2 (a 1-px line reads as 2)."""
    from scipy import ndimage as ndi

    m = v >= cut
    area = int(m.sum())
    if area == 0:
        return 0.0
    edge = int((m & ~ndi.binary_erosion(m)).sum())
    return 2.0 * area / max(edge, 1)


def _fix_stroke(v: np.ndarray, width: float) -> tuple[np.ndarray, int]:
    """Thicken (max filter) strokes thinner than MNIST's 5th percentile to its median; thin (min
    filter) strokes far bolder than any in MNIST to its ~95th percentile. Returns (v, filter size)."""
    from scipy import ndimage as ndi

    if width <= 0 or STROKE_THIN <= width <= STROKE_THICK:
        return v, 0
    px_per_out = max(v.shape) / BOX  # work px per output px
    target = STROKE_TARGET if width < STROKE_THIN else THICK_TARGET
    k = int(round(abs(target - width) * px_per_out)) + 1  # a k-wide filter changes widths by k - 1
    if k < 2:
        return v, 0
    if width < STROKE_THIN:
        pad = np.pad(v, k)  # room to grow at the edges
        return ndi.maximum_filter(pad, size=k), k
    return ndi.minimum_filter(v, size=k), -k


def _scale_to_box(v: np.ndarray) -> np.ndarray:
    """Longer side -> 20 px, aspect kept, Lanczos (anti-aliased); peak rescaled to 1. float32 [h<=20, w<=20]."""
    h, w = v.shape
    f = BOX / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    out = np.asarray(Image.fromarray(v.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    out = np.clip(out, 0.0, None)
    top = float(out.max())
    return out / top if top > 0 else out


def _paste_centred(small: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Paste ``small`` [h, w] (0..1) into 28x28 so its centre of mass is at :data:`COM_TARGET`
    (whole-pixel shift, kept inside the frame). Returns (uint8 [28, 28], shift from centred)."""
    h, w = small.shape
    total = float(small.sum())
    ys, xs = np.mgrid[:h, :w]
    cy = float((small * ys).sum()) / total if total else (h - 1) / 2
    cx = float((small * xs).sum()) / total if total else (w - 1) / 2
    top = int(np.clip(round(COM_TARGET[0] - cy), 0, OUT_SIZE - h))
    left = int(np.clip(round(COM_TARGET[1] - cx), 0, OUT_SIZE - w))
    out = np.zeros((OUT_SIZE, OUT_SIZE), np.float32)
    out[top : top + h, left : left + w] = small
    shift = (top - (OUT_SIZE - h) // 2, left - (OUT_SIZE - w) // 2)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8), shift


# --------------------------------------------------------------------------- entry points


def preprocess(image: Any, max_pixels: int = MAX_PIXELS) -> PreprocessResult:
    """A PIL image, encoded bytes, a path or an array with one digit -> MNIST-like 28x28.

    Raises :class:`ImageError` when the image cannot be decoded or shows no digit."""
    an = analyse(load_image(image, max_pixels))
    return render(an, digit_components(an))


def preprocess_multi(image: Any, max_pixels: int = MAX_PIXELS) -> list[PreprocessResult]:
    """A row of several digits (e.g. "2026") -> one 28x28 per digit, left to right."""
    an = analyse(load_image(image, max_pixels))
    return [render(an, group) for group in segment_digits(an)]
