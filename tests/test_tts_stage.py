"""EspeakTTSService inside a real pipecat pipeline: audio, phonemes, words, interruption."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import numpy as np
import pytest
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.workers.runner import WorkerRunner

from pipelines.config import TTSSettings
from pipelines.frames import PhonemeAudioRawFrame
from pipelines.stages.tts import MAX_FRAME_S, EspeakTTSService
from speech.espeak import SpeechChunk, UnknownVoiceError, synthesize
from speech.phonemes import PhonemeMark

REPLY = "Hello there, I am your avatar. It is nice to meet you!"
LONG_REPLY = " ".join(["This sentence is here only to make the reply last a long while."] * 6)


def _audio(frames: list[Frame]) -> list[PhonemeAudioRawFrame]:
    return [f for f in frames if isinstance(f, PhonemeAudioRawFrame)]


def _words(frames: list[Frame]) -> list[TTSTextFrame]:
    return [f for f in frames if isinstance(f, TTSTextFrame)]


def _no_synthesis_threads() -> bool:
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        if not any(t.name == "espeak-synth" for t in threading.enumerate()):
            return True
        time.sleep(0.01)
    return False


async def test_speak_frame_gives_phoneme_audio_and_timed_words():
    tts = EspeakTTSService(TTSSettings(), max_lead_s=None)
    down, _ = await run_test(
        tts,
        frames_to_send=[TTSSpeakFrame(REPLY)],
        pipeline_params=PipelineParams(enable_metrics=True),
    )
    audio = _audio(down)
    pushed = sum(f.num_frames for f in audio)
    assert abs(pushed - len(synthesize(REPLY)[0])) < 0.01 * 22050  # all of it, once
    assert all(f.sample_rate == 22050 and f.num_channels == 1 for f in audio)
    # Chunks already waiting go out together (how many are waiting depends on timing).
    assert all(f.num_frames / 22050 < MAX_FRAME_S + 0.06 for f in audio)
    assert sum(len(f.phonemes) for f in audio) > 30
    assert len({f.context_id for f in audio}) == 1

    kinds = [type(f) for f in down]
    first_audio = kinds.index(PhonemeAudioRawFrame)
    last_audio = len(kinds) - 1 - kinds[::-1].index(PhonemeAudioRawFrame)
    assert kinds.index(TTSStartedFrame) < first_audio < last_audio < kinds.index(TTSStoppedFrame)

    words = _words(down)
    assert " ".join(w.text for w in words) == REPLY
    pts = [w.pts for w in words]
    assert all(pts) and pts == sorted(pts) and pts[-1] > pts[0]

    ttfb = [
        d
        for f in down
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, TTFBMetricsData) and d.processor == tts.name
    ]
    assert any(0 < d.value < 0.5 for d in ttfb)  # the first is the initial zero report
    assert _no_synthesis_threads()


async def test_llm_reply_words_keep_their_order_across_sentences():
    tts = EspeakTTSService(TTSSettings(voice="en-gb", rate=220), max_lead_s=None)
    tokens = ["Hello there, I am ", "your avatar. ", "It is nice ", "to meet you!"]
    down, _ = await run_test(
        tts,
        frames_to_send=[
            LLMFullResponseStartFrame(),
            *[LLMTextFrame(t) for t in tokens],
            LLMFullResponseEndFrame(),
        ],
    )
    words = _words(down)
    assert " ".join(w.text for w in words) == REPLY
    pts = [w.pts for w in words]
    # The second sentence's words are timed after the first sentence's audio.
    assert pts == sorted(pts)
    assert len({f.context_id for f in _audio(down)}) == 1


async def test_interruption_stops_the_reply_at_once():
    full_samples = len(synthesize(LONG_REPLY)[0])
    tts = EspeakTTSService(TTSSettings(), max_lead_s=0.2)
    down, _ = await run_test(
        tts,
        frames_to_send=[
            TTSSpeakFrame(LONG_REPLY),
            SleepFrame(0.4),
            InterruptionFrame(),
            SleepFrame(0.3),
        ],
    )
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before, after = _audio(down[:cut]), _audio(down[cut:])
    assert before, "audio should have started before the interruption"
    reply = before[0].context_id
    assert not [f for f in after if f.context_id == reply]
    assert not [f for f in _words(down[cut:]) if f.context_id == reply]
    # Paced output: only about lead + elapsed time of audio went out, of a ~25 s reply.
    sent = sum(f.num_frames for f in before)
    assert sent < 0.1 * full_samples
    assert _no_synthesis_threads()


async def test_next_reply_after_interruption_is_spoken_whole():
    tts = EspeakTTSService(TTSSettings(), max_lead_s=0.1)
    down, _ = await run_test(
        tts,
        frames_to_send=[
            TTSSpeakFrame(LONG_REPLY),
            SleepFrame(0.2),
            InterruptionFrame(),
            TTSSpeakFrame("Sorry, go on."),
        ],
    )
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    assert [w.text for w in _words(down[cut:])] == ["Sorry,", "go", "on."]
    assert isinstance(down[-1], TTSStoppedFrame)


async def test_cancel_mid_reply_leaves_no_thread_or_task():
    tts = EspeakTTSService(TTSSettings(), max_lead_s=0.1)
    worker = PipelineWorker(Pipeline([tts]), cancel_on_idle_timeout=False)
    runner = WorkerRunner()
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    await asyncio.sleep(0.2)
    await worker.queue_frame(TTSSpeakFrame(LONG_REPLY))
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await worker.cancel()
    await asyncio.wait_for(run, 5.0)
    assert time.monotonic() - started < 2.0
    assert _no_synthesis_threads()


async def test_settings_update_rejects_unknown_voice_and_keeps_speaking():
    tts = EspeakTTSService(TTSSettings(), max_lead_s=None)
    down, up = await run_test(
        tts,
        frames_to_send=[
            TTSUpdateSettingsFrame(delta=EspeakTTSService.Settings(voice="elvish", rate=200)),
            TTSSpeakFrame("Still here."),
        ],
    )
    assert any(isinstance(f, ErrorFrame) and "elvish" in f.error for f in up)
    assert tts._settings.voice == "en-us" and tts._settings.rate == 170
    assert [w.text for w in _words(down)] == ["Still", "here."]


def test_unknown_voice_fails_at_construction():
    with pytest.raises(UnknownVoiceError, match="en-us"):
        EspeakTTSService(TTSSettings(voice="elvish"))


class _ReadySpeech:
    """A synthesis whose chunks are all ready (it ran far ahead of the reader)."""

    def __init__(self, chunks: list[SpeechChunk]) -> None:
        self._chunks = list(chunks)

    def poll(self) -> SpeechChunk | None:
        return self._chunks.pop(0) if self._chunks else None


def test_chunks_already_synthesised_go_out_joined_up_to_the_frame_limit() -> None:
    tts = EspeakTTSService(TTSSettings(), max_lead_s=None)
    chunk_s = 0.05
    samples = round(22050 * chunk_s)
    chunks = [
        SpeechChunk(
            np.full(samples, i, np.int16).tobytes(),
            [PhonemeMark(f"p{i}", 0.01)],
            [(f"w{i}", 0.02)],
        )
        for i in range(15)
    ]
    speech = _ReadySpeech(chunks[1:])
    joined = tts._with_ready_chunks(speech, chunks[0])  # type: ignore[arg-type]
    per_frame = math.ceil(MAX_FRAME_S * 22050 / samples)  # joined until it holds the limit
    assert len(joined.audio) == per_frame * samples * 2
    # Marks keep their place in the joined audio.
    assert [m.ipa for m in joined.phonemes] == [f"p{i}" for i in range(per_frame)]
    offsets = [m.offset_s for m in joined.phonemes]
    assert offsets == pytest.approx([0.01 + i * samples / 22050 for i in range(per_frame)])
    assert joined.words[3] == ("w3", pytest.approx(0.02 + 3 * samples / 22050))
    rest = tts._with_ready_chunks(speech, speech.poll())  # type: ignore[arg-type]
    assert len(rest.audio) == (15 - per_frame) * samples * 2, "what is left, when less"
