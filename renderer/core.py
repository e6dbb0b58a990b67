"""AvatarCore: the avatar's audio timeline and its motion (no pipecat, no clock, no threads).

``push_audio`` / ``end_segment`` / ``clear_buffer`` feed it; ``advance`` is called once per
video frame period and hands back exactly one frame's worth of audio plus the motion for
that frame; ``render`` turns a motion vector into pixels through the configured face
drawer (``renderer/frames/``). :class:`renderer.player.AvatarPlayer` drives it on a frame
clock.

Timeline: ``samples_pushed`` and ``samples_played`` count samples at ``sample_rate`` over
the core's lifetime. Pushed includes the silence that ``end_segment`` pads with; played
counts samples handed out by ``advance`` plus samples dropped by ``clear_buffer`` (which
makes them equal). Both only grow, so an adapter can tag anything it must release in step
with the audio with the current ``samples_pushed`` and release it once ``samples_played``
reaches the tag.

Motion comes from a :class:`~renderer.motion.source.MotionSource`: it is handed the speech
audio as it is pushed, so it can look ahead, and asked for one motion vector every frame,
speech or idle. ``advance`` plays a frame of audio only once the source can make that
frame's motion (until then the frame is an underrun: speaking, no audio, motion held).
Only a source that ``reads_frames`` (the procedural one) gets each frame's audio and
phoneme marks; for the learned one the core keeps no marks at all. A source that makes
motion in chunks (``ChunkedMotion``) lets the player sample the next chunk on a worker
thread before ``advance`` needs it (``motion_job`` / ``commit_motion``).

Quality: ``levels`` are the rungs of the degradation ladder (``renderer/ladder.py``) for
this core's motion and size, and ``set_quality`` moves to one: fewer sampler steps for a
``SteppedMotion`` source, a new image only every ``render_every`` frames (``FrameStep.draw``
says which; the caller repeats the last image on the others), and drawing at a smaller
size that ``render`` upscales, so its images always have the output size.

Everything but ``render`` and ``prepare_drawers`` is meant for one thread (the event
loop); those two are safe to call from a worker thread.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import soxr
import torch
import torch.nn.functional as F
from loguru import logger

from renderer.config import AvatarSettings
from renderer.frames import FrameDrawer, build_drawer
from renderer.ladder import QualityLevel, build_levels
from renderer.motion.batch import ChunkJob
from renderer.motion.source import ChunkedMotion, MotionSource, SteppedMotion
from renderer.motion.visemes import VISEME_IDX
from speech.phonemes import PhonemeMark

# A pause, a resume or an interruption changes where motion comes from; the face eases
# into the new motion over this many frames instead of cutting.
BLEND_FRAMES = 3
# A resume restarts the audio at full loudness, so the mouth opens within a frame: a
# longer blend would leave the lips visibly behind the voice.
RESUME_BLEND_FRAMES = 1
# While paused the mouth relaxes by this factor per frame (closed in about 4 frames).
PAUSE_MOUTH_DECAY = 0.5
# Speech frames remembered so that a pause can take back what the transport never sent.
REWIND_FRAMES = 10
_EMPTY = np.zeros(0, dtype=np.float32)  # a frame's audio, for sources that do not read it


@dataclass
class FrameStep:
    """What one frame period produced."""

    index: int  # frame counter since start
    audio: bytes  # int16 mono PCM at core.sample_rate for this frame period, or b""
    motion: np.ndarray  # (MOTION_DIM,) float32
    speaking: bool
    draw: bool = True  # False: the quality level skips this image; repeat the last one


@dataclass
class _Segment:
    start: int  # samples_pushed when its first sample arrived
    end: int | None = None  # samples_pushed after its last real sample (before padding)


class AvatarCore:
    """Buffers speech audio and phonemes, hands them out per frame, drives the motion."""

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
        self._drawer = build_drawer(settings)
        self._motion: MotionSource = motion_source or _default_motion(settings, self._drawer)
        steps = self._motion.steps if isinstance(self._motion, SteppedMotion) else 0
        self.levels = build_levels(settings.fps, settings.width, settings.height, steps)
        self._quality = self.levels[0]
        self._skip_left = 0  # frames to go before the next image is drawn
        # Drawers by size: the output size, plus smaller ones made when a level needs them.
        self._drawers = {(self._drawer.width, self._drawer.height): self._drawer}
        self._drawers_lock = threading.Lock()
        self._buffer = bytearray()  # pending int16 PCM at sample_rate
        self._marks: deque[tuple[int, str]] = deque()  # (absolute sample, ipa), sorted
        self._segments: deque[_Segment] = deque()
        self._open = False  # a segment is accepting audio (pushed, not yet ended)
        self._resampler: soxr.ResampleStream | None = None
        self._resampler_rate = 0
        self._resampler_in = 0  # input samples the resampler has taken
        self._resampler_origin = 0  # samples_pushed when the resampler started
        self._index = 0
        self._paused = False
        # Gaps in a reply: frames of an open segment, after its first audio played, that
        # had no audio to play (synthesis fell behind), and how many such stretches.
        self.gap_frames = 0
        self.gaps = 0
        self._segment_heard = False  # the open segment has played audio
        self._gap_run = 0  # frames of the gap going on (0: none)
        self._last_motion: np.ndarray | None = None
        self._blend_left = 0
        # The newest speech frames handed out: (audio, samples of it that were speech, motion).
        self._history: deque[tuple[bytes, int, np.ndarray]] = deque(maxlen=REWIND_FRAMES)
        self._replay: deque[np.ndarray] = deque()  # motion of taken-back frames, oldest first

    @property
    def motion_source(self) -> MotionSource:
        """Where this core's motion comes from."""
        return self._motion

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return self._drawer.width

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return self._drawer.height

    @property
    def quality(self) -> QualityLevel:
        """The quality level frames are made at (``levels[0]`` unless degraded)."""
        return self._quality

    def set_quality(self, level: QualityLevel) -> None:
        """Move to one of ``levels``: the sampler steps apply from the next motion chunk,
        the image stride from the next frame, the draw size from the next ``render``."""
        if level not in self.levels:
            raise ValueError(f"{level} is not one of this core's quality levels")
        if level.motion_steps and isinstance(self._motion, SteppedMotion):
            self._motion.set_steps(level.motion_steps)
        self._skip_left = min(self._skip_left, level.render_every - 1)
        self._quality = level

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
            self._segment_heard = False
            self._segments.append(_Segment(start=self.samples_pushed))
        samples = np.frombuffer(pcm, dtype=np.int16)
        marks = phonemes if self._motion.reads_frames else ()
        if sample_rate == self.sample_rate:
            self._finish_resampler()  # a rate change mid-segment ends the old stream
            for mark in marks:
                at = self.samples_pushed + round(max(mark.offset_s, 0.0) * self.sample_rate)
                self._add_mark(at, mark.ipa)
            self._append(samples)
            return
        if self._resampler is None or self._resampler_rate != sample_rate:
            self._finish_resampler()
            # Quick (cubic) quality: no filter delay, so a reply's first frame is not held
            # back, and no ringing at its first sample.
            self._resampler = soxr.ResampleStream(
                sample_rate, self.sample_rate, 1, dtype="int16", quality="QQ"
            )
            self._resampler_rate, self._resampler_in = sample_rate, 0
            self._resampler_origin = self.samples_pushed
        for mark in marks:
            # The resampled stream keeps time: input second s is output sample s * rate.
            in_s = self._resampler_in / sample_rate + max(mark.offset_s, 0.0)
            at = self._resampler_origin + round(in_s * self.sample_rate)
            self._add_mark(max(at, self.samples_pushed), mark.ipa)
        self._resampler_in += samples.size
        self._append(self._resampler.resample_chunk(samples))

    def end_segment(self) -> None:
        """The current utterance is complete: pad its last partial frame with silence."""
        if not self._open:
            return
        self._finish_resampler()
        segment = self._segments[-1]
        segment.end = self.samples_pushed
        partial = self.pending_samples % self.samples_per_frame
        if partial:
            pad = np.zeros(self.samples_per_frame - partial, dtype=np.int16)
            self._append(pad, speech=False)
        self._open = False
        frames = (self.samples_pushed - segment.start) // self.samples_per_frame
        self._motion.end_audio(frames)

    @property
    def paused(self) -> bool:
        """True while speech is held because the user may be talking."""
        return self._paused

    def pause(self) -> None:
        """Hold the speech where it is (audio stays queued); the mouth relaxes, the face holds."""
        if not self._paused:
            self._paused = True
            self._blend_left = BLEND_FRAMES

    def rewind(self, frames: int) -> int:
        """Take back the newest ``frames`` speech frames, which were never heard.

        While paused, the output transport hands back the reply audio it had not sent yet;
        those frames' audio goes back in front of the buffer and their motion is replayed
        with it, so the reply resumes exactly where the listener stopped hearing it.
        Returns how many frames were taken back (at most ``REWIND_FRAMES``).
        """
        taken = 0
        while taken < frames and self._history:
            audio, played, motion = self._history.pop()
            self._buffer[:0] = audio[: played * 2]
            self.samples_played -= played
            self._replay.appendleft(motion)
            taken += 1
        return taken

    def resume(self) -> None:
        """Continue the held speech from where it stopped."""
        if self._paused:
            self._paused = False
            self._blend_left = RESUME_BLEND_FRAMES

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
        self._history.clear()
        self._replay.clear()
        self._segment_heard = False
        self._gap_run = 0
        self._paused = False
        self._blend_left = BLEND_FRAMES
        self._motion.clear()
        return played

    @property
    def audio_ready(self) -> bool:
        """True when the next ``advance`` will play a frame of speech audio."""
        if self._paused:
            return False
        pending = self.pending_samples
        has_frame = pending >= self.samples_per_frame or (pending > 0 and not self._open)
        # The source must be able to make the frame's motion before its audio may play.
        return has_frame and self._motion.ready()

    def motion_job(self) -> ChunkJob | None:
        """The motion chunk the next ``advance`` needs, to be sampled off this thread
        (``ChunkedMotion.run_job``) and handed back with ``commit_motion``; None when
        nothing is due, the source has no chunks, or the speech is paused."""
        if self._paused or not isinstance(self._motion, ChunkedMotion):
            return None
        return self._motion.next_job()

    def motion_job_is_current(self, job: ChunkJob) -> bool:
        """Whether a job from ``motion_job`` is still the chunk the timeline needs next."""
        return isinstance(self._motion, ChunkedMotion) and self._motion.is_current(job)

    def commit_motion(self, job: ChunkJob, motion: np.ndarray) -> bool:
        """A chunk sampled from ``motion_job``; False if the timeline moved on meanwhile."""
        assert isinstance(self._motion, ChunkedMotion)
        return self._motion.commit(job, motion)

    def advance(self) -> FrameStep:
        """One frame period: take a frame of audio (or none on underrun/idle), run motion."""
        if self._paused and self._last_motion is not None:
            held = self._last_motion.copy()
            held[VISEME_IDX] *= PAUSE_MOUTH_DECAY  # the mouth channels
            self._last_motion = held
            step = FrameStep(
                index=self._index, audio=b"", motion=held, speaking=True, draw=self._draw_now()
            )
            self._index += 1
            return step
        spf = self.samples_per_frame
        marks: list[PhonemeMark] = []
        replayed: np.ndarray | None = None
        if self.audio_ready:
            start = self.samples_played
            audio = bytes(self._buffer[: spf * 2]).ljust(spf * 2, b"\0")
            del self._buffer[: spf * 2]
            played = min(spf, self.pending_samples)
            self.samples_played += played
            replayed = self._replay.popleft() if self._replay else None
            while self._marks and self._marks[0][0] < start + spf:
                at, ipa = self._marks.popleft()
                marks.append(PhonemeMark(ipa, max(at - start, 0) / self.sample_rate))
            speaking = True
            if self._gap_run:
                logger.info(f"avatar: the reply's audio ran dry for {self._gap_run} frames")
            self._segment_heard, self._gap_run = True, 0
            samples = _EMPTY
            if self._motion.reads_frames:
                samples = np.frombuffer(audio, np.int16).astype(np.float32) * (1.0 / 32768.0)
        else:
            # Underrun (segment still open: keep speaking, no audio) or idle.
            audio = b""
            speaking = self._open
            if speaking and self._segment_heard:
                self.gap_frames += 1
                self.gaps += not self._gap_run
                self._gap_run += 1
            samples = _EMPTY
            if not speaking:
                self._marks.clear()  # marks past the end of the audio will never play
        if replayed is not None:
            motion = replayed  # a taken-back frame: its motion was already generated
        else:
            motion = self._motion.next_motion(samples, self.sample_rate, marks, speaking)
        if self._blend_left and self._last_motion is not None:
            alpha = 1.0 / (self._blend_left + 1)
            motion = self._last_motion + alpha * (motion - self._last_motion)
            self._blend_left -= 1
        self._last_motion = motion
        if audio:
            self._history.append((audio, played, motion))
        step = FrameStep(
            index=self._index,
            audio=audio,
            motion=motion,
            speaking=speaking,
            draw=self._draw_now(),
        )
        self._index += 1
        self._prune_segments()
        return step

    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        """Pixels for a motion vector: (H, W, 3) uint8 RGB at the output size, drawn at the
        quality level's size; safe to call from a worker thread. Setting ``cancel`` calls
        the drawing off (``DrawCancelled``)."""
        level = self._quality
        size = (level.draw_width, level.draw_height)
        drawer = self._drawers.get(size) or self._make_drawer(size)
        image = drawer.render(motion, cancel)
        if drawer is not self._drawer:
            image = _upscale(image, self.height, self.width)
        return image

    def _draw_now(self) -> bool:
        """Whether this frame gets a new image under the current render stride."""
        if self._skip_left:
            self._skip_left -= 1
            return False
        self._skip_left = self._quality.render_every - 1
        return True

    def prepare_drawers(self) -> None:
        """Build the drawer of every quality level now (seconds of work, off the clock's
        path), so a step down the ladder never stalls a frame while one is built."""
        for level in self.levels:
            size = (level.draw_width, level.draw_height)
            if size not in self._drawers:
                self._make_drawer(size)

    def _make_drawer(self, size: tuple[int, int]) -> FrameDrawer:
        # Normally built by prepare_drawers; otherwise on first use, in the render thread.
        with self._drawers_lock:
            drawer = self._drawers.get(size)
            if drawer is None:
                drawer = build_drawer(self.settings, *size)
                self._drawers = {**self._drawers, size: drawer}
            return drawer

    def _append(self, samples: np.ndarray, speech: bool = True) -> None:
        samples = samples.astype("<i2", copy=False)
        self._buffer += samples.tobytes()
        self.samples_pushed += samples.size
        if speech and samples.size:
            self._motion.push_audio(samples, self.sample_rate)

    def _add_mark(self, at: int, ipa: str) -> None:
        # Marks normally arrive in order; keep the deque sorted when they do not.
        if self._marks and self._marks[-1][0] > at:
            items = sorted([*self._marks, (at, ipa)], key=lambda m: m[0])
            self._marks = deque(items)
        else:
            self._marks.append((at, ipa))

    def _finish_resampler(self) -> None:
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, np.int16), last=True)
            self._resampler = None
            self._append(tail)

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


def _default_motion(settings: AvatarSettings, drawer: FrameDrawer) -> MotionSource:
    """The motion source the settings name, on the drawer's device."""
    if settings.motion == "procedural":
        from renderer.motion.procedural import ProceduralMotion

        return ProceduralMotion(fps=settings.fps, seed=settings.seed)
    from renderer.motion.learned import LearnedMotion

    return LearnedMotion(
        settings.motion_checkpoint,
        steps=settings.motion_steps,
        seed=settings.seed,
        fps=settings.fps,
        device=drawer.device,
    )


def _upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an (h, w, 3) uint8 image to (height, width, 3)."""
    with torch.inference_mode():
        x = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, 3, h, w)
        y = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
        return y[0].permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)
