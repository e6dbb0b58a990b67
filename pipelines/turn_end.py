"""When the user's turn ends, and answering before that is certain.

VAD reports the end of speech after ``stop_secs`` of silence. The transcript follows
within tens of milliseconds, but smart-turn's verdict on whether the user has finished
takes a few hundred more on a busy CPU. :class:`SpeakAheadTurnStopStrategy` starts the
reply as soon as the transcript is in, through pipecat's speculation (a provisional
context; the real one records the turn only once it ends), and lets smart-turn decide
meanwhile. The reply is written and synthesised ahead and held by the avatar stage until
the turn ends (``UserStoppedSpeakingFrame``). If the user speaks again first, the
speculation is withdrawn (``EagerEndOfTurnCancelFrame``) and
:class:`SpeculationWithdrawal` turns that into an interruption for everything
downstream, so the LLM, the TTS and the avatar drop the reply the usual way.

Smart-turn listens only to the audio. It judges some plainly finished questions
unfinished ("How does this work?" with falling intonation), which costs the caller
``turn_max_silence_secs`` of waiting. With ``question_ends_turn`` a transcript that ends
in a question mark ends the turn without asking smart-turn, whose inference would
otherwise compete with the reply's synthesis for the CPU.

Smart-turn is also asked early: once VAD's windows have been quiet for
``early_verdict_secs`` (0.15 s), before VAD's own stop at ``stop_secs`` (0.3 s); pipecat
suggests a 0.2 s stop for smart-turn, so its model is used to short silences. A
"finished" verdict then ends the turn the moment VAD stops and the words are in, instead
of a few hundred milliseconds later, and smart-turn's inference is over before the
reply's synthesis starts. An "unfinished" one is asked again at VAD's stop, with more
silence to hear. If the user speaks again before VAD's stop, the early verdict is
dropped; smart-turn forgets the audio it judged finished (its own rule), so its next
verdict in that turn hears only the speech after the pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from loguru import logger
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, EndOfTurnState
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    MetricsFrame,
    SpeechControlParamsFrame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.turns.types import ProcessFrameResult, UserTurnSpeculation
from pipecat.turns.user_stop.base_user_turn_stop_strategy import BaseUserTurnStopStrategy

#: How long smart-turn waits for the transcript (a question needs no verdict).
TRANSCRIPT_WAIT_S = 0.1


class QuietTimingSileroVAD(SileroVADAnalyzer):
    """pipecat's Silero VAD that also tells how long the speech has been quiet.

    VAD reports a stop only after ``stop_secs`` of quiet windows; :meth:`quiet_secs` counts
    them as they come, so the end of the turn can be judged while VAD waits. A window is
    quiet when Silero's confidence is under the threshold (the loudness gate is not
    applied: a quiet but voiced window delays the early verdict, never hastens it).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._quiet_windows = 0  # consecutive windows under the confidence threshold

    def voice_confidence(self, buffer: bytes) -> float:
        """Silero's confidence for one window (VAD's thread), counting quiet windows."""
        confidence = super().voice_confidence(buffer)
        quiet = confidence < self.params.confidence
        self._quiet_windows = self._quiet_windows + 1 if quiet else 0
        return confidence

    def quiet_secs(self) -> float:
        """How long the audio analysed so far has been quiet (0 while speech goes on)."""
        return self._quiet_windows * self.num_frames_required() / self.sample_rate


