"""AvatarPlayer: pushed speech audio in, paced (audio, image) frames out. No pipecat here.

Its surface is the shape of LiveKit's avatar runner: ``push_audio`` as fast as TTS makes
it, ``flush`` at the end of a segment, ``clear_buffer`` on an interruption (it returns how
much of the segment was heard, so the conversation keeps only that), ``pause`` and
``resume`` while the user may be talking, and ``async for frame in player`` for the
output: one :class:`AvatarFrame` per video frame period, each released on time, carrying
that period's slice of audio (or none) and the image drawn for it. A pipecat stage, a
LiveKit worker or an offline renderer drive the same player; an offline renderer makes it
with ``paced=False``, which takes the clock away: each frame is made as soon as the one
before was taken, at full quality (there is no frame period to keep, so no ladder).

Inside, a frame clock paces :class:`~renderer.core.AvatarCore` (the audio timeline and
its motion). The heavy work stays off the event loop: the motion model's chunks are
sampled by the process's motion batcher (with other calls' chunks; each is handed over as
soon as it is due, so it is sampled while the previous frame is drawn), and images are
drawn through the configured face drawer on the player's render thread. When nothing is
said the clock keeps making idle frames, so the video never stalls. A reply does not wait
for an idle image: one still being drawn when speech is ready is called off (the drawer
stops at its next checkpoint) and the reply's first frame takes its place; its motion is
sampled meanwhile. An image whose motion has not changed (the face held while audio is
late) is not drawn again.

When a reply is known to be coming (``hold_still``: the user's turn has ended), idle
frames show the last image again until its speech is ready, for at most the time asked:
on a few cores the reply's first audio and frame are made sooner without idle drawing
beside them, and a breath of idle motion held for the tenth or fifth of a second that
takes is not seen.

The clock times each frame's work (motion and drawing, measured in the worker threads so
a busy event loop is not mistaken for a slow renderer) and feeds it to the degradation
ladder (``renderer/ladder.py``), which steps the core's quality down when frames fall
behind their budget and back up when there is headroom; each step is logged. On frames
the quality level does not draw, the last image goes out again: one frame per period.

Everything but the worker threads runs on the event loop; no method blocks it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from loguru import logger

from renderer.core import AvatarCore
from renderer.frames import DrawCancelled
from renderer.ladder import DegradationLadder, QualityLevel
from renderer.motion.batch import ChunkJob
from renderer.motion.batcher import SampledChunk
from renderer.motion.source import ChunkedMotion
from speech.phonemes import PhonemeMark

# A clock at most this late catches up by making the frames it owes back to back; the
# outgoing audio track waits a little longer than this for a late write (see
# pipelines/transports/smallwebrtc.py), so the burst only makes up for the delay. A clock
# later than this restarts from now instead: the outgoing track has covered the stall
# with silence, and a burst would leave that much reply audio queued behind the face.
MAX_CATCH_UP_S = 0.05
# A stall this long (a debugger, a swapped-out process) is worth a warning.
STALL_WARNING_S = 0.2


@dataclass(frozen=True)
class AvatarFrame:
    """One video frame period of the avatar."""

    index: int  # frames made since start
    audio: bytes  # int16 mono PCM at the player's sample rate for this period, or b""
    image: bytes  # (height, width, 3) uint8 RGB: drawn for this period, or the last repeated
    size: tuple[int, int]  # (width, height)
    drawn: bool  # a new image (False: the last one again)
    speaking: bool  # inside a reply (audio may still be missing: an underrun or a pause)


class AvatarPlayer:
    """Paces an :class:`AvatarCore` into frames; see the module docstring."""

    def __init__(self, core: AvatarCore, *, paced: bool = True) -> None:
        self.core = core
        self.paced = paced  # False: no frame clock, frames as fast as they can be made
        settings = core.settings
        self.ladder: DegradationLadder | None = None
        if settings.degrade and paced:
            self.ladder = DegradationLadder(
                core.levels, core.fps, budget_ratio=settings.frame_budget_ratio
            )
        source = core.motion_source
        self._chunked = source if isinstance(source, ChunkedMotion) else None
        self._render: ThreadPoolExecutor | None = None
        self._motion_job: tuple[ChunkJob, Future[SampledChunk]] | None = None
        self._closed = False
        # Bumped by every interruption, so a frame being made while it happened does not
        # release audio that belongs to the interrupted reply.
        self._epoch = 0
        self._returned_frames = 0  # handed back unsent; rewound before the next frame
        self._speech_ready = asyncio.Event()  # speech can start between idle frames
        self._idle_draw: threading.Event | None = None  # calls off the idle image drawn now
        self._image: bytes | None = None  # the last image, repeated on frames not drawn
        self._image_motion: np.ndarray | None = None  # the motion that image shows
        self._playing = False  # the last frame carried audio
        self._still_until = 0.0  # idle frames repeat the last image until then (monotonic)
        self._clock_start = 0.0
        self._clock_index = 0
        self._due: float | None = None  # when the next frame is due (None: now)
        self.frames_rendered = 0  # frames made (one per period)
        self.frames_drawn = 0  # of those, newly drawn images (the rest repeat the last)
        self.draws_called_off = 0  # images without speech given up for a speech frame
        self.frames_held = 0  # idle frames that repeated the last image (``hold_still``)

    # ------------------------------------------------------------------ the timeline

    @property
    def sample_rate(self) -> int:
        """Sample rate of the audio in and out."""
        return self.core.sample_rate

    @property
    def samples_per_frame(self) -> int:
        """Audio samples per video frame period."""
        return self.core.samples_per_frame

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the images."""
        return (self.core.width, self.core.height)

    @property
    def samples_pushed(self) -> int:
        """Samples pushed so far (with the padding that ends each segment)."""
        return self.core.samples_pushed

    @property
    def samples_played(self) -> int:
        """Samples released in frames so far, plus those dropped by ``clear_buffer``."""
        return self.core.samples_played

    @property
    def pending_seconds(self) -> float:
        """Seconds of audio pushed and not yet released."""
        return self.core.pending_seconds

    @property
    def speaking(self) -> bool:
        """True while a segment is open or its audio is still queued."""
        return self.core.speaking

    @property
    def paused(self) -> bool:
        """True while the speech is held (``pause``)."""
        return self.core.paused

    @property
    def quality(self) -> QualityLevel:
        """The quality level frames are made at."""
        return self.core.quality

    # --------------------------------------------------------------------- the input

    def push_audio(
        self, pcm: bytes, sample_rate: int, phonemes: Sequence[PhonemeMark] = ()
    ) -> None:
        """Queue int16 mono speech (any rate) and its phoneme marks; starts a segment."""
        self.core.push_audio(pcm, sample_rate, phonemes)
        self._start_speech_if_ready()

    def flush(self) -> None:
        """The current segment is complete: its last partial frame is padded, then it ends."""
        self.core.end_segment()
        self._start_speech_if_ready()  # a short reply may only now have its last frame

    def clear_buffer(self) -> float:
        """Interruption: drop all queued audio and motion. Returns the seconds of the
        current segment that were released (heard), for the conversation's history."""
        self._epoch += 1
        self._returned_frames = 0
        self._still_until = 0.0
        return self.core.clear_buffer()

    def pause(self) -> None:
        """Hold the speech where it is (it stays queued); the mouth relaxes, the face lives."""
        self.core.pause()

    def resume(self) -> None:
        """Continue the held speech from where it stopped."""
        self.core.resume()
        self._start_speech_if_ready()

    def hold_still(self, seconds: float) -> None:
        """A reply is coming: until its speech is ready (or ``seconds`` pass), idle frames
        repeat the last image instead of sampling and drawing new idle motion. 0 lets
        the face move again now."""
        if seconds <= 0:
            self._still_until = 0.0
        elif not self.speaking:
            self._still_until = time.monotonic() + seconds

    def take_back(self, frames: int) -> None:
        """While paused: the newest ``frames`` frames released were never heard (a transport
        had not sent them). They are put back before the next frame and replay on resume."""
        self._returned_frames += frames

    @property
    def epoch(self) -> int:
        """Bumped by every ``clear_buffer``, to tie answers to what they were about."""
        return self._epoch

    # -------------------------------------------------------------------- the output

    def start(self) -> None:
        """Start the render thread and, with a ladder, build every quality level's drawer
        there (queued first, so it is done before the first frame). Idempotent."""
        if self._render is None and not self._closed:
            self._render = ThreadPoolExecutor(1, thread_name_prefix="avatar-render")
            if self.ladder is not None:  # without one, only the first level is drawn
                self._render.submit(self.core.prepare_drawers)

    async def aclose(self) -> None:
        """Stop making frames and let the worker threads go; idempotent, never waits on
        a drawing in progress (it finishes on its own and is dropped). An iteration in
        progress ends with ``StopAsyncIteration``."""
        self._closed = True
        if self._motion_job is not None:
            self._motion_job[1].cancel()  # dropped if the batcher has not started it
            self._motion_job = None
        self._speech_ready.set()  # wakes a clock sleeping until the next frame
        if self._render is not None:
            self._render.shutdown(wait=False, cancel_futures=True)
            self._render = None

    def __aiter__(self) -> AvatarPlayer:
        return self

    async def __anext__(self) -> AvatarFrame:
        """The next frame, released when it is due (at once when it is the first of a reply)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise StopAsyncIteration
            self.start()
            await self._wait_until_due(loop)
            try:
                frame = await self._make_frame()
            except asyncio.CancelledError:
                # A worker future cancelled by aclose() ends the iteration; a cancelled
                # consumer task stays cancelled.
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    raise StopAsyncIteration from None
                raise
            except Exception as exc:  # keep the face alive: one bad frame must not end the call
                if self._closed:
                    raise StopAsyncIteration from exc
                if not self.paced:
                    raise  # offline, a skipped frame would lose its audio: fail instead
                logger.exception(f"avatar frame {self._clock_index} failed: {exc}")
                self._tick()
                continue
            if frame is None:  # the frame gave way to speech that is ready now
                self._restart_clock(loop)
                continue
            self._tick()
            return frame

    def _tick(self) -> None:
        self._clock_index += 1
        self._due = self._clock_start + self._clock_index / self.core.fps

    def _restart_clock(self, loop: asyncio.AbstractEventLoop) -> None:
        self._clock_start, self._clock_index, self._due = loop.time(), 0, None

    async def _wait_until_due(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.paced:
            return  # no clock: the next frame is due once the last one was taken
        if self._due is None:
            self._restart_clock(loop)
            return
        delay = self._due - loop.time()
        if delay > 0:
            if await self._wait_for_speech(delay):
                self._restart_clock(loop)  # the clock's phase follows the reply
        elif -delay > MAX_CATCH_UP_S:
            late = f"avatar frame clock {-delay * 1000:.0f} ms late; restarting it from now"
            if -delay > STALL_WARNING_S:
                logger.warning(late)
            else:
                logger.debug(late)
            self._restart_clock(loop)

    async def _wait_for_speech(self, timeout_s: float) -> bool:
        """Sleep until the next frame is due; True if speech became ready first.

        A reply's first frame goes out as soon as its audio and motion are ready instead
        of up to a frame period later; the clock then counts its periods from there.
        """
        self._speech_ready.clear()
        if not self._playing and self.core.audio_ready:
            return True
        try:
            await asyncio.wait_for(self._speech_ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _start_speech_if_ready(self) -> None:
        """Start speech now, not at the next idle tick: wake the clock, and call off an
        image being drawn without speech (the speech frame takes its place)."""
        if not self._playing and self.core.audio_ready:
            self._speech_ready.set()
            if self._idle_draw is not None:
                self._idle_draw.set()
            # The first speech frame's motion is sampled by the batcher meanwhile (while
            # the clock wakes, or the render thread gives its image up).
            self._prefetch_motion()

    async def _make_frame(self) -> AvatarFrame | None:
        """One frame period: motion, advance the core, draw if the image changes.

        Returns None when the frame's image was called off because speech became ready
        while it was drawn: nothing goes out, and the speech frame is made at once.
        """
        render = self._render
        self._rewind_returned()
        if self._holding_still():
            return self._repeat_last_image()
        work_s = await self._motion_for_next_frame()
        if self._closed or render is None:
            raise StopAsyncIteration
        epoch = self._epoch  # an interruption from here on drops this frame's audio
        began = time.perf_counter()
        step = self.core.advance()
        work_s += time.perf_counter() - began
        self._prefetch_motion()  # the next chunk, if due, is sampled while this one draws
        self._playing = bool(step.audio)
        unchanged = self._image_motion is not None and np.array_equal(
            step.motion, self._image_motion
        )
        drawn = False
        if self._image is None or (step.draw and not unchanged):
            # Only an image without speech may be called off (for speech).
            cancel = threading.Event() if self._image is not None and not step.audio else None
            self._idle_draw = cancel
            try:
                loop = asyncio.get_running_loop()
                image, draw_s = await loop.run_in_executor(render, self._draw, step.motion, cancel)
            finally:
                self._idle_draw = None
            if image is None:
                self.draws_called_off += 1
                return None
            self._image, self._image_motion = image, step.motion
            work_s += draw_s
            drawn = True
            self.frames_drawn += 1
        audio = b""
        if step.audio and epoch == self._epoch:
            if self.core.paused:  # paused while drawing: this audio was never released
                self.core.rewind(1)
            else:
                audio = step.audio
        assert self._image is not None
        frame = AvatarFrame(
            index=self.frames_rendered,
            audio=audio,
            image=self._image,
            size=self.size,
            drawn=drawn,
            speaking=step.speaking,
        )
        self.frames_rendered += 1
        self._observe_work(work_s)
        return frame

    def _holding_still(self) -> bool:
        if not self._still_until:
            return False
        if self.core.audio_ready or time.monotonic() >= self._still_until:
            self._still_until = 0.0
            return False
        return self._image is not None and not self._playing

    def _repeat_last_image(self) -> AvatarFrame:
        """An idle frame period with the image before it again (no motion, no drawing)."""
        assert self._image is not None
        frame = AvatarFrame(self.frames_rendered, b"", self._image, self.size, False, False)
        self.frames_rendered += 1
        self.frames_held += 1
        return frame

    def _rewind_returned(self) -> None:
        """Put the frames handed back after a pause back into the core.

        Done between frames, so a frame whose audio was never released (the pause came
        while it was drawn) has already been rewound and the count matches the newest.
        """
        frames, self._returned_frames = self._returned_frames, 0
        if frames and self.core.paused:
            taken = self.core.rewind(frames)
            logger.debug(f"avatar took back {taken} unsent frames of the paused reply")

    def _prefetch_motion(self) -> None:
        """Hand the chunk the next frame needs to the batcher, if it is due and not there."""
        if self._closed or self._chunked is None:
            return
        if self._motion_job is not None:
            if self.core.motion_job_is_current(self._motion_job[0]):
                return
            # Stale (an interruption, or a reply replacing idle motion): drop it (a batch
            # that already holds it finishes without us); the chunk that matters now goes
            # in at once.
            self._motion_job[1].cancel()
            self._motion_job = None
        job = self.core.motion_job()
        if job is not None:
            self._motion_job = (job, self._chunked.submit_job(job))

    async def _motion_for_next_frame(self) -> float:
        """Commit the chunk the next frame needs, waiting for the batcher if it is not
        sampled yet. Returns the frame work it cost: its sampling time, even when it was
        sampled ahead, in parallel with the last drawing. That time is spent on the same
        few cores, and counting it lets the ladder trade sampler steps first, which
        keeps a reply's first chunk (never sampled ahead) quick."""
        spent = 0.0
        while True:
            self._prefetch_motion()
            if self._motion_job is None:
                return spent
            job, future = self._motion_job
            try:
                sampled = await asyncio.wrap_future(future)
            except asyncio.CancelledError:
                # Speech arrived while the batcher had not yet taken this idle chunk, and
                # _prefetch_motion dropped it for the reply's: wait for that one instead.
                # (Ending here would end the player: the reply would never be heard.)
                task = asyncio.current_task()
                if future.cancelled() and not self._closed and task and not task.cancelling():
                    continue
                raise
            finally:
                if self._motion_job is not None and self._motion_job[1] is future:
                    self._motion_job = None
            spent += sampled.seconds
            self.core.commit_motion(job, sampled.motion)  # stale (an interruption): dropped

    def _draw(
        self, motion: np.ndarray, cancel: threading.Event | None
    ) -> tuple[bytes | None, float]:
        """Render thread: the frame's pixels (None if called off) and how long drawing took."""
        began = time.perf_counter()
        try:
            image: bytes | None = self.core.render(motion, cancel).tobytes()
        except DrawCancelled:
            image = None
        return image, time.perf_counter() - began

    def _observe_work(self, work_s: float) -> None:
        """Feed one frame's work time to the ladder; apply and log a change of level."""
        ladder = self.ladder
        if ladder is None:
            return
        before, was = ladder.level, ladder.index
        level = ladder.observe(work_s)
        if level is None:
            return
        self.core.set_quality(level)
        logger.info(
            f"avatar quality {'down' if ladder.index > was else 'up'}: "
            f"{before.describe()} -> {level.describe()} (frame work "
            f"{ladder.decided_load_s * 1000:.1f} ms on average, budget "
            f"{ladder.budget_s * 1000:.1f} ms)"
        )
