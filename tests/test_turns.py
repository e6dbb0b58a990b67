"""Scripted timelines for when the user's turn starts, and so when the avatar is interrupted."""

from __future__ import annotations

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    Frame,
    InterruptionFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipelines.turns import SustainedSpeechUserTurnStartStrategy


def aggregator() -> LLMUserAggregator:
    start = SustainedSpeechUserTurnStartStrategy(
        min_speech_secs=0.5, vad_start_secs=0.2, vad_stop_secs=0.3
    )
    strategies = UserTurnStrategies(start=[start], stop=[SpeechTimeoutUserTurnStopStrategy()])
    return LLMUserAggregator(
        LLMContext(), params=LLMUserAggregatorParams(user_turn_strategies=strategies)
    )


def count(frames: list[Frame], kind: type[Frame]) -> int:
    return sum(isinstance(f, kind) for f in frames)


async def test_speech_while_avatar_is_silent_starts_the_turn_at_once() -> None:
    down, _ = await run_test(
        aggregator(), frames_to_send=[VADUserStartedSpeakingFrame(), SleepFrame(0.05)]
    )
    assert count(down, UserStartedSpeakingFrame) == 1
    assert count(down, InterruptionFrame) == 1


async def user_speaks_over_the_avatar(
    for_s: float, stop_after_s: float | None = None
) -> list[Frame]:
    """The avatar talks; VAD reports the user 0.2 s into their speech; wait ``for_s``, or
    report the end of speech (stop_secs 0.3) after ``stop_after_s`` and then wait."""
    frames: list[Frame] = [
        BotStartedSpeakingFrame(),
        SleepFrame(0.2),
        VADUserStartedSpeakingFrame(start_secs=0.2),
    ]
    if stop_after_s is not None:
        frames += [SleepFrame(stop_after_s), VADUserStoppedSpeakingFrame(stop_secs=0.3)]
    down, _ = await run_test(aggregator(), frames_to_send=[*frames, SleepFrame(for_s)])
    return down


async def test_short_sound_over_the_avatar_does_not_interrupt() -> None:
    """The avatar talks from 0 s; a 0.3 s "hmm" starts at 0 s. VAD reports it at 0.2 s and
    its end 0.3 s after it ended, at 0.6 s: later than min_speech_secs after VAD's start."""
    down = await user_speaks_over_the_avatar(0.8, stop_after_s=0.4)
    assert count(down, InterruptionFrame) == 0
    assert count(down, UserStartedSpeakingFrame) == 0


async def test_sustained_speech_over_the_avatar_interrupts_after_min_speech() -> None:
    """With no VAD stop by 0.8 s after VAD's start (0.5 s of speech plus VAD's 0.3 s stop
    delay), the user's turn starts and interrupts the avatar; not before."""
    assert count(await user_speaks_over_the_avatar(0.5), InterruptionFrame) == 0
    down = await user_speaks_over_the_avatar(0.9)
    assert count(down, InterruptionFrame) == 1
    assert count(down, UserStartedSpeakingFrame) == 1
