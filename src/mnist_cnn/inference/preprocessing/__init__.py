"""Turn a user's image (photo, scan, screenshot, canvas drawing) into an MNIST-like 28x28 digit.

MNIST digits are bright strokes on a black background, the digit's bounding box scaled so its longer
side is 20 px (aspect kept, anti-aliased) and pasted into 28x28 so that its centre of mass sits at the
centre. Real images differ in every respect, so :func:`preprocess` runs five stages, one module each,
each importing only the ones below it (an import-linter contract checks this):

1. :mod:`.decode`: bytes, a path, a PIL image or an array -> an upright 8-bit image, safely (size cap
   from the header, corrupt files refused in one line); a large JPEG decoded reduced by its DCT;
2. :mod:`.ink`: polarity, background (block percentile, then a grey closing/opening a few stroke widths
   wide, which keeps shadows and gradients but not strokes), noise, hysteresis threshold, components;
3. :mod:`.lines` and :mod:`.frames`: page structure. Ruled and squared paper lines and a form's box
   around the digit are taken out of the ink, except where a stroke crosses them; a picture that cannot
   hold such a line skips the search;
4. :mod:`.segment`: which components are the digit (or a row's digits); no significant ink ->
   :class:`~mnist_cnn.errors.ImageError` ("no digit found"), not a guess;
5. :mod:`.render`: crop at full resolution, ink mapped to 0..1, stroke width corrected towards MNIST's,
   Lanczos to 20 px, pasted into 28x28 at MNIST's centre of mass.

:mod:`.params` holds every tunable number (``preprocess(image, params=...)``); :mod:`.pipeline` runs the
stages. A real MNIST digit passes through nearly unchanged (median correlation 0.9999 on test digits).
"""

from __future__ import annotations

from mnist_cnn.inference.preprocessing.decode import (
    MAX_FILE_BYTES,
    MAX_PIXELS,
    decode_image,
    load_image,
    read_image_file,
    standard_mode,
    upright,
)
from mnist_cnn.inference.preprocessing.ink import Analysis, polarity
from mnist_cnn.inference.preprocessing.params import DEFAULT, LineRule, Params
from mnist_cnn.inference.preprocessing.pipeline import analyse, preprocess, preprocess_multi, preprocess_rows
from mnist_cnn.inference.preprocessing.result import SIGNAL_GAIN, PreprocessResult

COM_TARGET = DEFAULT.com_target  # mean centre of mass (row, col) of MNIST test digits, in pixel indices

__all__ = [
    "COM_TARGET",
    "DEFAULT",
    "MAX_FILE_BYTES",
    "MAX_PIXELS",
    "SIGNAL_GAIN",
    "Analysis",
    "LineRule",
    "Params",
    "PreprocessResult",
    "analyse",
    "decode_image",
    "load_image",
    "polarity",
    "preprocess",
    "preprocess_multi",
    "preprocess_rows",
    "read_image_file",
    "standard_mode",
    "upright",
]
