"""Per-turn stage timings, measured where each stage is, checked against budgets.

The observer watches frames as they pass between processors (pipecat's observer hook),
so no stage reports on itself: a stage's time is the gap between two frames seen at
its edges. Times are wall-clock seconds (``time.time()``), as in VAD frames.

Stages of one turn:
- ``vad_stop``: the user's speech really ended -> the turn was decided
  (``UserStoppedSpeakingFrame``); speech end = VAD stop time minus its ``stop_secs``.
- ``stt``: the user's speech ended -> the final transcript.
- ``llm_ttft``: the LLM was asked (``LLMContextFrame``) -> the first LLM text. With
  answering ahead (``pipelines/turn_end.py``) it is asked before the turn is decided.
- ``tts_ttfb``: the first LLM text -> the first TTS audio.
- ``render_first_frame``: the first TTS audio into the avatar, or the turn's decision if
  the avatar held a reply made ahead of it -> the first video frame that carries reply
  audio out of it (idle frames drawn meanwhile do not count).
- ``transport``: that frame into the output transport -> the transport started sending.
- ``end_to_end``: the user's speech ended -> the first reply audio and video sent.

Barge-ins are noted too (:class:`BargeIn`): when VAD heard the user start speaking while
the avatar was talking (the decision to halt its audio), and whether and when an
interruption followed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from pipelines.config import LatencyBudgets
from pipelines.frames import AvatarImageFrame

STAGES: tuple[str, ...] = (
    "vad_stop",
    "stt",
    "llm_ttft",
    "tts_ttfb",
    "render_first_frame",
    "transport",
    "end_to_end",
)


@dataclass
class TurnReport:
    """One turn's stage times (ms) and the budgets it broke."""

    turn: int
    stages_ms: dict[str, float]
    over_budget: list[str] = field(default_factory=list)
    speech_end: float = 0.0  # wall-clock time the user's speech ended
    #: When each stage began, in ms after the speech ended (with answering ahead, the
    #: LLM and TTS begin before ``vad_stop`` ends).
    starts_ms: dict[str, float] = field(default_factory=dict)

    def as_message(self, budgets: LatencyBudgets) -> dict[str, object]:
        """The RTVI server-message payload the page's debug overlay reads."""
        return {
            "type": "visage-latency",
            "turn": self.turn,
            "stages_ms": {k: round(v, 1) for k, v in self.stages_ms.items()},
            "budgets_ms": budgets.model_dump(),
            "over_budget": self.over_budget,
        }


