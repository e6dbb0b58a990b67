"""Scripted timelines for the end of the user's turn, and answering ahead of it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, BaseTurnParams, EndOfTurnState
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    DataFrame,
    EagerEndOfTurnCancelFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    TranscriptionFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import MetricsData
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMUserAggregator,
    LLMUserAggregatorParams,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.turns.user_start import MinWordsUserTurnStartStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from agent.profile import speech_pcm
from pipelines.turn_end import (
    QuietTimingSileroVAD,
    SpeakAheadTurnStopStrategy,
    SpeculationWithdrawal,
)
from pipelines.turns import SustainedSpeechUserTurnStartStrategy

COMPLETE, INCOMPLETE = EndOfTurnState.COMPLETE, EndOfTurnState.INCOMPLETE


class ScriptedTurnAnalyzer(BaseTurnAnalyzer):
    """Smart-turn's stand-in: each verdict comes ``delay_s`` after it is asked. It also
    stands in for VAD's quiet count (:meth:`quiet_secs`): audio of zeros is quiet."""

    def __init__(self, verdicts: list[EndOfTurnState], delay_s: float = 0.15) -> None:
        super().__init__(sample_rate=16_000)
        self.verdicts = list(verdicts)
        self.delay_s = delay_s
        self.asked = 0
        self.quiet_samples = 0

    def quiet_secs(self) -> float:
        return self.quiet_samples / 16_000

    @property
    def speech_triggered(self) -> bool:
        return True

    @property
    def params(self) -> BaseTurnParams:
        return BaseTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        quiet = not any(buffer)
        self.quiet_samples = self.quiet_samples + len(buffer) // 2 if quiet else 0
        return INCOMPLETE

    async def analyze_end_of_turn(self) -> tuple[EndOfTurnState, MetricsData | None]:
        self.asked += 1
        await asyncio.sleep(self.delay_s)
        return self.verdicts.pop(0), None

    def clear(self) -> None:
        pass


def aggregator(
    verdicts: list[EndOfTurnState] | ScriptedTurnAnalyzer,
    *,
    speak_ahead: bool = True,
    early_verdict_secs: float = 0.0,
    context: LLMContext | None = None,
) -> LLMUserAggregator:
    analyzer = verdicts if isinstance(verdicts, ScriptedTurnAnalyzer) else None
    analyzer = analyzer or ScriptedTurnAnalyzer(verdicts)  # type: ignore[arg-type]
    stop = SpeakAheadTurnStopStrategy(
        turn_analyzer=analyzer,
        speak_ahead=speak_ahead,
        quiet_secs=analyzer.quiet_secs,
        early_verdict_secs=early_verdict_secs,
    )
    start = SustainedSpeechUserTurnStartStrategy(
        min_speech_secs=0.5, vad_start_secs=0.1, vad_stop_secs=0.3
    )
    strategies = UserTurnStrategies(start=[start], stop=[stop])
    return LLMUserAggregator(
        context or LLMContext(), params=LLMUserAggregatorParams(user_turn_strategies=strategies)
    )


def said(text: str) -> list[Frame]:
    """The user says ``text``: VAD's start, its stop, then the transcript."""
    return [
        VADUserStartedSpeakingFrame(start_secs=0.1),
        SleepFrame(0.05),
        VADUserStoppedSpeakingFrame(stop_secs=0.3),
        TranscriptionFrame(text, "user", "now", finalized=True),
    ]


def audio(seconds: float, *, speech: bool) -> list[Frame]:
    """The mic's 20 ms frames: speech, or quiet (zeros) as VAD hears it."""
    sample = b"\x10\x00" if speech else b"\x00\x00"
    return [
        InputAudioRawFrame(sample * 320, sample_rate=16_000, num_channels=1)
        for _ in range(round(seconds / 0.02))
    ]


@dataclass
class Mark(DataFrame):
    """A frame sent after the others, to tell what came before it."""


