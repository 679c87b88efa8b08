"""OpenCV, set up for this pipeline: one thread.

The pipeline runs one process per core (``predict`` on a folder forks a pool), and its OpenCV calls
work on analysis copies of at most 512x512 px, where OpenCV's own thread pool gains nothing. A pool
that has started does not survive a fork (a forked worker's first parallel call waits forever for
threads it does not have), so OpenCV's threads are turned off before the pipeline first calls it.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def cv2() -> Any:
    """The ``cv2`` module, with its thread pool off (called before each use; imported on first use)."""
    import cv2 as module

    module.setNumThreads(1)
    return module
