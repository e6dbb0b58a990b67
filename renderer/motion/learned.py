"""LearnedMotion: MotionDiT as the core's motion source, running ahead of playback.

The core hands over speech audio as it is pushed (``push_audio``), so the generator can
look ahead into audio that has not played yet, and asks for one motion vector per video
frame (``next_motion``). The core plays a frame of audio only once its motion can be
made, so face and voice stay in step. While nothing is said the timeline is silence and
the generator keeps producing idle motion, a chunk at a time, never more than a chunk
ahead; a new reply starts at the next frame to play and drops that idle look-ahead.

Chunks are sampled through jobs (``next_job`` / ``submit_job`` / ``commit``): the player
hands them to the process's motion batcher (``renderer/motion/batcher.py``), whose worker
thread samples every session's due chunks together. A chunk nobody sampled ahead is made
on the spot when its frame is due.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch

from renderer.motion.batch import ChunkJob
from renderer.motion.batcher import MotionBatcher, SampledChunk, shared_batcher
from renderer.motion.checkpoint import DEFAULT_CHECKPOINT, load_model
from renderer.motion.model import MotionDiT
from renderer.motion.space import MOTION_FPS
from renderer.motion.stream import MotionGenerator
from speech.phonemes import PhonemeMark

_cache: dict[tuple[Path, int, float, str], MotionDiT] = {}
_cache_lock = threading.Lock()


def shared_model(path: Path | None = None, device: torch.device | str = "cpu") -> MotionDiT:
    """The model at ``path`` (default: shipped) on ``device``, loaded once per file version
    and device and shared.

    Sessions only read the weights (inference mode), so one copy serves them all.
    """
    resolved = Path(path or DEFAULT_CHECKPOINT).resolve()
    device = torch.device(device)
    try:
        stat = resolved.stat()
        key = (resolved, stat.st_size, stat.st_mtime, str(device))
    except OSError:
        return load_model(resolved)  # raises the checkpoint error naming the path
    with _cache_lock:
        model = _cache.get(key)
        if model is None:
            model = _cache[key] = load_model(resolved).to(device).eval()
            _warm_up(model)
        return model


def _warm_up(model: MotionDiT) -> None:
    """One throwaway chunk, so a session's first real chunk does not pay torch's lazy setup."""
    generator = MotionGenerator(model, steps=1)
    generator.take(1)


class LearnedMotion:
    """Streaming motion source for the core, backed by a MotionGenerator."""

    reads_frames = False  # the generator has the pushed audio; frames' own copies are unused

    def __init__(
        self,
        checkpoint: Path | None = None,
        *,
        steps: int = 4,
        seed: int = 0,
        fps: int = MOTION_FPS,
        model: MotionDiT | None = None,
        device: torch.device | str = "cpu",
        batcher: MotionBatcher | None = None,
    ) -> None:
        if fps != MOTION_FPS:
            raise ValueError(
                f"the learned motion model runs at {MOTION_FPS} fps, got fps={fps}; set "
                "avatar.fps to 25 or use avatar.motion = 'procedural'"
            )
        self.model = model if model is not None else shared_model(checkpoint, device)
        self.generator = MotionGenerator(self.model, steps=steps, seed=seed)
        self.batcher = batcher if batcher is not None else shared_batcher(self.model)

    @property
    def steps(self) -> int:
        """Sampler steps per motion chunk."""
        return self.generator.steps

    def set_steps(self, steps: int) -> None:
        """Sample the following chunks with ``steps`` steps (the degradation ladder)."""
        self.generator.set_steps(steps)

    def push_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Speech audio (int16 mono) as the core queues it."""
        self.generator.push(samples, sample_rate)

    def end_audio(self, n_frames: int) -> None:
        """The utterance is complete; it spans ``n_frames`` video frames."""
        self.generator.end(n_frames)

    def clear(self) -> None:
        """Interruption: drop all pending audio and motion."""
        self.generator.drop_pending()

    def ready(self) -> bool:
        """True when the next frame's motion can be produced now."""
        return self.generator.can_take()

    def next_job(self) -> ChunkJob | None:
        """The chunk the next frame to play needs, when it is due and its audio is in."""
        return self.generator.next_job()

    def submit_job(self, job: ChunkJob) -> Future[SampledChunk]:
        """Have the batcher sample ``job`` (with other sessions' due chunks)."""
        return self.batcher.submit(job)

    def is_current(self, job: ChunkJob) -> bool:
        """Whether ``job`` is still the chunk the timeline needs next."""
        return self.generator.is_current(job)

    def commit(self, job: ChunkJob, motion: np.ndarray) -> bool:
        """Put a sampled chunk on the timeline; False if it went stale meanwhile."""
        return self.generator.commit(job, motion)

    def next_motion(
        self,
        audio: np.ndarray,
        sample_rate: int,
        phonemes: Sequence[PhonemeMark],
        speaking: bool,
    ) -> np.ndarray:
        """Motion for this frame: the next one on the timeline, or the last one again
        while the core waits for audio (an underrun)."""
        if self.generator.can_take():
            return self.generator.take(1)[0]
        return self.generator.last_frame().copy()
