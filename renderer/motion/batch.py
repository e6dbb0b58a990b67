"""Sampling motion chunks in batches: many timelines' chunks in one forward pass.

A :class:`~renderer.motion.stream.MotionGenerator` cuts a :class:`ChunkJob` (the model
inputs of its next chunk) and takes the sampled motion back with ``commit``. The jobs of
any number of generators, sessions included, sample together in :func:`sample_chunks`:
one ``context`` and one pass per sampler step for all of them, on the model's device
(CPU or CUDA). Each job brings its own noise, so a job's motion does not depend on what
it was batched with.

The passes run as TorchScript traces of the model (:func:`traced`), made once per model
and device: the same arithmetic, for any batch size, but executed without Python's
interpreter lock, so a busy event loop or render thread does not slow sampling down
(and it runs about a third faster on its own).
"""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from loguru import logger

from renderer.motion.model import MotionDiT
from renderer.motion.sampler import FlowSampler
from renderer.motion.space import BLENDSHAPE_NAMES, HEAD_ANGLE_MAX
from renderer.motion.visemes import VISEME_IDX

SILENCE_MOUTH_GAIN = 0.5  # mouth channels on silent frames (see stream.py's docstring)


@dataclass(frozen=True)
class ChunkJob:
    """The inputs of one motion chunk, cut from a generator's timeline."""

    start: int  # the chunk's first frame on its timeline
    epoch: int  # the timeline's version when cut; a stale job is not committed
    steps: int  # sampler steps
    shift: float  # sampler timestep shift
    audio: torch.Tensor  # (S, audio_dim) log-mel features of the whole window
    history: torch.Tensor  # (K, motion_dim) emitted motion, model units
    valid: torch.Tensor  # (K,) bool, False before the stream began
    noise: torch.Tensor  # (C, motion_dim) standard normal
    silent: torch.Tensor  # (C,) bool: frames whose own audio is silent (mouth gated)


_traces: weakref.WeakKeyDictionary[MotionDiT, tuple[torch.device, MotionDiT | Any]] = (
    weakref.WeakKeyDictionary()
)
_traces_lock = threading.Lock()


@torch.inference_mode()
def traced(model: MotionDiT) -> MotionDiT | Any:
    """``model``'s ``forward`` (velocity) and ``context`` traced to TorchScript, once per
    model and device. The trace shares the model's weights and takes any batch size.
    Where tracing fails (a torch without TorchScript), the model itself, with a warning."""
    device = model.motion_mean.device
    with _traces_lock:
        cached = _traces.get(model)
        if cached is not None and cached[0] == device:
            return cached[1]
        cfg = model.cfg
        audio = torch.zeros(1, cfg.window, cfg.audio_dim, device=device)
        history = torch.zeros(1, cfg.history, cfg.motion_dim, device=device)
        valid = torch.ones(1, cfg.history, dtype=torch.bool, device=device)
        x = torch.zeros(1, cfg.chunk, cfg.motion_dim, device=device)
        t = torch.zeros(1, device=device)
        ctx = model.context(audio, history, valid)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch 2.13 marks TorchScript deprecated
                script = torch.jit.trace_module(
                    model.eval(),
                    {"forward": (x, t, ctx), "context": (audio, history, valid)},
                    check_trace=False,
                )
        except Exception as exc:  # the eager model computes the same, a little slower
            logger.warning(f"MotionDiT could not be traced ({exc}); sampling runs eagerly")
            script = model
        _traces[model] = (device, script)
        return script


@torch.inference_mode()
def sample_chunks(model: MotionDiT, jobs: list[ChunkJob]) -> list[np.ndarray]:
    """Motion (C, MOTION_DIM) float32 in space units for each job, in order.

    Jobs with the same sampler settings share one batch; the rest run group by group.
    """
    out: list[np.ndarray | None] = [None] * len(jobs)
    groups: dict[tuple[int, float], list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault((job.steps, job.shift), []).append(i)
    device = model.motion_mean.device
    nb = len(BLENDSHAPE_NAMES)
    viseme = torch.tensor(VISEME_IDX, device=device)
    script = traced(model)
    for (steps, shift), index in groups.items():
        batch = [jobs[i] for i in index]
        audio = torch.stack([j.audio for j in batch]).to(device)  # (B, S, A)
        history = torch.stack([j.history for j in batch]).to(device)  # (B, K, M)
        valid = torch.stack([j.valid for j in batch]).to(device)  # (B, K)
        noise = torch.stack([j.noise for j in batch]).to(device)  # (B, C, M)
        silent = torch.stack([j.silent for j in batch]).to(device)  # (B, C)
        ctx = script.context(audio, history, valid)  # (B, S, D)
        sampler = FlowSampler(model, steps=steps, shift=shift)
        x = sampler.sample(ctx, noise, velocity=script)  # (B, C, M)
        motion = model.denormalize(x)  # (B, C, M) space units
        gain = torch.where(silent, SILENCE_MOUTH_GAIN, 1.0).to(motion.dtype)  # (B, C)
        motion[:, :, viseme] *= gain[:, :, None]
        motion[:, :, :nb].clamp_(0.0, 1.0)
        motion[:, :, nb:].clamp_(-HEAD_ANGLE_MAX, HEAD_ANGLE_MAX)  # as clip_motion
        host = motion.float().cpu().numpy()  # (B, C, M)
        for row, i in enumerate(index):
            out[i] = host[row]
    return [m for m in out if m is not None]
