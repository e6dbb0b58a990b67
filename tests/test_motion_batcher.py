"""The motion batcher: every session's due chunks sampled together on one worker thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from renderer.motion import batcher as batcher_module
from renderer.motion.batch import sample_chunks
from renderer.motion.batcher import MotionBatcher, shared_batcher
from renderer.motion.bench import speechlike
from renderer.motion.checkpoint import load_model
from renderer.motion.stream import MotionGenerator


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model()


def due_jobs(model, n: int):  # type: ignore[no-untyped-def]
    """The first chunk job of ``n`` sessions, each hearing different speech."""
    jobs = []
    for i in range(n):
        gen = MotionGenerator(model, steps=2, seed=i)
        gen.push(speechlike(0.8, seed=i), 16000)
        job = gen.next_job()
        assert job is not None
        jobs.append(job)
    return jobs


class GatedSampling:
    """Stands in for ``sample_chunks`` in the batcher: notes each batch's size, and holds
    the worker in the first batch until ``release`` is set."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.sizes: list[int] = []

    def __call__(self, model, jobs):  # type: ignore[no-untyped-def]
        self.sizes.append(len(jobs))
        self.started.set()
        self.release.wait(5)
        return sample_chunks(model, jobs)


@pytest.fixture
def gate(monkeypatch) -> GatedSampling:  # type: ignore[no-untyped-def]
    gated = GatedSampling()
    monkeypatch.setattr(batcher_module, "sample_chunks", gated)
    return gated


def test_jobs_that_arrive_during_a_batch_go_together_in_the_next(model, gate) -> None:  # type: ignore[no-untyped-def]
    batcher = MotionBatcher(model)
    jobs = due_jobs(model, 4)
    try:
        first = batcher.submit(jobs[0])
        assert gate.started.wait(5), "a lone job starts at once"
        rest = [batcher.submit(job) for job in jobs[1:]]
        gate.release.set()
        results = [future.result(5) for future in [first, *rest]]
    finally:
        batcher.close()
    assert gate.sizes == [1, 3]
    assert [r.batch for r in results] == [1, 3, 3, 3]
    assert batcher.largest_batch == 3 and batcher.chunks == 4
    for job, result in zip(jobs, results, strict=True):
        np.testing.assert_allclose(result.motion, sample_chunks(model, [job])[0], atol=1e-4)


def test_a_cancelled_job_is_left_out_and_close_is_idempotent(model, gate) -> None:  # type: ignore[no-untyped-def]
    batcher = MotionBatcher(model)
    jobs = due_jobs(model, 3)
    busy = batcher.submit(jobs[0])
    assert gate.started.wait(5)
    dropped, kept = batcher.submit(jobs[1]), batcher.submit(jobs[2])
    assert dropped.cancel(), "a job not started yet can be called off"
    gate.release.set()
    assert busy.result(5).batch == 1 and kept.result(5).batch == 1
    assert gate.sizes == [1, 1], "the cancelled job was never sampled"
    batcher.close()
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(jobs[0])


def test_sessions_on_one_model_share_its_batcher(model) -> None:  # type: ignore[no-untyped-def]
    assert shared_batcher(model) is shared_batcher(model)
    assert shared_batcher(load_model()) is not shared_batcher(model)
