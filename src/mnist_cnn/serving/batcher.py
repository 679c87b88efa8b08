"""The model's own thread: :class:`Batcher` runs every request's images through the model, together.

Requests that arrive while the model is busy are predicted in its next call, so many concurrent
requests cost one model call each round instead of one each, and never oversubscribe the model's
threads.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from typing import Any

import numpy as np


class Batcher:
    """The model runs in one thread of its own; images of requests that arrive while it is busy go
    through it together in the next call (no waiting when idle, so no added latency).

    One thread means no oversubscription of the model's own threads by many concurrent requests,
    and batch-N inference costs far less per image than N batch-1 calls."""

    def __init__(self, predict: Any, max_images: int = 256):
        self.predict_fn, self.max_images = predict, max_images
        self.queue: queue.SimpleQueue[tuple[np.ndarray, Future] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="mnist-cnn-batcher", daemon=True)
        self.thread.start()

    async def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``[n, 28, 28]`` -> probabilities ``[n, C]``, awaited without blocking the event loop."""
        fut: Future = Future()
        self.queue.put((images, fut))
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        self.queue.put(None)

    def _run(self) -> None:
        while (first := self.queue.get()) is not None:
            jobs, n = [first], len(first[0])
            while n < self.max_images:  # take whatever else is already waiting
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.queue.put(None)  # close after this batch
                    break
                jobs.append(job)
                n += len(job[0])
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[tuple[np.ndarray, Future]]) -> None:
        try:
            probs = self.predict_fn(np.concatenate([images for images, _ in jobs]))  # [sum n, C]
        except BaseException as exc:  # noqa: BLE001 - hand the failure to every waiting request
            for _, fut in jobs:
                fut.set_exception(exc)
            return
        start = 0
        for images, fut in jobs:
            fut.set_result(probs[start : start + len(images)])
            start += len(images)