def kinds(frames: list[Frame]) -> list[str]:
    wanted = (LLMContextFrame, UserStoppedSpeakingFrame, EagerEndOfTurnCancelFrame, Mark)
    return [type(f).__name__ for f in frames if isinstance(f, wanted)]


def last_user_words(frame: Frame) -> str:
    assert isinstance(frame, LLMContextFrame)
    message = frame.context.messages[-1]
    assert isinstance(message, dict) and message["role"] == "user"
    return str(message["content"])


async def test_the_reply_starts_at_the_transcript_and_the_turn_ends_on_the_verdict() -> None:
    context = LLMContext()
    smart_turn = ScriptedTurnAnalyzer([COMPLETE])
    down, _ = await run_test(
        aggregator(smart_turn, context=context),
        frames_to_send=[*said("Tell me a joke."), SleepFrame(0.4)],
    )
    # One inference, asked before smart-turn's verdict ended the turn; it is not asked again.
    assert kinds(down) == ["LLMContextFrame", "UserStoppedSpeakingFrame"]
    asked = next(f for f in down if isinstance(f, LLMContextFrame))
    assert asked.speculation and last_user_words(asked) == "Tell me a joke."
    assert smart_turn.asked == 1
    # The real context records the turn once it has ended.
    assert context.messages[-1] == {"role": "user", "content": "Tell me a joke."}


async def test_an_answer_ahead_is_withdrawn_when_the_user_speaks_on() -> None:
    """ "How does" ... a pause long enough for VAD's stop ... "this work?"."""
    context = LLMContext()
    down, _ = await run_test(
        aggregator([COMPLETE], context=context),
        frames_to_send=[
            *said("How does"),
            SleepFrame(0.05),  # smart-turn has not answered yet when the user goes on
            *said("this work?"),
            SleepFrame(0.4),
        ],
    )
    assert kinds(down) == [
        "LLMContextFrame",
        "EagerEndOfTurnCancelFrame",
        "LLMContextFrame",
        "UserStoppedSpeakingFrame",
    ]
    asked = [f for f in down if isinstance(f, LLMContextFrame)]
    assert [last_user_words(f) for f in asked] == ["How does", "How does this work?"]
    assert context.messages[-1] == {"role": "user", "content": "How does this work?"}


def said_slowly(text: str, quiet_s: float = 0.3) -> list[Frame]:
    """The user says ``text``; VAD's stop comes after ``quiet_s`` of quiet, in real time."""
    return [
        VADUserStartedSpeakingFrame(start_secs=0.1),
        *audio(0.2, speech=True),
        *audio(quiet_s, speech=False),
        SleepFrame(quiet_s),
        VADUserStoppedSpeakingFrame(stop_secs=quiet_s),
        TranscriptionFrame(text, "user", "now", finalized=True),
    ]


async def test_an_early_finished_verdict_ends_the_turn_at_vads_stop() -> None:
    """Smart-turn is asked after 0.15 s of quiet: its verdict is in when VAD stops at
    0.3 s, so the turn ends with the words, and smart-turn is not asked again."""
    smart_turn = ScriptedTurnAnalyzer([COMPLETE])
    down, _ = await run_test(
        aggregator(smart_turn, early_verdict_secs=0.15),
        frames_to_send=[*said_slowly("Tell me a joke."), SleepFrame(0.05), Mark(), SleepFrame(0.3)],
    )
    # Within 50 ms of the words (a verdict asked at the stop would take 150).
    assert kinds(down) == ["LLMContextFrame", "UserStoppedSpeakingFrame", "Mark"]
    assert smart_turn.asked == 1
    # Without the early verdict, the same turn ends only once smart-turn answers.
    smart_turn = ScriptedTurnAnalyzer([COMPLETE])
    down, _ = await run_test(
        aggregator(smart_turn),
        frames_to_send=[*said_slowly("Tell me a joke."), SleepFrame(0.05), Mark(), SleepFrame(0.3)],
    )
    assert kinds(down) == ["LLMContextFrame", "Mark", "UserStoppedSpeakingFrame"]


