"""The motion-source seam: the avatar's audio timeline in, one motion vector per frame out.

The core (``renderer/core.py``) hands every source the speech audio as it is queued
(``push_audio``, so a source can look ahead), says where an utterance ends, clears it on
an interruption, and asks for one motion vector per video frame (``next_motion``).

Optional capabilities are small protocols of their own, checked with ``isinstance``:

* :class:`SteppedMotion`: a sampler whose steps the degradation ladder may trade.
* :class:`ChunkedMotion`: motion made a chunk at a time, whose sampling runs off the
  caller's thread (batched with other sessions'): cut a job on the caller's thread,
  submit it, commit the sampled chunk back on the caller's thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from typing import Protocol, runtime_checkable

import numpy as np

from renderer.motion.batch import ChunkJob
from renderer.motion.batcher import SampledChunk
from speech.phonemes import PhonemeMark


@runtime_checkable
class MotionSource(Protocol):
    """Turns the avatar's audio timeline into motion, one frame at a time."""

    #: True when ``next_motion`` reads each frame's audio and phoneme marks; a source
    #: that does not (it has the pushed audio already) spares the core that work.
    reads_frames: bool

    def push_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Speech audio, int16 mono at the core's rate, in the order it will play."""
        ...

    def end_audio(self, n_frames: int) -> None:
        """The utterance pushed since the last end is complete and spans ``n_frames``."""
        ...

    def clear(self) -> None:
        """Interruption: drop every pending sample and motion frame."""
        ...

    def ready(self) -> bool:
        """True when the motion of the next frame to play can be produced now."""
        ...

    def next_motion(
        self,
        audio: np.ndarray,
        sample_rate: int,
        phonemes: Sequence[PhonemeMark],
        speaking: bool,
    ) -> np.ndarray:
        """(MOTION_DIM,) float32 motion for this frame period.

        ``audio`` (float32 mono in [-1, 1]) and ``phonemes`` (offsets into the frame) are
        the frame's own, given only to a source that ``reads_frames``.
        """
        ...


@runtime_checkable
class SteppedMotion(Protocol):
    """A source whose sampler steps can be traded for time."""

    @property
    def steps(self) -> int:
        """Sampler steps per motion chunk at the moment."""
        ...

    def set_steps(self, steps: int) -> None:
        """Sample the following chunks with ``steps`` steps."""
        ...


@runtime_checkable
class ChunkedMotion(Protocol):
    """A source that makes motion in chunks, sampled wherever the caller likes."""

    def next_job(self) -> ChunkJob | None:
        """The chunk the next frame needs, if it is due and its audio is in."""
        ...

    def submit_job(self, job: ChunkJob) -> Future[SampledChunk]:
        """Have the job sampled off this thread; the future holds its motion."""
        ...

    def is_current(self, job: ChunkJob) -> bool:
        """Whether ``job`` is still the chunk the timeline needs next."""
        ...

    def commit(self, job: ChunkJob, motion: np.ndarray) -> bool:
        """Put a sampled chunk on the timeline; False if the timeline moved on meanwhile."""
        ...
