"""What one server accepts and holds at once (:class:`Limits`), and the process's memory.

The defaults of :class:`Limits` are `mnist-cnn serve`'s. Every room of the server takes its bounds
from one ``Limits``: body size and images per request (:mod:`~mnist_cnn.serving.decoding`), pixels
per image and per request (:mod:`~mnist_cnn.serving.images`), requests in progress and decoding
threads (:mod:`~mnist_cnn.serving.service`), and header size, read timeouts and open connections at
the HTTP layer (:mod:`~mnist_cnn.serving.guards`). :func:`tune_malloc` and :func:`malloc_trim` keep
the memory that decoded images took from staying with the process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Limits:
    """What one server accepts and holds at once. The defaults are `mnist-cnn serve`'s."""

    max_body_bytes: int = 5 * 1024 * 1024  # whole request (upload size cap): 413 above
    max_pixels: int = 4096 * 4096  # one image, width x height from its header (decompression bombs): 422 above
    max_batch: int = 64  # images in one batch request: 413 above
    max_request_pixels: int = 4 * 4096 * 4096  # all images of one request together: 413 in the slots beyond
    max_decoded_pixels: int = 2048 * 2048  # larger images are decoded at reduced size, in greyscale
    workers: int = 0  # images decoded and preprocessed at once (threads); 0: one per core but one
    max_concurrent: int = 64  # requests to /api/predict* in progress at once: 503 beyond
    max_header_bytes: int = 16 * 1024  # request line + headers: 431 above (HTTP layer)
    read_timeout: float = 10.0  # s: the headers must arrive within it, and the body never pause longer: 408
    body_timeout: float = 60.0  # s: the whole body must arrive within it after the headers: 408
    max_connections: int = 1000  # open connections; more are answered 503 and closed (HTTP layer)

    def pool_size(self) -> int:
        """``workers``, or one thread per core but one: that core runs the event loop and the model.
        (Preprocessing a small image is mostly Python, so more threads than that only contend for
        the GIL: on 2 cores, 2 workers answered 253 requests/s at 32 clients, 1 worker 309.)"""
        return self.workers if self.workers > 0 else max(1, cpu_count() - 1)


DEFAULT_LIMITS = Limits()  # `mnist-cnn serve`'s; frozen, so one instance serves as every default


def tune_malloc(mmap_threshold: int = 256 * 1024, trim_threshold: int = 64 * 1024 * 1024) -> bool:
    """glibc only: allocations of ``mmap_threshold`` bytes and more get their own mapping, returned to
    the OS when freed. (By default glibc raises that threshold up to 32 MiB after large frees, so
    decoded images end up in heap arenas that keep their pages.) Fixing it also fixes the heap's
    trim threshold, so that is set too: up to ``trim_threshold`` free bytes stay at the top of the
    heap between requests instead of being unmapped and faulted in again each time
    (:func:`malloc_trim` hands them back once the server is idle). For the serving process."""
    if os.environ.get("MNIST_CNN_MALLOC_TUNE", "1") == "0":  # for measuring what it changes
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, mmap_threshold)) and bool(libc.mallopt(-1, trim_threshold))  # M_MMAP/M_TRIM
    except (OSError, AttributeError):
        return False


def malloc_trim() -> None:
    """Hand free heap pages back to the OS (glibc; a no-op elsewhere)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