async def test_an_early_unfinished_verdict_is_asked_again_at_vads_stop() -> None:
    smart_turn = ScriptedTurnAnalyzer([INCOMPLETE, COMPLETE])
    down, _ = await run_test(
        aggregator(smart_turn, early_verdict_secs=0.15),
        frames_to_send=[*said_slowly("Tell me a joke."), SleepFrame(0.4)],
    )
    assert kinds(down) == ["LLMContextFrame", "UserStoppedSpeakingFrame"]
    assert smart_turn.asked == 2


async def test_an_early_verdict_is_dropped_when_the_user_speaks_before_vads_stop() -> None:
    """ "Tell me a joke" ... 0.2 s ... "about cats": the early "finished" heard only the
    first words, so it is dropped, and the turn ends on the verdict at VAD's stop."""
    smart_turn = ScriptedTurnAnalyzer([COMPLETE, INCOMPLETE, INCOMPLETE])
    down, _ = await run_test(
        aggregator(smart_turn, early_verdict_secs=0.15),
        frames_to_send=[
            VADUserStartedSpeakingFrame(start_secs=0.1),
            *audio(0.2, speech=True),
            *audio(0.2, speech=False),
            SleepFrame(0.2),  # the early verdict is in
            *audio(0.2, speech=True),
            *audio(0.3, speech=False),
            VADUserStoppedSpeakingFrame(stop_secs=0.3),
            TranscriptionFrame("Tell me a joke about cats.", "user", "now", finalized=True),
            SleepFrame(0.4),
        ],
    )
    # Asked again in the quiet after "about cats", and at VAD's stop: "unfinished" both
    # times, so the turn stays open (the first "finished" would have ended it).
    assert smart_turn.asked == 3
    assert "UserStoppedSpeakingFrame" not in kinds(down)


async def test_a_question_ends_the_turn_without_asking_smart_turn() -> None:
    """Smart-turn would call "How does this work?" unfinished (it hears falling pitch)."""
    smart_turn = ScriptedTurnAnalyzer([INCOMPLETE])
    down, _ = await run_test(
        aggregator(smart_turn), frames_to_send=[*said("How does this work?"), SleepFrame(0.4)]
    )
    assert kinds(down) == ["LLMContextFrame", "UserStoppedSpeakingFrame"]
    assert smart_turn.asked == 0


async def test_a_question_whose_words_come_late_still_ends_the_turn() -> None:
    """A slow transcript: smart-turn is asked meanwhile, and its "unfinished" is overruled."""
    smart_turn = ScriptedTurnAnalyzer([INCOMPLETE])
    frames = said("How does this work?")
    frames.insert(-1, SleepFrame(0.2))
    down, _ = await run_test(aggregator(smart_turn), frames_to_send=[*frames, SleepFrame(0.4)])
    assert "UserStoppedSpeakingFrame" in kinds(down)
    assert smart_turn.asked == 1


async def test_an_unfinished_statement_keeps_the_turn_open_and_its_answer_waiting() -> None:
    down, _ = await run_test(
        aggregator([INCOMPLETE]), frames_to_send=[*said("So I was thinking"), SleepFrame(0.4)]
    )
    # Answered ahead, but the turn has not ended: the answer is held until it does.
    # (The pipeline's end then writes the words down, which asks the LLM again.)
    assert "UserStoppedSpeakingFrame" not in kinds(down)
    first = next(f for f in down if isinstance(f, LLMContextFrame))
    assert first.speculation and last_user_words(first) == "So I was thinking"


