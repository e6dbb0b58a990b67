"""Batched motion: several sessions' chunks in one forward pass give each its own motion."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from renderer.motion import stream
from renderer.motion.batch import SILENCE_MOUTH_GAIN, sample_chunks, traced
from renderer.motion.bench import bench_batched, format_batched_table, speechlike
from renderer.motion.checkpoint import load_model
from renderer.motion.sampler import flow_times
from renderer.motion.space import clip_motion
from renderer.motion.stream import MotionGenerator, generate, generate_batch
from renderer.motion.visemes import VISEME_IDX


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model()


def utterances() -> list[np.ndarray]:
    """Four different speech-like recordings of different lengths, 16 kHz."""
    return [speechlike(seconds, seed=i) for i, seconds in enumerate((1.3, 2.0, 0.7, 1.65))]


def test_a_batch_of_four_utterances_equals_four_separate_runs(model, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    recordings = utterances()
    sizes: list[int] = []

    def counting(model, jobs):  # type: ignore[no-untyped-def]
        sizes.append(len(jobs))
        return sample_chunks(model, jobs)

    monkeypatch.setattr(stream, "sample_chunks", counting)
    together = generate_batch(model, recordings, steps=4, seeds=[3, 5, 7, 9])
    monkeypatch.undo()
    assert max(sizes) == 4, "the four sessions' chunks were sampled in one pass"
    for recording, seed, batched in zip(recordings, [3, 5, 7, 9], together, strict=True):
        alone = generate(model, recording, steps=4, seed=seed, piece_s=0.02)
        assert batched.shape == alone.shape
        np.testing.assert_allclose(batched, alone, atol=1e-4)
    # Different utterances really gave different motion: the batch kept them apart.
    assert np.abs(together[0][:15] - together[1][:15]).max() > 0.05


def test_jobs_with_different_steps_sample_in_their_own_groups(model) -> None:  # type: ignore[no-untyped-def]
    gens = [MotionGenerator(model, steps=s, seed=0) for s in (1, 4, 1)]
    jobs = [gen.next_job() for gen in gens]
    assert all(job is not None for job in jobs)
    together = sample_chunks(model, jobs)  # type: ignore[arg-type]
    alone = [sample_chunks(model, [job])[0] for job in jobs]  # type: ignore[list-item]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert np.abs(together[0] - together[1]).max() > 1e-3, "1 step and 4 steps differ"


def test_a_job_cut_before_an_interruption_is_not_committed(model) -> None:  # type: ignore[no-untyped-def]
    gen = MotionGenerator(model, steps=1)
    gen.push(speechlike(1.0), 16000)
    job = gen.next_job()
    assert job is not None
    motion = sample_chunks(model, [job])[0]
    gen.drop_pending()  # the interruption comes while the chunk is being sampled
    assert not gen.commit(job, motion), "stale motion stays out of the timeline"
    assert gen.frames_generated == 0
    fresh = gen.next_job()
    assert fresh is not None and gen.commit(fresh, sample_chunks(model, [fresh])[0])
    assert gen.frames_generated == model.cfg.chunk


def test_a_batched_chunk_is_what_the_model_and_sampler_give_for_it(model) -> None:  # type: ignore[no-untyped-def]
    """A reference written out the long way: context, Euler steps, denormalise, the silence
    gate on the mouth, and the motion space's clamp."""
    gen = MotionGenerator(model, steps=2, seed=11)
    gen.push(np.concatenate([np.zeros(3 * 640, np.float32), speechlike(1.0)]), 16000)
    job = gen.next_job()
    assert job is not None and bool(job.silent[:3].all()) and not bool(job.silent.all())
    (batched,) = sample_chunks(model, [job])
    with torch.inference_mode():
        ctx = model.context(job.audio[None], job.history[None], job.valid[None])
        x = job.noise[None].clone() * model.source_std
        times = flow_times(2)
        for t0, t1 in itertools.pairwise(times):
            x = x + (t1 - t0) * model(x, t0.expand(1), ctx)
        reference = model.denormalize(x)[0].numpy()
    reference[np.ix_(np.nonzero(job.silent.numpy())[0], VISEME_IDX)] *= SILENCE_MOUTH_GAIN
    np.testing.assert_allclose(batched, clip_motion(reference), atol=1e-5)


def test_jobs_carry_cpu_tensors_and_sample_to_numpy_motion(model) -> None:  # type: ignore[no-untyped-def]
    job = MotionGenerator(model).next_job()
    assert job is not None
    cfg = model.cfg
    assert job.audio.shape == (cfg.window, cfg.audio_dim) and job.audio.dtype == torch.float32
    assert job.noise.shape == (cfg.chunk, cfg.motion_dim)
    (motion,) = sample_chunks(model, [job])
    assert motion.shape == (cfg.chunk, cfg.motion_dim) and motion.dtype == np.float32


def test_batched_bench_prints_a_row_per_batch_size(model) -> None:  # type: ignore[no-untyped-def]
    result = bench_batched(model, (1, 3), seconds=1.0)
    assert [r["batch"] for r in result["results"]] == [1, 3]
    assert all(r["chunks"] > 0 and r["chunks_per_s"] > 0 for r in result["results"])
    table = format_batched_table(result)
    assert "chunks/s" in table and "cpu" in table


def test_the_trace_computes_what_the_model_does_for_any_batch_size(model) -> None:  # type: ignore[no-untyped-def]
    cfg = model.cfg
    script = traced(model)
    assert traced(model) is script, "traced once per model"
    for b in (1, 5):
        audio = torch.randn(b, cfg.window, cfg.audio_dim)
        history = torch.randn(b, cfg.history, cfg.motion_dim)
        valid = torch.rand(b, cfg.history) > 0.3
        x, t = torch.randn(b, cfg.chunk, cfg.motion_dim), torch.rand(b)
        with torch.inference_mode():
            ctx = model.context(audio, history, valid)
            torch.testing.assert_close(script.context(audio, history, valid), ctx)
            torch.testing.assert_close(script(x, t, ctx), model(x, t, ctx))


def test_a_torch_that_cannot_trace_samples_eagerly(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_torchscript(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("TorchScript is gone")

    monkeypatch.setattr(torch.jit, "trace_module", no_torchscript)
    fresh = load_model()
    assert traced(fresh) is fresh
    job = MotionGenerator(fresh, steps=1).next_job()
    assert job is not None and sample_chunks(fresh, [job])[0].shape == (8, fresh.cfg.motion_dim)
