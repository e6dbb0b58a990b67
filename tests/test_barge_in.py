"""Barge-in on a scripted timeline, through real TTS, avatar and LLM context aggregation.

In the style of LiveKit's ``test_interruption``: a long reply starts at 0 s; the user's
speech is detected (VAD) at 1.5 s, which halts the avatar's audio at once; the turn
logic interrupts at 2.0 s. Checked: how soon the audio stopped, that none of the
interrupted reply came out afterwards, and that the LLM context keeps only the words
that were actually spoken.
"""

from __future__ import annotations

import re
import time

from pipecat.frames.frames import (
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.tests.utils import SleepFrame, run_test

from pipelines.config import TTSSettings
from pipelines.frames import AvatarImageFrame
from pipelines.stages.avatar import AvatarStage
from pipelines.stages.tts import EspeakTTSService
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.player import AvatarPlayer
from tests.helpers.frames import Timestamps

SAMPLE_RATE = 24_000
FRAME_S = 1 / 25
REPLY = (
    "Once upon a time a small robot lived in a lighthouse by the sea. Every night it "
    "counted the ships that passed, and every morning it wrote their names in a long "
    "blue book that nobody ever read, until one day a girl from the village came."
)
VAD_AT_S = 1.5
INTERRUPT_AT_S = 2.0


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def test_barge_in_halts_audio_at_vad_and_keeps_only_spoken_words() -> None:
    settings = AvatarSettings(width=128, height=128, device="cpu")
    avatar = AvatarStage(AvatarPlayer(AvatarCore(settings, sample_rate=SAMPLE_RATE)))
    played = Timestamps()
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context)
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), avatar, played, aggregators.assistant()])
    start = time.monotonic()
    await run_test(
        pipeline,
        frames_to_send=[
            LLMFullResponseStartFrame(),
            LLMTextFrame(REPLY),
            LLMFullResponseEndFrame(),
            SleepFrame(VAD_AT_S),
            VADUserStartedSpeakingFrame(start_secs=0.2),
            SleepFrame(INTERRUPT_AT_S - VAD_AT_S),
            UserStartedSpeakingFrame(),
            InterruptionFrame(),
            SleepFrame(1.0),
        ],
    )

    vad_at = next(t for t, f in played.seen if isinstance(f, VADUserStartedSpeakingFrame))
    cut_at = next(t for t, f in played.seen if isinstance(f, InterruptionFrame))
    audio = [(t, f) for t, f in played.seen if isinstance(f, TTSAudioRawFrame)]
    spoken_s = sum(len(f.audio) / 2 / SAMPLE_RATE for _, f in audio)
    assert 1.0 < vad_at - start < 2.2, "the timeline ran as scripted"
    assert spoken_s > 0.8, "the reply was playing before the user spoke"

    # The audio halts at the VAD decision: at most the slice being drawn then gets out.
    after_vad = [t - vad_at for t, _ in audio if t > vad_at]
    assert len(after_vad) <= 1, f"{len(after_vad)} audio slices left after the VAD decision"
    assert all(dt <= 3 * FRAME_S for dt in after_vad), after_vad
    # None of the interrupted reply after the interruption; the face keeps streaming.
    assert not [t for t, _ in audio if t > cut_at]
    assert sum(1 for t, f in played.seen if t > cut_at and isinstance(f, AvatarImageFrame)) >= 15

    # The context keeps only the words that were actually spoken.
    heard = [f.text for t, f in played.seen if isinstance(f, TTSTextFrame)]
    assistant = [m for m in context.get_messages() if m.get("role") == "assistant"]
    assert len(assistant) == 1, context.get_messages()
    kept = words(str(assistant[0]["content"]))
    reply = words(REPLY)
    assert kept, "the words spoken before the barge-in are in the context"
    assert kept == reply[: len(kept)], "the context holds the reply's beginning, in order"
    assert len(kept) < len(reply) // 2, "the unspoken rest of the reply is not in the context"
    assert kept == words(" ".join(heard)), "exactly the words that left with their audio"
    # espeak speaks 3 to 5 of these short words a second: the kept words fit the audio.
    assert 1.5 * spoken_s <= len(kept) <= 6 * spoken_s + 1, (len(kept), spoken_s)
