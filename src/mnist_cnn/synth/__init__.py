"""Synthetic photos of handwriting: MNIST digits written on pages and photographed.

:mod:`.strokes` redraws a digit with another pen, :mod:`.paper` makes the page and the camera,
:mod:`.page` one digit on a page (the photo test set's page conditions), :mod:`.numbers` a number
(a row of digits) on a page. The benchmarks render their test sets with it and the number reader is
trained on its renderings of training digits. Only NumPy, SciPy and Pillow are used.
"""
