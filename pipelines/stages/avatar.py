"""The avatar stage: pipecat's adapter around the renderer's AvatarPlayer.

TTS audio goes into the player as fast as it is synthesised; the player
(``renderer/player.py``) releases it one video frame period at a time, each slice with
the image drawn for it, so audio never runs ahead of the face, and keeps making idle
frames when nothing is said. This stage turns each of the player's frames into pipecat
frames: the slice as ``TTSAudioRawFrame`` and the image as an ``AvatarImageFrame``, which
the output transport sends in line with that audio. Other frames that arrived behind some
audio (words, TTSStoppedFrame, the end of the LLM response) wait in order and leave right
after the audio before them has gone. A sentence's words that a TTS without word timings
sends as one ``TTSTextFrame`` after its audio leave one by one, spread over that audio by
their length, so an interruption keeps in the context only the words whose audio played.

Interruption is decided by frame type, as everywhere in pipecat: an ``InterruptionFrame``
drops the queued audio, motion and held frames in one place (``_drop_pending``). A
``VADUserStartedSpeakingFrame`` only pauses the reply (audio halts, the mouth relaxes);
if no turn follows the sound, the reply resumes where it stopped. On a pause the stage also
asks the output transport for the reply audio it has not sent yet
(``ReplyAudioHoldFrame``), so the listener stops hearing the reply at once; the frames it
hands back (``ReplyAudioReturnedFrame``) go back into the player and play again on resume.

A reply that starts while the user's turn is still open (between ``UserStartedSpeakingFrame``
and ``UserStoppedSpeakingFrame``) was made ahead of the turn's end
(``pipelines/turn_end.py``): its frames wait here, in order, and go into the player the
moment the turn ends; an interruption (the answer withdrawn) drops them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    OutputImageRawFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipelines.frames import (
    AvatarImageFrame,
    PhonemeAudioRawFrame,
    ReplyAudioHoldFrame,
    ReplyAudioReturnedFrame,
)
from renderer.core import AvatarCore
from renderer.ladder import DegradationLadder
from renderer.player import AvatarFrame, AvatarPlayer

#: Frames that start a reply; one arriving while the user's turn is open was made ahead.
REPLY_START = (LLMFullResponseStartFrame, TTSStartedFrame, TTSAudioRawFrame)

# When the user's turn ends, idle frames hold the last image until the reply's speech is
# ready, for at most this long (AvatarPlayer.hold_still): a reply's first audio and frame
# take 0.1-0.3 s to make, on the cores idle drawing would share.
REPLY_WAIT_STILL_S = 0.4

# After a sound that did not become a turn, wait this long (for a late turn start from
# the transcript) before the paused reply resumes.
RESUME_AFTER_S = 0.25


class AvatarStage(FrameProcessor):
    """TTS audio in; the same audio, paced, plus one avatar image per period out."""

    def __init__(
        self,
        player: AvatarPlayer,
        *,
        end_timeout_s: float = 30.0,
        resume_after_s: float = RESUME_AFTER_S,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._player = player
        self._resume_after_s = resume_after_s
        self._resume_task: asyncio.Task | None = None
        self._end_timeout_s = end_timeout_s
        self._play_task: asyncio.Task | None = None
        # (samples pushed into the player before it, frame) waiting behind that audio.
        self._held: list[tuple[int, Frame]] = []
        # Set whenever every queued sample and held frame has gone out.
        self._drained = asyncio.Event()
        # samples_pushed at the last TTS text (or start): a sentence's text that comes
        # after its audio is spread over the audio since then.
        self._text_from = 0
        self._turn_open = False  # the user's turn started and has not ended
        # A reply made ahead of the turn's end, held in order (None: none held), and since when.
        self._ahead: list[Frame] | None = None
        self._ahead_since = 0.0

    @property
    def player(self) -> AvatarPlayer:
        """The player this stage drives."""
        return self._player

    @property
    def core(self) -> AvatarCore:
        """The player's core (audio timeline, motion, quality)."""
        return self._player.core

    @property
    def ladder(self) -> DegradationLadder | None:
        """The player's degradation ladder (None with ``avatar.degrade`` off)."""
        return self._player.ladder

    @property
    def frames_rendered(self) -> int:
        """Frames pushed (one per period)."""
        return self._player.frames_rendered

    @property
    def frames_drawn(self) -> int:
        """Of those, newly drawn images (the rest repeat the last)."""
        return self._player.frames_drawn

    @property
    def frames_held(self) -> int:
        """Idle frames that repeated the last image while a reply was being made."""
        return self._player.frames_held

    @property
    def draws_called_off(self) -> int:
        """Images without speech given up for a speech frame."""
        return self._player.draws_called_off

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Route a frame: audio into the player, interruptions clear it, the rest keeps order."""
        await super().process_frame(frame, direction)
        player = self._player

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start_playing()
        elif isinstance(frame, CancelFrame):
            await self._stop_playing()
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame):
            await self._drain(timeout_s=self._end_timeout_s)
            await self._stop_playing()
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._cancel_resume()
            await self._drop_pending()
            await self.push_frame(frame, direction)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            # Maybe a barge-in, maybe a cough: hold the reply until the turn logic decides.
            await self._cancel_resume()
            player.hold_still(0)  # the user speaks on: the face listens again
            hold = player.speaking and not player.paused
            if hold:
                player.pause()
                logger.debug(f"{self}: reply paused, the user may be talking")
            await self.push_frame(frame, direction)
            if hold:
                await self.push_frame(
                    ReplyAudioHoldFrame(
                        frame_samples=player.samples_per_frame,
                        sample_rate=player.sample_rate,
                        epoch=player.epoch,
                    )
                )
        elif isinstance(frame, ReplyAudioReturnedFrame):
            # The transport's answer to our hold; rewound into the player between frames.
            if frame.epoch == player.epoch:
                player.take_back(frame.frames)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            if player.paused:
                self._resume_task = self.create_task(self._resume_later(), name="avatar-resume")
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._turn_open = True
            await self._cancel_resume()  # a real turn: the interruption follows
            await self.push_frame(frame, direction)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._turn_open = False
            player.hold_still(REPLY_WAIT_STILL_S)  # the reply's first frame needs the cores
            await self.push_frame(frame, direction)
            await self._release_ahead()
        elif direction is FrameDirection.UPSTREAM or isinstance(frame, SystemFrame):
            await self.push_frame(frame, direction)
        elif self._ahead is not None:
            self._ahead.append(frame)
        elif self._turn_open and isinstance(frame, REPLY_START):
            self._ahead, self._ahead_since = [frame], time.monotonic()
            logger.debug(f"{self}: a reply made ahead of the turn's end waits for it")
        else:
            await self._take_reply_frame(frame)

    async def _take_reply_frame(self, frame: Frame) -> None:
        """Audio into the player; other frames wait behind the audio before them."""
        if isinstance(frame, TTSAudioRawFrame):
            phonemes = frame.phonemes if isinstance(frame, PhonemeAudioRawFrame) else ()
            self._player.push_audio(frame.audio, frame.sample_rate, phonemes)
            self._drained.clear()
        else:
            if isinstance(frame, TTSStoppedFrame):
                self._player.flush()
            await self._push_in_order(frame)

    async def _release_ahead(self) -> None:
        """The turn ended: the reply made ahead of it plays now."""
        if self._ahead is None:
            return
        held_ms = (time.monotonic() - self._ahead_since) * 1000
        logger.debug(f"{self}: the turn ended; the reply held {held_ms:.0f} ms for it plays")
        # Frames still arriving meanwhile join the list, so the order holds.
        while self._ahead:
            await self._take_reply_frame(self._ahead.pop(0))
        self._ahead = None

    async def _resume_later(self) -> None:
        """No turn followed the sound: carry on with the reply where it stopped."""
        await asyncio.sleep(self._resume_after_s)
        self._resume_task = None
        self._player.resume()
        logger.debug(f"{self}: no turn followed the sound; reply resumed")

    async def _cancel_resume(self) -> None:
        if self._resume_task is not None:
            task, self._resume_task = self._resume_task, None
            await self.cancel_task(task)

    async def cleanup(self) -> None:
        """Stop the player; safe to call more than once."""
        await self._cancel_resume()
        await self._stop_playing()
        await super().cleanup()

    async def _push_in_order(self, frame: Frame) -> None:
        pushed = self._player.samples_pushed
        if isinstance(frame, TTSStartedFrame):
            self._text_from = pushed
        elif isinstance(frame, TTSTextFrame):
            spread = self._spread_words(frame, self._text_from, pushed)
            self._text_from = pushed
            if len(spread) > 1:
                self._held += spread
                self._drained.clear()
                await self._release_held()
                return
        if self._held or pushed > self._player.samples_played:
            self._held.append((pushed, frame))
            self._drained.clear()
        else:
            await self.push_frame(frame)

    @staticmethod
    def _spread_words(frame: TTSTextFrame, start: int, end: int) -> list[tuple[int, Frame]]:
        """A several-word text after audio ``[start, end)`` (a TTS without word timings
        sends a sentence's text once its audio is out): one frame per word, each due at
        its estimated start in that audio (by the characters before it), so the context
        keeps only the words whose audio was heard. A single word (a TTS with word
        timings) stays as it is."""
        words = frame.text.split()
        if len(words) < 2 or end <= start or frame.includes_inter_frame_spaces:
            return [(end, frame)]
        total = sum(len(w) + 1 for w in words)
        out: list[tuple[int, Frame]] = []
        before = 0
        for word in words:
            piece = dataclasses.replace(frame, text=word)  # a new frame (its own id)
            piece.append_to_context = frame.append_to_context
            piece.will_be_spoken = frame.will_be_spoken
            piece.skip_tts = frame.skip_tts
            piece.transport_destination = frame.transport_destination
            piece.metadata = dict(frame.metadata)
            out.append((start + (end - start) * before // total, piece))
            before += len(word) + 1
        return out

    async def _release_held(self) -> None:
        played = self._player.samples_played
        while self._held and self._held[0][0] <= played:
            _, frame = self._held.pop(0)
            await self.push_frame(frame)

    async def _drop_pending(self) -> None:
        """The one place where queued audio, motion and held frames are dropped."""
        heard_s = self._player.clear_buffer()
        self._text_from = self._player.samples_pushed
        kept = [frame for _, frame in self._held if not frame.interruptible]
        kept += [frame for frame in self._ahead or [] if not frame.interruptible]
        self._held.clear()
        self._ahead = None
        for frame in kept:
            await self.push_frame(frame)
        logger.debug(f"{self}: interrupted after {heard_s:.2f}s of the reply had played")

    async def _drain(self, timeout_s: float) -> None:
        """Let the audio already queued play out (bounded), e.g. before the pipeline ends."""
        if self._play_task is None:
            return
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        except TimeoutError:
            logger.warning(f"{self}: {self._player.pending_seconds:.1f}s of audio left unplayed")

    def _start_playing(self) -> None:
        if self._play_task is None:
            self._player.start()
            self._play_task = self.create_task(self._play(), name="avatar-play")

    async def _stop_playing(self) -> None:
        if self._play_task is not None:
            task, self._play_task = self._play_task, None
            await self.cancel_task(task, timeout=2.0)
        await self._player.aclose()

    async def _play(self) -> None:
        """Push the player's frames as they come, and what was waiting behind their audio."""
        async for frame in self._player:
            await self._push_avatar_frame(frame)
            await self._release_held()
            if not self._held and self._player.samples_played >= self._player.samples_pushed:
                self._drained.set()

    async def _push_avatar_frame(self, frame: AvatarFrame) -> None:
        if frame.audio:
            await self.push_frame(TTSAudioRawFrame(frame.audio, self._player.sample_rate, 1))
        image = OutputImageRawFrame(frame.image, frame.size, "RGB")
        await self.push_frame(AvatarImageFrame(image=image))
