"""``visage bench motion``: latency and real-time factor of streamed motion.

Without ``--batch``: one session on one CPU thread, per sampler step count (below).
With ``--batch N ...``: N sessions' chunks sampled together (:func:`bench_batched`).

Audio is fed as a live session would, in 20 ms pieces. Latency is the time from the piece
that completes a chunk's audio (plus lookahead) being pushed to that chunk's frames
being out (push + take). The first chunk of each of several fresh utterances is the cold
start; later chunks give the steady state. The real-time factor is all compute time
(every push and take) over the audio's duration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from renderer.motion.batch import sample_chunks
from renderer.motion.model import MotionDiT, count_params
from renderer.motion.space import MOTION_FPS
from renderer.motion.stream import MotionGenerator

SAMPLE_RATE = 16000
PIECE_S = 0.02
COLD_STARTS = 5


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Float32 16 kHz audio with syllable-rate loudness and pauses (timing only)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    pitch = 120.0 + 20.0 * np.sin(2 * np.pi * 0.3 * t)
    voice = np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE) + 0.3 * rng.standard_normal(n)
    envelope = np.clip(np.sin(2 * np.pi * 4.0 * t), 0.0, None) * (
        np.sin(2 * np.pi * 0.2 * t) > -0.5
    )
    return (0.3 * voice * envelope).astype(np.float32)


def _stream(gen: MotionGenerator, audio: np.ndarray, first_only: bool) -> tuple[list[float], float]:
    """Feed ``audio`` in pieces; per-chunk latencies (ms) and total compute (s)."""
    piece = int(PIECE_S * SAMPLE_RATE)
    latencies: list[float] = []
    total = 0.0
    for pos in range(0, len(audio), piece):
        t0 = time.perf_counter()
        gen.push(audio[pos : pos + piece], SAMPLE_RATE)
        frames = gen.take()
        dt = time.perf_counter() - t0
        total += dt
        if len(frames):
            latencies.append(dt * 1e3)
            if first_only:
                break
    return latencies, total


def bench_motion(
    model: MotionDiT, steps_list: Sequence[int] = (1, 2, 4, 8), seconds: float = 30.0
) -> dict[str, Any]:
    """Cold-start and steady-state chunk latency and RTF for each steps value, one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        audio = speechlike(seconds)
        warm = MotionGenerator(model, steps=max(steps_list))
        _stream(warm, audio[: SAMPLE_RATE * 2], first_only=False)  # lazy init, allocator warm-up
        rows = []
        for steps in steps_list:
            cold = []
            for i in range(COLD_STARTS):
                gen = MotionGenerator(model, steps=steps, seed=i)
                cold += _stream(gen, audio, first_only=True)[0]
            gen = MotionGenerator(model, steps=steps, seed=0)
            lat, total = _stream(gen, audio, first_only=False)
            steady = np.array(lat[1:] or lat)
            rows.append(
                {
                    "steps": steps,
                    "first_chunk_ms": float(np.max(cold)),
                    "steady_p50_ms": float(np.percentile(steady, 50)),
                    "steady_p95_ms": float(np.percentile(steady, 95)),
                    "rtf": total / seconds,
                }
            )
    finally:
        torch.set_num_threads(previous)
    cfg = model.cfg
    return {
        "threads": 1,
        "audio_s": seconds,
        "chunk_frames": cfg.chunk,
        "lookahead_frames": cfg.lookahead,
        "params": count_params(model),
        "results": rows,
    }


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of ``bench_motion`` results, one row per steps value."""
    header = f"{'steps':>5} {'first ms':>9} {'p50 ms':>7} {'p95 ms':>7} {'RTF':>7}"
    rows = [
        f"MotionDiT {result['params']:,} params, chunk {result['chunk_frames']} frames + "
        f"{result['lookahead_frames']} lookahead, {result['audio_s']:.0f} s audio, "
        f"{result['threads']} thread",
        header,
        "-" * len(header),
    ]
    for r in result["results"]:
        rows.append(
            f"{r['steps']:>5} {r['first_chunk_ms']:>9.2f} {r['steady_p50_ms']:>7.2f} "
            f"{r['steady_p95_ms']:>7.2f} {r['rtf']:>7.4f}"
        )
    rows.append("targets: first chunk <= 40 ms, RTF <= 0.1")
    return "\n".join(rows)


def bench_batched(
    model: MotionDiT,
    batches: Sequence[int] = (1, 8, 32),
    *,
    steps: int = 4,
    seconds: float = 10.0,
    threads: int = 1,
) -> dict[str, Any]:
    """Chunks per second and per-chunk latency when N sessions' chunks sample together.

    N generators stream N different speech-like recordings in 20 ms pieces, in lockstep;
    every round, the chunks due in all of them are sampled in one batch on the model's
    device (:func:`~renderer.motion.batch.sample_chunks`). A chunk's latency is that
    batch's sampling time; cutting the jobs (features, history; on the session's event
    loop) is timed apart.
    """
    if not batches or min(batches) < 1:
        raise ValueError(f"batch sizes must be positive, got {list(batches)}")
    device = model.motion_mean.device
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _stream_batched(model, 1, steps, 1.0)  # lazy init, allocator and kernel warm-up
        rows = [_stream_batched(model, n, steps, seconds) for n in batches]
    finally:
        torch.set_num_threads(previous)
    return {
        "device": str(device),
        "threads": threads,
        "steps": steps,
        "audio_s": seconds,
        "chunk_frames": model.cfg.chunk,
        "params": count_params(model),
        "results": rows,
    }


def _stream_batched(model: MotionDiT, n: int, steps: int, seconds: float) -> dict[str, Any]:
    gens = [MotionGenerator(model, steps=steps, seed=i) for i in range(n)]
    audio = [speechlike(seconds, seed=i) for i in range(n)]
    piece = int(PIECE_S * SAMPLE_RATE)
    batch_ms: list[float] = []
    cut_ms: list[float] = []
    chunks = 0
    cuda = model.motion_mean.device.type == "cuda"
    for pos in range(0, len(audio[0]), piece):
        for gen, x in zip(gens, audio, strict=True):
            gen.push(x[pos : pos + piece], SAMPLE_RATE)
        while True:
            t0 = time.perf_counter()
            jobs = [(gen, job) for gen in gens if (job := gen.next_job()) is not None]
            if not jobs:
                break
            cut_ms.append((time.perf_counter() - t0) * 1e3 / len(jobs))
            t0 = time.perf_counter()
            motions = sample_chunks(model, [job for _, job in jobs])
            if cuda:
                torch.cuda.synchronize()
            batch_ms.append((time.perf_counter() - t0) * 1e3)
            chunks += len(jobs)
            for (gen, job), motion in zip(jobs, motions, strict=True):
                gen.commit(job, motion)
                gen.take(gen.frames_generated - gen.frames_taken)
    total_s = sum(batch_ms) / 1e3
    per_s = chunks / total_s if total_s else math.inf
    return {
        "batch": n,
        "chunks": chunks,
        "chunks_per_s": per_s,
        "latency_p50_ms": float(np.percentile(batch_ms, 50)),
        "latency_p95_ms": float(np.percentile(batch_ms, 95)),
        "cut_ms_per_chunk": float(np.mean(cut_ms)),
        # Sessions whose motion this rate keeps in real time (a chunk is chunk/fps seconds).
        "realtime_sessions": per_s * model.cfg.chunk / MOTION_FPS,
    }


def format_batched_table(result: dict[str, Any]) -> str:
    """Plain-text table of ``bench_batched`` results, one row per batch size."""
    header = (
        f"{'batch':>5} {'chunks/s':>9} {'p50 ms':>7} {'p95 ms':>7} {'cut ms':>7} "
        f"{'real-time sessions':>18}"
    )
    rows = [
        f"MotionDiT {result['params']:,} params on {result['device']} ({result['threads']} "
        f"thread{'s' if result['threads'] > 1 else ''}), {result['steps']} steps, chunk "
        f"{result['chunk_frames']} frames, {result['audio_s']:.0f} s of audio per session",
        header,
        "-" * len(header),
    ]
    for r in result["results"]:
        rows.append(
            f"{r['batch']:>5} {r['chunks_per_s']:>9.1f} {r['latency_p50_ms']:>7.2f} "
            f"{r['latency_p95_ms']:>7.2f} {r['cut_ms_per_chunk']:>7.2f} "
            f"{r['realtime_sessions']:>18.1f}"
        )
    rows.append("latency: one batched sampling call (every chunk in it waits that long)")
    return "\n".join(rows)
