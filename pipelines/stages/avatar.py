"""The avatar stage: pipecat's adapter around the renderer core.

TTS audio goes into the core's buffer as fast as it is synthesised. A clock task then
releases it one video frame period at a time, each slice together with the frame drawn
for it, so audio never runs ahead of the face. Other frames that arrived behind some audio
(words, TTSStoppedFrame, the end of the LLM response) wait in order and leave right after
the audio before them has gone. When nothing is spoken the clock keeps drawing idle
frames, so the video track never stalls. A reply does not wait for an idle image: one
still being drawn when the reply's audio is ready is called off (the render thread stops
at its next layer) and the reply's first frame takes its place. An image whose motion has
not changed (the face held while audio is late) is not drawn again.

The clock times each frame's work (motion and drawing) and feeds it to the degradation
ladder (``renderer/ladder.py``), which steps the core's quality down when frames fall
behind their budget and back up when there is headroom; each step is logged. On frames
the quality level does not draw, the last image goes out again: one frame per period.

Interruption is decided by frame type, as everywhere in pipecat: an ``InterruptionFrame``
drops the queued audio, phonemes and held frames in one place (``_drop_pending``). A
``VADUserStartedSpeakingFrame`` only pauses the reply (audio halts, the mouth relaxes);
if no turn follows the sound, the reply resumes where it stopped. On a pause the stage also
asks the output transport for the reply audio it has not sent yet
(``ReplyAudioHoldFrame``), so the listener stops hearing the reply at once; the frames it
hands back (``ReplyAudioReturnedFrame``) are rewound into the core and play again on resume.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputImageRawFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipelines.frames import PhonemeAudioRawFrame, ReplyAudioHoldFrame, ReplyAudioReturnedFrame
from renderer.avatar import AvatarCore
from renderer.frames.face import DrawCancelled
from renderer.ladder import DegradationLadder

# After a sound that did not become a turn, wait this long (for a late turn start from
# the transcript) before the paused reply resumes.
RESUME_AFTER_S = 0.25
# A clock at most this late catches up by sending the frames it owes back to back; the
# outgoing audio track waits a little longer than this for a late write (see
# pipelines/webrtc.py), so the burst only makes up for the delay. A clock later than this
# restarts from now instead: the outgoing track has covered the stall with silence, and a
# burst would leave that much reply audio queued behind the face for the rest of the reply.
MAX_CATCH_UP_S = 0.05
# A stall this long (a debugger, a swapped-out process) is worth a warning.
STALL_WARNING_S = 0.2


class AvatarStage(FrameProcessor):
    """TTS audio in; the same audio, paced, plus one video frame per period out."""

    def __init__(
        self,
        core: AvatarCore,
        *,
        end_timeout_s: float = 30.0,
        resume_after_s: float = RESUME_AFTER_S,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._core = core
        self._resume_after_s = resume_after_s
        self._resume_task: asyncio.Task | None = None
        self._end_timeout_s = end_timeout_s
        self._clock_task: asyncio.Task | None = None
        # Rendering runs off the event loop, one frame at a time.
        self._executor: ThreadPoolExecutor | None = None
        # (samples pushed into the core before it, frame) waiting behind that audio.
        self._held: list[tuple[int, Frame]] = []
        # Bumped by every interruption, so a frame being drawn while it happened
        # does not release audio that belongs to the interrupted reply.
        self._epoch = 0
        # Frames the transport handed back after a pause, rewound at the next clock tick.
        self._returned_frames = 0
        # Set by the clock whenever every queued sample and held frame has gone out.
        self._drained = asyncio.Event()
        # Set when speech can start while the clock is between frames without audio.
        self._speech_ready = asyncio.Event()
        # Set to call off the image being drawn for a frame without speech audio.
        self._idle_draw: threading.Event | None = None
        self._image: bytes | None = None  # the last image, repeated on frames not drawn
        self._image_motion: np.ndarray | None = None  # the motion that image shows
        self._playing = False  # the last frame carried audio
        self.frames_rendered = 0  # frames pushed (one per period)
        self.frames_drawn = 0  # of those, newly drawn images (the rest repeat the last)
        self.draws_called_off = 0  # images without speech given up for a speech frame
        self.frames_late = 0
        settings = core.settings
        self.ladder: DegradationLadder | None = None
        if settings.degrade:
            self.ladder = DegradationLadder(
                core.levels, core.fps, budget_ratio=settings.frame_budget_ratio
            )

    @property
    def core(self) -> AvatarCore:
        """The renderer core this stage drives."""
        return self._core

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Route a frame: audio into the core, interruptions clear it, the rest keeps order."""
        await super().process_frame(frame, direction)

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_clock()
        elif isinstance(frame, CancelFrame):
            await self._stop_clock()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._drain(timeout_s=self._end_timeout_s)
            await self._stop_clock()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._cancel_resume()
            await self._drop_pending()
            await self.push_frame(frame, direction)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            # Maybe a barge-in, maybe a cough: hold the reply until the turn logic decides.
            await self._cancel_resume()
            hold = self._core.speaking and not self._core.paused
            if hold:
                self._core.pause()
                logger.debug(f"{self}: reply paused, the user may be talking")
            await self.push_frame(frame, direction)
            if hold:
                await self.push_frame(
                    ReplyAudioHoldFrame(
                        frame_samples=self._core.samples_per_frame,
                        sample_rate=self._core.sample_rate,
                        epoch=self._epoch,
                    )
                )
        elif isinstance(frame, ReplyAudioReturnedFrame):
            # The transport's answer to our hold; the clock rewinds the core between frames.
            if frame.epoch == self._epoch:
                self._returned_frames += frame.frames
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            if self._core.paused:
                self._resume_task = self.create_task(self._resume_later(), name="avatar-resume")
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStartedSpeakingFrame):
            await self._cancel_resume()  # a real turn: the interruption follows
            await self.push_frame(frame, direction)
        elif direction is FrameDirection.UPSTREAM or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif isinstance(frame, TTSAudioRawFrame):
            phonemes = frame.phonemes if isinstance(frame, PhonemeAudioRawFrame) else ()
            self._core.push_audio(frame.audio, frame.sample_rate, phonemes)
            self._drained.clear()
            self._start_speech_if_ready()
        else:
            if isinstance(frame, TTSStoppedFrame):
                self._core.end_segment()
            await self._push_in_order(frame)

    def _start_speech_if_ready(self) -> None:
        """Start speech now, not at the next idle tick: wake the clock, and call off an
        image being drawn without speech (the speech frame takes its place)."""
        if not self._playing and self._core.audio_ready:
            self._speech_ready.set()
            if self._idle_draw is not None:
                self._idle_draw.set()
                # While the render thread gives the image up, the first speech frame's
                # motion can be made.
                self._core.prefetch_motion()

    async def _resume_later(self) -> None:
        """No turn followed the sound: carry on with the reply where it stopped."""
        await asyncio.sleep(self._resume_after_s)
        self._resume_task = None
        self._core.resume()
        self._start_speech_if_ready()
        logger.debug(f"{self}: no turn followed the sound; reply resumed")

    async def _cancel_resume(self) -> None:
        if self._resume_task is not None:
            task, self._resume_task = self._resume_task, None
            await self.cancel_task(task)

    async def cleanup(self) -> None:
        """Stop the clock and the render thread; safe to call more than once."""
        await self._cancel_resume()
        await self._stop_clock()
        await super().cleanup()

    async def _push_in_order(self, frame: Frame) -> None:
        if self._held or self._core.samples_pushed > self._core.samples_played:
            self._held.append((self._core.samples_pushed, frame))
            self._drained.clear()
        else:
            await self.push_frame(frame)

    async def _release_held(self) -> None:
        played = self._core.samples_played
        while self._held and self._held[0][0] <= played:
            _, frame = self._held.pop(0)
            await self.push_frame(frame)

    async def _drop_pending(self) -> None:
        """The one place where queued audio, motion and held frames are dropped."""
        self._epoch += 1
        self._returned_frames = 0
        heard_s = self._core.clear_buffer()
        kept = [frame for _, frame in self._held if not frame.interruptible]
        self._held.clear()
        for frame in kept:
            await self.push_frame(frame)
        logger.debug(f"{self}: interrupted after {heard_s:.2f}s of the reply had played")

    async def _drain(self, timeout_s: float) -> None:
        """Let the audio already queued play out (bounded), e.g. before the pipeline ends."""
        if self._clock_task is None:
            return
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            logger.warning(f"{self}: {self._core.pending_seconds:.1f}s of audio left unplayed")

    def _start_clock(self) -> None:
        if self._clock_task is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="avatar-render")
            # Queued first on the render thread, so it is done before the first frame.
            self._executor.submit(self._core.prepare_renderers)
            self._clock_task = self.create_task(self._run_clock(), name="avatar-clock")

    async def _stop_clock(self) -> None:
        if self._clock_task is not None:
            task, self._clock_task = self._clock_task, None
            await self.cancel_task(task, timeout=2.0)
        if self._executor is not None:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False, cancel_futures=True)

    async def _run_clock(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self._core.fps
        start, index = loop.time(), 0
        while True:
            try:
                sent = await self._frame()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the face alive; one bad frame must not end the call
                logger.exception(f"{self}: frame {index} failed: {exc}")
                sent = True
            if not sent:  # the frame gave way to speech that is ready now
                start, index = loop.time(), 0
                continue
            index += 1
            delay = start + index * period - loop.time()
            if delay > 0:
                if await self._wait_for_speech(delay):
                    start, index = loop.time(), 0  # the clock's phase follows the reply
            elif -delay > MAX_CATCH_UP_S:
                self.frames_late += round(-delay / period)
                late = f"{self}: frame clock {-delay * 1000:.0f} ms late; restarting it from now"
                if -delay > STALL_WARNING_S:
                    logger.warning(late)
                else:
                    logger.debug(late)
                start, index = loop.time(), 0

    async def _frame(self) -> bool:
        """One frame period: advance the core, draw if the image changes, push the frame.

        Returns False when the frame's image was called off because speech became ready
        while it was drawn: nothing is pushed, and the speech frame goes out at once.
        """
        epoch = self._epoch
        self._rewind_returned()
        began = time.perf_counter()
        step = self._core.advance()
        work_s = time.perf_counter() - began
        self._playing = bool(step.audio)
        unchanged = self._image_motion is not None and np.array_equal(
            step.motion, self._image_motion
        )
        if self._image is None or (step.draw and not unchanged):
            # Only an image without speech may be called off (for speech).
            cancel = threading.Event() if self._image is not None and not step.audio else None
            self._idle_draw = cancel
            try:
                loop = asyncio.get_running_loop()
                drawn, draw_s = await loop.run_in_executor(
                    self._executor, self._draw, step.motion, cancel
                )
            finally:
                self._idle_draw = None
            if drawn is None:
                self.draws_called_off += 1
                return False
            self._image, self._image_motion = drawn, step.motion
            work_s += draw_s
            self.frames_drawn += 1
        if step.audio and epoch == self._epoch:
            if self._core.paused:  # paused while drawing: this audio was never sent
                self._core.rewind(1)
            else:
                await self.push_frame(TTSAudioRawFrame(step.audio, self._core.sample_rate, 1))
        size = (self._core.width, self._core.height)
        await self.push_frame(OutputImageRawFrame(self._image, size, "RGB"))
        self.frames_rendered += 1
        self._observe_work(work_s)
        await self._release_held()
        if not self._held and self._core.samples_played >= self._core.samples_pushed:
            self._drained.set()
        return True

    def _rewind_returned(self) -> None:
        """Put the frames the transport handed back after a pause back into the core.

        Done between frames, so a frame whose audio was never pushed (the pause came while
        it was drawn) has already been rewound and the count matches the newest frames.
        """
        frames, self._returned_frames = self._returned_frames, 0
        if frames and self._core.paused:
            taken = self._core.rewind(frames)
            logger.debug(f"{self}: took back {taken} unsent frames of the paused reply")

    def _draw(
        self, motion: np.ndarray, cancel: threading.Event | None
    ) -> tuple[bytes | None, float]:
        """Render thread: the frame's pixels (None if called off) and how long drawing took.

        Timed here rather than around the await, so a busy event loop is not mistaken
        for a slow renderer by the degradation ladder.
        """
        began = time.perf_counter()
        try:
            image: bytes | None = self._core.render(motion, cancel).tobytes()
        except DrawCancelled:
            image = None
        return image, time.perf_counter() - began

    async def _wait_for_speech(self, timeout_s: float) -> bool:
        """Sleep until the next frame is due; True if speech became ready first.

        A reply's first frame goes out as soon as its audio and motion are ready instead
        of up to a frame period later; the clock then counts its periods from there.
        """
        self._speech_ready.clear()
        if not self._playing and self._core.audio_ready:
            return True
        try:
            await asyncio.wait_for(self._speech_ready.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def _observe_work(self, work_s: float) -> None:
        """Feed one frame's work time to the ladder; apply and log a change of level."""
        ladder = self.ladder
        if ladder is None:
            return
        before, was = ladder.level, ladder.index
        level = ladder.observe(work_s)
        if level is None:
            return
        self._core.set_quality(level)
        logger.info(
            f"{self}: avatar quality {'down' if ladder.index > was else 'up'}: "
            f"{before.describe()} -> {level.describe()} (frame work "
            f"{ladder.decided_load_s * 1000:.1f} ms on average, budget "
            f"{ladder.budget_s * 1000:.1f} ms)"
        )
