"""MotionBatcher: one worker thread samples every session's due motion chunks together.

Sessions hand the chunk jobs their players cut to the batcher of their model
(:func:`shared_batcher`). The worker takes every job waiting when it is free and samples
them in one pass (:func:`~renderer.motion.batch.sample_chunks`), on the model's device.
A session alone gets its chunk as soon as the worker is free; with many calls, the jobs
that arrive while a batch runs go together in the next one. No job waits for a batch to
fill, so batching costs no latency and throughput grows with the number of calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from loguru import logger

from renderer.motion.batch import ChunkJob, sample_chunks
from renderer.motion.model import MotionDiT

MAX_BATCH = 64  # jobs sampled in one pass at most


@dataclass(frozen=True)
class SampledChunk:
    """A job's motion and what sampling it cost."""

    motion: np.ndarray  # (C, MOTION_DIM) float32, space units
    seconds: float  # sampling time of the batch it was in
    batch: int  # jobs in that batch


class MotionBatcher:
    """Samples submitted chunk jobs on one worker thread, as many together as are waiting."""

    def __init__(self, model: MotionDiT, *, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._jobs: deque[tuple[ChunkJob, Future[SampledChunk]]] = deque()
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # passes run
        self.chunks = 0  # jobs sampled
        self.largest_batch = 0

    def submit(self, job: ChunkJob) -> Future[SampledChunk]:
        """Queue one job; the future resolves with its motion (cancel it to drop the job
        if it has not started)."""
        future: Future[SampledChunk] = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the motion batcher is closed")
            self._jobs.append((job, future))
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="motion-batcher", daemon=True
                )
                self._worker.start()
            self._wake.notify()
        return future

    def close(self, timeout_s: float = 2.0) -> None:
        """Finish the jobs queued, then stop the worker (bounded); idempotent."""
        with self._wake:
            self._closed = True
            self._wake.notify()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout_s)

    def _next_batch(self) -> list[tuple[ChunkJob, Future[SampledChunk]]] | None:
        with self._wake:
            while not self._jobs and not self._closed:
                self._wake.wait()
            if not self._jobs:
                return None  # closed and drained
            count = min(len(self._jobs), self.max_batch)
            taken = [self._jobs.popleft() for _ in range(count)]
        # Jobs cancelled while they waited (their timeline moved on) are left out.
        return [(job, future) for job, future in taken if future.set_running_or_notify_cancel()]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            began = time.perf_counter()
            try:
                motions = sample_chunks(self.model, [job for job, _ in batch])
            except Exception as exc:  # each session hears of it; the worker goes on
                logger.exception(f"motion batch of {len(batch)} failed: {exc}")
                for _, future in batch:
                    future.set_exception(exc)
                continue
            seconds = time.perf_counter() - began
            self.batches += 1
            self.chunks += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            for (_, future), motion in zip(batch, motions, strict=True):
                future.set_result(SampledChunk(motion, seconds, len(batch)))


_batchers: dict[int, MotionBatcher] = {}
_batchers_lock = threading.Lock()


def shared_batcher(model: MotionDiT) -> MotionBatcher:
    """The process's batcher for ``model``: every session on that model shares it."""
    with _batchers_lock:
        batcher = _batchers.get(id(model))
        if batcher is None or batcher.model is not model:
            batcher = _batchers[id(model)] = MotionBatcher(model)
        return batcher
