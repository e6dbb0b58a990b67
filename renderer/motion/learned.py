"""LearnedMotion: MotionDiT as AvatarCore's motion source, running ahead of playback.

The core hands over speech audio as it is pushed (``push_audio``), so the generator can
look ahead into audio that has not played yet, and asks for one motion vector per video
frame (``next_motion``). The core plays a frame of audio only once its motion is ready,
so face and voice stay in step. While nothing is said the timeline is silence and the
generator keeps producing idle motion, a chunk at a time, never more than a chunk ahead;
a new reply starts at the next frame to play and drops that idle look-ahead.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from renderer.motion.checkpoint import DEFAULT_CHECKPOINT, load_model
from renderer.motion.model import MotionDiT
from renderer.motion.space import MOTION_FPS
from renderer.motion.stream import MotionGenerator

_cache: dict[tuple[Path, int, float], MotionDiT] = {}
_cache_lock = threading.Lock()


def shared_model(path: Path | None = None) -> MotionDiT:
    """The model at ``path`` (default: shipped), loaded once per file version and shared.

    Sessions only read the weights (inference mode), so one copy serves them all.
    """
    resolved = Path(path or DEFAULT_CHECKPOINT).resolve()
    try:
        stat = resolved.stat()
        key = (resolved, stat.st_size, stat.st_mtime)
    except OSError:
        return load_model(resolved)  # raises the checkpoint error naming the path
    with _cache_lock:
        model = _cache.get(key)
        if model is None:
            model = _cache[key] = load_model(resolved)
            _warm_up(model)
        return model


def _warm_up(model: MotionDiT) -> None:
    """One throwaway chunk, so a session's first real chunk does not pay torch's lazy setup."""
    generator = MotionGenerator(model, steps=1)
    generator.take(1)


class LearnedMotion:
    """Streaming motion source for AvatarCore backed by a MotionGenerator."""

    def __init__(
        self,
        checkpoint: Path | None = None,
        *,
        steps: int = 4,
        seed: int = 0,
        fps: int = MOTION_FPS,
        model: MotionDiT | None = None,
    ) -> None:
        if fps != MOTION_FPS:
            raise ValueError(
                f"the learned motion model runs at {MOTION_FPS} fps, got fps={fps}; set "
                "avatar.fps to 25 or use avatar.motion = 'procedural'"
            )
        self.generator = MotionGenerator(
            model if model is not None else shared_model(checkpoint), steps=steps, seed=seed
        )

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

    def prefetch(self) -> None:
        """Generate the next frames' motion now if it is due and its audio is in."""
        self.generator.prefetch()

    def next_motion(self, speaking: bool) -> np.ndarray:
        """Motion for this frame: the next one on the timeline, or the last one again
        while the core waits for audio (an underrun)."""
        if self.generator.can_take():
            return self.generator.take(1)[0]
        return self.generator.last_frame().copy()
