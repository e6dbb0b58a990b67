"""TurnLatencyObserver on a scripted frame timeline: stage times, budgets, barge-ins."""

from __future__ import annotations

import time
from unittest import mock

import pytest
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMTextFrame,
    OutputImageRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import FramePushed
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection

from pipelines.config import LatencyBudgets
from pipelines.frames import AvatarImageFrame
from pipelines.latency import TurnLatencyObserver, TurnReport

STT, AGG, LLM, TTS, AVATAR, OUTPUT = (object() for _ in range(6))
IMAGE = AvatarImageFrame(OutputImageRawFrame(b"\0" * 12, (2, 2), "RGB"))
AUDIO = TTSAudioRawFrame(b"\0" * 960, 24000, 1)


class Script:
    """Pushes frames into the observer at scripted wall-clock times (seconds)."""

    def __init__(self, observer: TurnLatencyObserver) -> None:
        self.observer = observer
        self.t0 = 1_000_000.0

    async def at(
        self, t: float, frame: Frame, source: object, destination: object, first: bool = True
    ) -> None:
        push = FramePushed(
            source=source,  # type: ignore[arg-type]
            destination=destination,  # type: ignore[arg-type]
            frame=frame,
            direction=FrameDirection.DOWNSTREAM,
            timestamp=0,
            first_push=first,
        )
        with mock.patch.object(time, "time", return_value=self.t0 + t):
            await self.observer.on_push_frame(push)


def reporting_observer(
    budgets: LatencyBudgets,
) -> tuple[TurnLatencyObserver, list[TurnReport]]:
    """An observer of the scripted processors, and the list its turn reports go to."""
    reports: list[TurnReport] = []

    async def on_turn(report: TurnReport) -> None:
        reports.append(report)

    observer = TurnLatencyObserver(
        llm=LLM, tts=TTS, avatar=AVATAR, output=OUTPUT, budgets=budgets, on_turn=on_turn
    )
    return observer, reports


def vad_stop(at: float, stop_secs: float = 0.3) -> VADUserStoppedSpeakingFrame:
    frame = VADUserStoppedSpeakingFrame(stop_secs=stop_secs)
    frame.timestamp = at
    return frame


async def test_stage_times_of_a_turn_and_its_budget_breaks() -> None:
    observer, reports = reporting_observer(LatencyBudgets(render_first_frame=50))
    s = Script(observer)
    # Speech ends at 0.0 s; VAD reports it 0.3 s later, the turn is decided at 0.45 s.
    await s.at(0.30, vad_stop(s.t0 + 0.30), AGG, LLM)
    await s.at(0.40, TranscriptionFrame("hi there", "user", "now", finalized=True), STT, AGG)
    await s.at(0.45, UserStoppedSpeakingFrame(), AGG, LLM)
    await s.at(0.45, LLMContextFrame(LLMContext()), AGG, LLM)
    await s.at(0.50, LLMTextFrame("Hello"), LLM, TTS)
    await s.at(0.55, TTSAudioRawFrame(b"\0" * 960, 24000, 1), TTS, AVATAR)
    # Idle frames keep leaving the avatar while the motion of the reply is computed:
    # they are not the reply's first frame.
    await s.at(0.56, IMAGE, AVATAR, OUTPUT)
    await s.at(0.60, IMAGE, AVATAR, OUTPUT)
    await s.at(0.63, AUDIO, AVATAR, OUTPUT)
    await s.at(0.635, IMAGE, AVATAR, OUTPUT)
    await s.at(0.64, BotStartedSpeakingFrame(), OUTPUT, object())

    assert len(reports) == 1
    stages = reports[0].stages_ms
    assert stages["vad_stop"] == pytest.approx(450, abs=1)
    assert stages["stt"] == pytest.approx(400, abs=1)
    assert stages["llm_ttft"] == pytest.approx(50, abs=1)
    assert stages["tts_ttfb"] == pytest.approx(50, abs=1)
    assert stages["render_first_frame"] == pytest.approx(85, abs=1)  # 0.55 -> 0.635
    assert stages["transport"] == pytest.approx(5, abs=1)
    assert stages["end_to_end"] == pytest.approx(640, abs=1)
    assert reports[0].over_budget == ["render_first_frame"]