class SpeakAheadTurnStopStrategy(BaseUserTurnStopStrategy):
    """Ends the turn on smart-turn's verdict; starts the reply as soon as the words are in."""

    def __init__(
        self,
        *,
        turn_analyzer: BaseTurnAnalyzer,
        speak_ahead: bool = True,
        question_ends_turn: bool = True,
        quiet_secs: Callable[[], float] | None = None,
        early_verdict_secs: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """``quiet_secs`` says how long VAD has heard quiet (:class:`QuietTimingSileroVAD`);
        with it and ``early_verdict_secs`` > 0, smart-turn is first asked after that much
        quiet instead of at VAD's stop."""
        super().__init__(**kwargs)
        self._analyzer = turn_analyzer
        self._quiet_secs = quiet_secs if early_verdict_secs > 0 else None
        self._early_verdict_secs = early_verdict_secs
        self._speak_ahead = speak_ahead
        self._question_ends_turn = question_ends_turn
        self._in_turn = False  # the user's turn started and has not ended
        self._speaking = False  # VAD hears the user now
        self._stopped = False  # VAD reported a stop in this turn and no start since
        self._words_in = asyncio.Event()  # a transcript came since VAD's last start
        self._text = ""  # the turn's transcript so far
        self._verdict: EndOfTurnState | None = None  # smart-turn's, since the last stop
        self._analysis: asyncio.Task | None = None
        self._early: asyncio.Task[EndOfTurnState] | None = None  # verdict before VAD's stop
        self._speculation: UserTurnSpeculation | None = None

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]
        """Tell the analyzer the input sample rate (pipecat's stop strategies narrow the
        base object's ``setup`` this way too)."""
        await super().setup(setup)
        self._analyzer.set_sample_rate(setup.audio_in_sample_rate)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Follow VAD, the audio and the transcript; never holds a frame up."""
        await super().process_frame(frame)
        if isinstance(frame, StartFrame):
            await self.broadcast_frame(SpeechControlParamsFrame, turn_params=self._analyzer.params)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._analyzer.update_vad_start_secs(frame.start_secs)
            self._speaking, self._stopped = True, False
            self._words_in.clear()
            await self._forget_verdict()
            await self._withdraw("the user spoke again")
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speaking, self._stopped = False, True
            # Runs beside the frames that follow, so the transcript is not queued behind it.
            self._analysis = self.create_task(self._analyse(), name="smart-turn")
            await self._speculate()
        elif isinstance(frame, InputAudioRawFrame):
            state = self._analyzer.append_audio(frame.audio, self._speaking)
            if state == EndOfTurnState.COMPLETE and not self._speaking:
                # The silence ran out: the turn is over, even if the last sound had no words.
                self._verdict = EndOfTurnState.COMPLETE
                self._words_in.set()
                await self._end_if_decided()
            elif self._speaking and self._quiet_secs is not None:
                await self._follow_quiet(self._quiet_secs())
        elif isinstance(frame, TranscriptionFrame) and frame.text.strip():
            self._text = f"{self._text} {frame.text.strip()}".strip()
            self._words_in.set()
            if self._stopped:
                await self._speculate()
            await self._end_if_decided()
        return ProcessFrameResult.CONTINUE

    async def _follow_quiet(self, quiet_secs: float) -> None:
        """Before VAD's stop: ask smart-turn once the quiet is long enough; drop that
        verdict if the user speaks again."""
        if quiet_secs < self._early_verdict_secs:
            await self._drop_early_verdict()
        elif self._early is None:
            self._early = self.create_task(self._judge(), name="smart-turn-early")

    async def _judge(self) -> EndOfTurnState:
        state, metrics = await self._analyzer.analyze_end_of_turn()
        if metrics is not None:
            await self.push_frame(MetricsFrame(data=[metrics]))
        return state

    async def _analyse(self) -> None:
        """The verdict on the speech so far. The transcript usually comes within tens of
        ms of VAD's stop; when it is a question, smart-turn is not asked, and its
        inference does not compete with the reply's synthesis for the CPU. An early
        "finished" stands; an early "unfinished" is asked again, with more silence."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._words_in.wait(), TRANSCRIPT_WAIT_S)
        if self._asks():
            logger.debug(f"{self}: [{self._text}] is a question: the turn ends")
            state = EndOfTurnState.COMPLETE
        else:
            state = await self._early if self._early is not None else EndOfTurnState.INCOMPLETE
            if state == EndOfTurnState.COMPLETE:
                logger.debug(f"{self}: smart-turn judged [{self._text}] finished before VAD's stop")
            else:
                state = await self._judge()
        self._analysis = None
        if self._stopped:
            self._verdict = state
            await self._end_if_decided()

    def _asks(self) -> bool:
        return self._question_ends_turn and self._text.endswith("?")

    def _decided(self) -> bool:
        if self._verdict == EndOfTurnState.COMPLETE:
            return True
        if self._verdict == EndOfTurnState.INCOMPLETE and self._asks():
            logger.debug(f"{self}: smart-turn: [{self._text}] unfinished; a question ends it")
            return True
        return False

    async def _end_if_decided(self) -> None:
        if self._speaking or not self._words_in.is_set() or not self._text or not self._decided():
            return
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation.text == self._text:
            logger.debug(f"{self}: turn ended as answered ahead: [{self._text}]")
            await self.trigger_user_turn_finalized(confirms_speculation=True)
            return
        if speculation is not None:
            await self.trigger_user_turn_speculation_cancelled()
        await self.trigger_user_turn_stopped()

    async def _speculate(self) -> None:
        """Answer the words heard so far, unless that answer is already on its way."""
        # (A sound over the avatar that started no turn is not answered.)
        if not (self._speak_ahead and self._in_turn and self._words_in.is_set()):
            return
        if self._speaking:
            return
        if self._speculation is not None:
            if self._speculation.text == self._text:
                return
            await self._withdraw("more words came")
        self._speculation = UserTurnSpeculation(text=self._text)
        logger.debug(f"{self}: answering ahead of the turn's end: [{self._text}]")
        await self.trigger_user_turn_inference_triggered(speculation=self._speculation)

    async def _withdraw(self, why: str) -> None:
        if self._speculation is None:
            return
        self._speculation = None
        logger.debug(f"{self}: answer ahead withdrawn: {why}")
        await self.trigger_user_turn_speculation_cancelled()

    async def _forget_verdict(self) -> None:
        self._verdict = None
        if self._analysis is not None:
            task, self._analysis = self._analysis, None
            await self.cancel_task(task)
        await self._drop_early_verdict()

    async def _drop_early_verdict(self) -> None:
        if self._early is not None:
            task, self._early = self._early, None
            await self.cancel_task(task)

    async def handle_user_turn_started(self) -> None:
        """A new turn: no words yet. VAD's state and a verdict in progress stay: a turn
        over the avatar may start from a transcript (``MinWordsUserTurnStartStrategy``),
        after VAD's stop, and that transcript reaches this strategy just after."""
        self._text = ""
        await self._withdraw("a new turn started")
        self._in_turn = True

    async def handle_user_turn_stopped(self) -> None:
        """The turn ended (here or by another strategy): drop the analyzer's audio too."""
        self._in_turn = False
        self._text = ""
        self._stopped = False
        self._words_in.clear()
        await self._forget_verdict()
        await self._withdraw("the turn ended another way")
        self._analyzer.clear()

    async def cleanup(self) -> None:
        """Stop a verdict in progress and the analyzer; safe to call twice."""
        await self._forget_verdict()
        await self._analyzer.cleanup()
        await super().cleanup()


class SpeculationWithdrawal(FrameProcessor):
    """Turns a withdrawn answer-ahead into an interruption for the stages after it.

    Sits between the user aggregator and the LLM. pipecat's LLM stops generating on
    ``EagerEndOfTurnCancelFrame``, but the TTS and the avatar know only interruptions,
    and by then they may hold words and audio of the withdrawn reply.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Pass every frame on; after a withdrawal, interrupt downstream."""
        await super().process_frame(frame, direction)
        await self.push_frame(frame, direction)
        if isinstance(frame, EagerEndOfTurnCancelFrame) and direction is FrameDirection.DOWNSTREAM:
            await self.push_frame(InterruptionFrame())
