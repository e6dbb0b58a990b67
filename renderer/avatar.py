"""AvatarCore: audio in, paced frame steps out, cleared on interruption (no pipecat here).

Shaped like LiveKit's avatar runner: ``push_audio`` / ``end_segment`` /
``clear_buffer`` feed it, ``advance`` is called once per video frame period and
hands back exactly one frame's worth of audio plus the motion for that frame, and
``render`` turns a motion vector into pixels (the heavy part, for a worker thread).

Timeline: ``samples_pushed`` and ``samples_played`` count samples at
``sample_rate`` over the core's lifetime. Pushed includes the silence that
``end_segment`` pads with; played counts samples handed out by ``advance`` plus
samples dropped by ``clear_buffer`` (which makes them equal). Both only grow, so an
adapter can tag anything it must release in step with the audio with the current
``samples_pushed`` and release it once ``samples_played`` reaches the tag.

``push_audio``, ``end_segment``, ``clear_buffer`` and ``advance`` are meant for one
thread (the event loop); ``render`` is safe to call from a worker thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from renderer.config import AvatarSettings
from renderer.frames.face import FaceRenderer
from renderer.motion.procedural import ProceduralMotion
from renderer.phonemes import PhonemeMark
from renderer.resample import StreamResampler


@dataclass
class FrameStep:
    """What one frame period produced."""

    index: int  # frame counter since start
    audio: bytes  # int16 mono PCM at core.sample_rate for this frame period, or b""
    motion: np.ndarray  # (MOTION_DIM,) float32
    speaking: bool


class MotionSource(Protocol):
    """Turns one frame of audio (+ phoneme marks relative to it) into a motion vector."""

    def step(
        self,
        audio: np.ndarray,
        sample_rate: int,
        phonemes: Sequence[PhonemeMark],
        speaking: bool,
    ) -> np.ndarray:
        """(MOTION_DIM,) float32 motion for this frame."""
        ...


@dataclass
class _Segment:
    start: int  # samples_pushed when its first sample arrived
    end: int | None = None  # samples_pushed after its last real sample (before padding)


class AvatarCore:
    """Buffers speech audio and phonemes, paces them out per frame, drives the motion."""

    def __init__(
        self,
        settings: AvatarSettings,
        sample_rate: int = 24000,
        *,
        motion_source: MotionSource | None = None,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if sample_rate % settings.fps:
            raise ValueError(
                f"sample_rate {sample_rate} Hz is not a whole number of samples per frame at "
                f"{settings.fps} fps; pick a rate divisible by the fps (e.g. 24000 or 16000 "
                "at 25 fps)"
            )
        self.settings = settings
        self.sample_rate = sample_rate
        self.fps = settings.fps
        self.samples_per_frame = sample_rate // settings.fps
        self.samples_pushed = 0
        self.samples_played = 0
        self._renderer = FaceRenderer(settings.width, settings.height, settings.device)
        if self._renderer.device.type == "cpu":
            # Process-wide, set once: the renderer is tuned for a small fixed thread count.
            torch.set_num_threads(settings.torch_threads)
        # settings.motion has one choice so far; a learned source plugs in through the argument.
        self._motion: MotionSource = motion_source or ProceduralMotion(
            fps=settings.fps, seed=settings.seed
        )
        self._buffer = bytearray()  # pending int16 PCM at sample_rate
        self._marks: deque[tuple[int, str]] = deque()  # (absolute sample, ipa), sorted
        self._segments: deque[_Segment] = deque()
        self._open = False  # a segment is accepting audio (pushed, not yet ended)
        self._resampler: StreamResampler | None = None
        self._resampler_origin = 0  # samples_pushed when the resampler started
        self._index = 0

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._renderer.width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._renderer.height

    @property
    def pending_samples(self) -> int:
        """Samples buffered and not yet handed out."""
        return self.samples_pushed - self.samples_played

    @property
    def pending_seconds(self) -> float:
        """Seconds of audio buffered and not yet handed out."""
        return self.pending_samples / self.sample_rate

    @property
    def speaking(self) -> bool:
        """True while a segment is open or its audio is still buffered."""
        return self._open or self.pending_samples > 0

    def push_audio(
        self, pcm: bytes, sample_rate: int, phonemes: Sequence[PhonemeMark] = ()
    ) -> None:
        """Queue int16 mono PCM (resampled to ``self.sample_rate``) and its phoneme marks."""
        if len(pcm) % 2:
            raise ValueError(
                f"PCM must be 16-bit mono (2 bytes per sample), got an odd length of "
                f"{len(pcm)} bytes"
            )
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if not self._open:
            self._open = True
            self._segments.append(_Segment(start=self.samples_pushed))
        samples = np.frombuffer(pcm, dtype=np.int16)
        if sample_rate == self.sample_rate:
            self._finish_resampler()  # a rate change mid-segment ends the old stream
            for mark in phonemes:
                at = self.samples_pushed + round(max(mark.offset_s, 0.0) * self.sample_rate)
                self._add_mark(at, mark.ipa)
            self._append(samples)
            return
        rs = self._resampler
        if rs is None or rs.src_rate != sample_rate:
            self._finish_resampler()
            rs = self._resampler = StreamResampler(sample_rate, self.sample_rate)
            self._resampler_origin = self.samples_pushed
        for mark in phonemes:
            at = self._resampler_origin + rs.output_index(max(mark.offset_s, 0.0))
            self._add_mark(max(at, self.samples_pushed), mark.ipa)
        self._append(rs.process(samples))

    def end_segment(self) -> None:
        """The current utterance is complete: pad its last partial frame with silence."""
        if not self._open:
            return
        self._finish_resampler()
        self._segments[-1].end = self.samples_pushed
        partial = self.pending_samples % self.samples_per_frame
        if partial:
            self._append(np.zeros(self.samples_per_frame - partial, dtype=np.int16))
        self._open = False

    def clear_buffer(self) -> float:
        """Interruption: drop all pending audio and phonemes; return seconds of the current
        segment already played (the last segment's played length when the buffer is idle)."""
        played = self._played_in_segment()
        self._buffer.clear()
        self._marks.clear()
        self._segments.clear()
        self._resampler = None
        self._open = False
        self.samples_played = self.samples_pushed  # dropped samples count as consumed
        return played

    def advance(self) -> FrameStep:
        """One frame period: take a frame of audio (or none on underrun/idle), run motion."""
        spf = self.samples_per_frame
        marks: list[PhonemeMark] = []
        if self.pending_samples >= spf or (self.pending_samples and not self._open):
            start = self.samples_played
            audio = bytes(self._buffer[: spf * 2]).ljust(spf * 2, b"\0")
            del self._buffer[: spf * 2]
            self.samples_played += min(spf, self.pending_samples)
            self.samples_pushed = max(self.samples_pushed, self.samples_played)
            while self._marks and self._marks[0][0] < start + spf:
                at, ipa = self._marks.popleft()
                marks.append(PhonemeMark(ipa, max(at - start, 0) / self.sample_rate))
            speaking = True
            samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) * (1.0 / 32768.0)
        else:
            # Underrun (segment still open: keep speaking, no audio) or idle.
            audio = b""
            speaking = self._open
            samples = np.zeros(0, dtype=np.float32)
            if not speaking:
                self._marks.clear()  # marks past the end of the audio will never play
        motion = self._motion.step(samples, self.sample_rate, marks, speaking)
        step = FrameStep(index=self._index, audio=audio, motion=motion, speaking=speaking)
        self._index += 1
        self._prune_segments()
        return step

    def render(self, motion: np.ndarray) -> np.ndarray:
        """Pixels for a motion vector: (H, W, 3) uint8 RGB; safe to call from a worker thread."""
        return self._renderer.render(motion)

    def _append(self, samples: np.ndarray) -> None:
        self._buffer += samples.astype("<i2", copy=False).tobytes()
        self.samples_pushed += samples.size

    def _add_mark(self, at: int, ipa: str) -> None:
        # Marks normally arrive in order; keep the deque sorted when they do not.
        if self._marks and self._marks[-1][0] > at:
            items = sorted([*self._marks, (at, ipa)], key=lambda m: m[0])
            self._marks = deque(items)
        else:
            self._marks.append((at, ipa))

    def _finish_resampler(self) -> None:
        if self._resampler is not None:
            self._append(self._resampler.flush())
            self._resampler = None

    def _played_in_segment(self) -> float:
        """Seconds played of the segment being played out (or the last one played)."""
        current = None
        for seg in self._segments:
            if seg.start <= self.samples_played:
                current = seg
        if current is None:
            return 0.0
        played = self.samples_played - current.start
        if current.end is not None:
            played = min(played, current.end - current.start)
        return max(played, 0) / self.sample_rate

    def _prune_segments(self) -> None:
        # Keep the last fully played segment (clear_buffer may still report it).
        while len(self._segments) > 1 and self._segments[1].start <= self.samples_played:
            self._segments.popleft()