async def test_a_reply_made_ahead_of_the_turns_end_is_timed_from_its_own_edges() -> None:
    """Answering ahead: the LLM is asked at the transcript, the reply's audio waits in the
    avatar for the turn's decision, and a withdrawn first answer is not counted."""
    observer, reports = reporting_observer(LatencyBudgets())
    s = Script(observer)
    # "How does" ... a pause VAD calls a stop; the answer ahead is withdrawn.
    await s.at(0.30, vad_stop(s.t0 + 0.30), AGG, LLM)
    await s.at(0.32, TranscriptionFrame("How does", "user", "now", finalized=True), STT, AGG)
    await s.at(0.32, LLMContextFrame(LLMContext()), AGG, LLM)
    await s.at(0.33, LLMTextFrame("I"), LLM, TTS)
    await s.at(0.40, VADUserStartedSpeakingFrame(), AGG, LLM)
    await s.at(0.40, InterruptionFrame(), AGG, LLM)
    # "... this work?" ends at 1.0 s.
    await s.at(1.30, vad_stop(s.t0 + 1.30), AGG, LLM)
    await s.at(1.32, TranscriptionFrame("this work?", "user", "now", finalized=True), STT, AGG)
    await s.at(1.32, LLMContextFrame(LLMContext()), AGG, LLM)
    await s.at(1.33, LLMTextFrame("It"), LLM, TTS)
    await s.at(1.45, TTSAudioRawFrame(b"\0" * 960, 24000, 1), TTS, AVATAR)  # held there
    await s.at(1.50, UserStoppedSpeakingFrame(), AGG, LLM)
    await s.at(1.53, AUDIO, AVATAR, OUTPUT)
    await s.at(1.54, IMAGE, AVATAR, OUTPUT)
    await s.at(1.55, BotStartedSpeakingFrame(), OUTPUT, object())

    assert len(reports) == 1
    stages = reports[0].stages_ms
    assert stages["vad_stop"] == pytest.approx(500, abs=1)
    assert stages["llm_ttft"] == pytest.approx(10, abs=1)
    assert stages["tts_ttfb"] == pytest.approx(120, abs=1)
    assert stages["render_first_frame"] == pytest.approx(40, abs=1)  # from the decision
    assert stages["end_to_end"] == pytest.approx(550, abs=1)
    # The reply was made while the turn was being decided (for the waterfall).
    starts = reports[0].starts_ms
    assert starts["vad_stop"] == 0 and starts["llm_ttft"] == pytest.approx(320, abs=1)
    assert starts["tts_ttfb"] == pytest.approx(330, abs=1)
    assert starts["render_first_frame"] == pytest.approx(500, abs=1)


async def test_barge_in_is_noted_only_over_the_avatars_voice() -> None:
    observer = TurnLatencyObserver(
        llm=LLM, tts=TTS, avatar=AVATAR, output=OUTPUT, budgets=LatencyBudgets()
    )
    s = Script(observer)
    await s.at(1.0, VADUserStartedSpeakingFrame(), AGG, LLM)  # the avatar is silent
    await s.at(2.0, BotStartedSpeakingFrame(), OUTPUT, object())
    await s.at(3.0, VADUserStartedSpeakingFrame(), AGG, LLM)  # over its voice
    await s.at(3.0, VADUserStartedSpeakingFrame(), LLM, TTS, first=False)  # same frame, a hop on
    await s.at(3.3, InterruptionFrame(), AGG, LLM)
    await s.at(4.0, BotStoppedSpeakingFrame(), OUTPUT, object())
    await s.at(5.0, VADUserStartedSpeakingFrame(), AGG, LLM)  # silent again

    assert [b.as_dict() for b in observer.barge_ins] == [
        {"decided": s.t0 + 3.0, "interrupted": s.t0 + 3.3}
    ]


async def test_a_pause_that_no_turn_followed_has_no_interruption() -> None:
    observer = TurnLatencyObserver(
        llm=LLM, tts=TTS, avatar=AVATAR, output=OUTPUT, budgets=LatencyBudgets()
    )
    s = Script(observer)
    await s.at(0.0, BotStartedSpeakingFrame(), OUTPUT, object())
    await s.at(1.0, VADUserStartedSpeakingFrame(), AGG, LLM)  # a cough
    await s.at(9.0, InterruptionFrame(), AGG, LLM)  # a later turn, long after

    assert [b.as_dict() for b in observer.barge_ins] == [
        {"decided": s.t0 + 1.0, "interrupted": None}
    ]