@dataclass
class BargeIn:
    """The user started speaking over the avatar (wall-clock seconds)."""

    decided: float  # VAD reported speech: the avatar's audio halts from here
    interrupted: float | None = None  # the turn logic interrupted the reply, if it did

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready form for /api/calls/{pc_id}."""
        return {"decided": self.decided, "interrupted": self.interrupted}


@dataclass
class _Marks:
    speech_end: float | None = None
    transcript: float | None = None
    turn_decided: float | None = None
    llm_asked: float | None = None  # the reply's marks below count only from here
    llm_first: float | None = None
    tts_first: float | None = None
    avatar_in: float | None = None
    avatar_audio_out: bool = False  # the avatar has pushed reply audio
    avatar_out: float | None = None
    sent: float | None = None


def _later(a: float | None, b: float | None) -> float | None:
    """The later of two marks, or the one that is set."""
    if a is None or b is None:
        return a if b is None else b
    return max(a, b)


class TurnLatencyObserver(BaseObserver):
    """Times each turn's stages from frames seen between the given processors."""

    def __init__(
        self,
        *,
        llm: object,
        tts: object,
        avatar: object,
        output: object,
        budgets: LatencyBudgets,
        on_turn: Callable[[TurnReport], Awaitable[None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._llm, self._tts, self._avatar, self._output = llm, tts, avatar, output
        self.budgets = budgets
        self._on_turn = on_turn
        self._marks = _Marks()
        self._measuring = False
        self._bot_speaking = False
        self.reports: list[TurnReport] = []
        self.barge_ins: list[BargeIn] = []

    async def on_push_frame(self, data: FramePushed) -> None:
        """Note the first time each edge of the current turn is seen."""
        frame, now, m = data.frame, time.time(), self._marks
        self._note_barge_in(data, now)
        if isinstance(frame, VADUserStoppedSpeakingFrame) and data.first_push:
            # A new stop inside a turn moves the end of speech later.
            m.speech_end = frame.timestamp - frame.stop_secs
            self._measuring = True
        if not self._measuring:
            return
        if isinstance(frame, UserStoppedSpeakingFrame) and m.turn_decided is None:
            m.turn_decided = now
        elif isinstance(frame, TranscriptionFrame) and frame.finalized:
            m.transcript = now
        elif isinstance(frame, LLMContextFrame) and data.destination is self._llm:
            if m.llm_asked is None:
                m.llm_asked = now
        elif m.llm_asked is None:
            return  # frames of an earlier reply (one resuming after a cough, say)
        elif isinstance(frame, LLMTextFrame) and m.llm_first is None:
            m.llm_first = now
        elif isinstance(frame, TTSAudioRawFrame):
            if data.source is self._tts and m.tts_first is None:
                m.tts_first = now
            if data.destination is self._avatar and m.avatar_in is None:
                m.avatar_in = now
            if data.source is self._avatar and m.avatar_in is not None:
                m.avatar_audio_out = True
        elif isinstance(frame, AvatarImageFrame):
            if data.source is self._avatar and m.avatar_audio_out and m.avatar_out is None:
                m.avatar_out = now
        elif isinstance(frame, BotStartedSpeakingFrame) and data.source is self._output:
            if m.sent is None and m.avatar_out is not None and m.turn_decided is not None:
                m.sent = now
                await self._finish_turn()
        if isinstance(frame, InterruptionFrame) and data.first_push and m.sent is None:
            # The reply never got out (a barge-in while it was made, or an answer ahead
            # withdrawn): the next reply is measured afresh, from the same end of speech
            # unless VAD reports a later one.
            self._marks = _Marks(speech_end=m.speech_end, transcript=m.transcript)

    def _note_barge_in(self, data: FramePushed, now: float) -> None:
        frame = data.frame
        if data.source is self._output and isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif data.source is self._output and isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if data.first_push and self._bot_speaking:
                self.barge_ins.append(BargeIn(decided=now))
        elif isinstance(frame, InterruptionFrame) and self.barge_ins:
            # Any hop: the pipeline task injects interruptions, so their first push (from
            # the task's own source) may not be observed.
            last = self.barge_ins[-1]
            if last.interrupted is None and now - last.decided < 5.0:
                last.interrupted = now

    def _reset(self) -> None:
        self._marks = _Marks()
        self._measuring = False

    async def _finish_turn(self) -> None:
        m = self._marks
        spans = {
            "vad_stop": (m.speech_end, m.turn_decided),
            "stt": (m.speech_end, m.transcript),
            "llm_ttft": (m.llm_asked, m.llm_first),
            "tts_ttfb": (m.llm_first, m.tts_first),
            "render_first_frame": (_later(m.avatar_in, m.turn_decided), m.avatar_out),
            "transport": (m.avatar_out, m.sent),
            "end_to_end": (m.speech_end, m.sent),
        }
        stages = {
            name: max(0.0, (end - start) * 1000)
            for name, (start, end) in spans.items()
            if start is not None and end is not None
        }
        budgets = self.budgets.model_dump()
        over = [name for name, ms in stages.items() if ms > budgets[name]]
        starts = {
            name: round((start - m.speech_end) * 1000, 1)
            for name, (start, _end) in spans.items()
            if name in stages and start is not None and m.speech_end is not None
        }
        report = TurnReport(
            turn=len(self.reports) + 1,
            stages_ms=stages,
            over_budget=over,
            speech_end=m.speech_end or 0.0,
            starts_ms=starts,
        )
        self.reports.append(report)
        self._reset()
        line = ", ".join(f"{k} {v:.0f}" for k, v in stages.items())
        if over:
            logger.warning(f"turn {report.turn} over budget ({', '.join(over)}): {line} ms")
        else:
            logger.info(f"turn {report.turn}: {line} ms")
        if self._on_turn is not None:
            await self._on_turn(report)