async def test_without_speaking_ahead_the_reply_waits_for_the_verdict() -> None:
    down, _ = await run_test(
        aggregator([COMPLETE], speak_ahead=False),
        frames_to_send=[*said("What can you do?"), SleepFrame(0.4)],
    )
    assert sorted(kinds(down)) == ["LLMContextFrame", "UserStoppedSpeakingFrame"]
    asked = next(f for f in down if isinstance(f, LLMContextFrame))
    assert not asked.speculation  # asked once the turn ended, on the real context


async def test_a_sound_over_the_avatar_that_starts_no_turn_is_not_answered() -> None:
    """A short "hmm" over the avatar's reply (a backchannel) and another just after it."""
    down, _ = await run_test(
        aggregator([COMPLETE, COMPLETE]),
        frames_to_send=[BotStartedSpeakingFrame(), *said("Hmm."), *said("Mm."), SleepFrame(0.4)],
    )
    # No answer, and so no withdrawal that would interrupt the avatar. (The pipeline's end
    # writes the words down, which asks the LLM: not an answer ahead.)
    assert "EagerEndOfTurnCancelFrame" not in kinds(down)
    assert not any(isinstance(f, LLMContextFrame) and f.speculation for f in down)


async def test_a_turn_over_the_avatar_started_by_its_words_is_ended_by_them() -> None:
    """A question over the avatar, too short to interrupt it by its length: its transcript
    starts the turn (three words or more), after VAD's stop; the turn must still end."""
    start = SustainedSpeechUserTurnStartStrategy(
        min_speech_secs=0.5, vad_start_secs=0.1, vad_stop_secs=0.3
    )
    stop = SpeakAheadTurnStopStrategy(turn_analyzer=ScriptedTurnAnalyzer([COMPLETE]))
    strategies = UserTurnStrategies(
        start=[start, MinWordsUserTurnStartStrategy(min_words=3)], stop=[stop]
    )
    user = LLMUserAggregator(
        LLMContext(), params=LLMUserAggregatorParams(user_turn_strategies=strategies)
    )
    down, _ = await run_test(
        user,
        frames_to_send=[BotStartedSpeakingFrame(), *said("What can you do?"), SleepFrame(0.3)],
    )
    assert kinds(down)[-2:] == ["LLMContextFrame", "UserStoppedSpeakingFrame"]


async def test_a_withdrawal_interrupts_the_stages_after_it() -> None:
    down, _ = await run_test(
        SpeculationWithdrawal(), frames_to_send=[EagerEndOfTurnCancelFrame(), SleepFrame(0.05)]
    )
    assert [type(f) for f in down] == [EagerEndOfTurnCancelFrame, InterruptionFrame]


async def test_vad_counts_the_quiet_after_speech_before_its_stop() -> None:
    """Silero's windows after the last word are counted as they come (VAD's own stop
    waits for ``stop_secs`` of them); speech resets the count."""
    vad = QuietTimingSileroVAD(params=VADParams(stop_secs=0.3))
    vad.set_sample_rate(16_000)  # as the VAD controller does at the call's start
    pcm, end_s = speech_pcm("Tell me a joke.", "espeak")
    speech = pcm[: int(end_s * 16_000)].tobytes()
    seen = []
    for i in range(0, len(speech) - 640, 640):  # 20 ms frames, as the mic sends them
        await vad.analyze_audio(speech[i : i + 640])
        seen.append(vad.quiet_secs())
    assert max(seen[-10:]) < 0.15  # the last words are speech
    quiet = []
    for _ in range(15):  # VAD's stop_secs of silence
        await vad.analyze_audio(bytes(640))
        quiet.append(vad.quiet_secs())
    # Counted in 32 ms windows, and long enough for an early verdict before VAD's stop
    # (Silero's state lets a window or two after the speech still read as voiced).
    assert quiet == sorted(quiet) and 0.15 <= quiet[-1] <= 0.3
    await vad.analyze_audio(speech[-6400:-3200])
    assert vad.quiet_secs() < quiet[-1]
    await vad.cleanup()
