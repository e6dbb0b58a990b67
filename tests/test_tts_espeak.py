"""libespeak-ng engine: streaming chunks, phoneme and word marks, abort, errors."""

from __future__ import annotations

import gc
import threading
import time
import wave

import numpy as np
import pytest

from speech.espeak import (
    EspeakEngine,
    SpeechChunk,
    UnknownVoiceError,
    synthesize,
    write_wav,
)

SENTENCE = "Hello there, I am fine. It is 42 o'clock, and the café is open!"
# About 90 s of speech: long enough that synthesis takes tens of milliseconds.
LONG = " ".join(["The quick brown fox jumps over the lazy dog, and then it runs away."] * 20)


@pytest.fixture(scope="module")
def engine() -> EspeakEngine:
    return EspeakEngine()


def _absolute_marks(chunks: list[SpeechChunk]) -> tuple[list[float], list[tuple[str, float]]]:
    """Phoneme times and word marks on the utterance's timeline."""
    phonemes, words, start = [], [], 0.0
    for chunk in chunks:
        phonemes += [start + p.offset_s for p in chunk.phonemes]
        words += [(w, start + t) for w, t in chunk.words]
        start += chunk.duration_s
    return phonemes, words


def test_stream_delivers_chunks_while_synthesising(engine: EspeakEngine):
    with engine.stream(LONG) as speech:
        during = 0
        for _ in speech:
            during += not speech.done
    # The reader got chunks before synthesis of the whole text had ended.
    assert during >= 10


def test_bounded_stream_stays_close_to_its_reader(engine: EspeakEngine):
    with engine.stream(LONG, max_buffered=2) as speech:
        read = 0
        for chunk in speech:
            read += len(chunk.audio) // 2
            assert speech.samples_synthesized - read <= 3 * engine.chunk_samples
            if read > 40 * engine.chunk_samples:
                break


def test_chunks_are_50ms_with_sensible_total(engine: EspeakEngine):
    chunks = list(engine.stream(SENTENCE))
    assert engine.sample_rate == 22050
    assert len(chunks) > 20
    assert all(len(c.audio) == 2 * engine.chunk_samples for c in chunks[:-1])
    assert abs(chunks[0].duration_s - 0.05) < 0.001
    assert 0 < chunks[-1].duration_s <= 0.05
    total = sum(c.duration_s for c in chunks)
    # 14 words at 170 words per minute is about 5 s, plus pauses.
    assert 2.5 < total < 8.0
    faster = sum(c.duration_s for c in engine.stream(SENTENCE, rate=340))
    assert faster < 0.75 * total


def test_phoneme_marks_are_ipa_monotonic_and_inside_their_chunk(engine: EspeakEngine):
    chunks = list(engine.stream(SENTENCE))
    for chunk in chunks:
        offsets = [p.offset_s for p in chunk.phonemes]
        assert offsets == sorted(offsets)
        assert all(0.0 <= t <= chunk.duration_s for t in offsets)
    phonemes = [p.ipa for c in chunks for p in c.phonemes]
    assert len(phonemes) > 30
    assert "h" in phonemes and "" in phonemes  # a consonant, and pauses between clauses
    assert any("ˈ" in p for p in phonemes)  # stress marks, as espeak writes IPA
    times, _ = _absolute_marks(chunks)
    assert times == sorted(times)


def test_word_marks_are_the_words_of_the_text_in_order(engine: EspeakEngine):
    chunks = list(engine.stream(SENTENCE))
    phoneme_times, words = _absolute_marks(chunks)
    # Including "am" and "the", which espeak speaks as part of a neighbour.
    assert [w for w, _ in words] == SENTENCE.split()
    times = [t for _, t in words]
    assert times == sorted(times)
    assert times[0] == 0.0 and times[-1] < phoneme_times[-1]
    for chunk in chunks:
        assert all(0.0 <= t <= chunk.duration_s for _, t in chunk.words)


def test_should_abort_stops_synthesis_quickly(engine: EspeakEngine):
    full = len(synthesize(LONG)[0])
    stop = threading.Event()
    speech = engine.stream(LONG, should_abort=stop.is_set, max_buffered=4)
    chunks = [next(speech) for _ in range(3)]
    stop.set()
    started = time.perf_counter()
    assert list(speech) == []
    assert speech.join(1.0)
    latency = time.perf_counter() - started
    assert speech.aborted
    assert latency < 0.2
    assert len(chunks) == 3
    assert speech.samples_synthesized < 0.05 * full


def test_abort_from_another_thread_ends_iteration(engine: EspeakEngine):
    speech = engine.stream(LONG, max_buffered=4)
    next(speech)
    threading.Thread(target=speech.abort).start()
    assert speech.join(1.0)
    assert speech.aborted and speech.exhausted
    assert list(speech) == []


def test_abandoned_stream_does_not_block_others(engine: EspeakEngine):
    speech = engine.stream(LONG, max_buffered=1)
    next(speech)
    del speech
    gc.collect()
    started = time.perf_counter()
    audio, _ = synthesize("Still speaking.")
    assert len(audio) > 0
    assert time.perf_counter() - started < 1.0


def test_concurrent_streams_do_not_mix(engine: EspeakEngine):
    texts = ["One two three four.", "Five six seven eight nine ten."] * 3
    lengths = {t: len(synthesize(t)[0]) for t in set(texts)}
    results: list[tuple[str, list[SpeechChunk]]] = []

    def speak(text: str) -> None:
        results.append((text, list(engine.stream(text))))

    threads = [threading.Thread(target=speak, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5.0)
    assert len(results) == len(texts)
    for text, chunks in results:
        assert [w for c in chunks for w, _ in c.words] == text.split()
        # espeak adds a little randomness, so lengths vary by a few samples.
        samples = sum(len(c.audio) for c in chunks) // 2
        assert abs(samples - lengths[text]) < 0.02 * lengths[text]


def test_unknown_voice_names_valid_ones(engine: EspeakEngine):
    with pytest.raises(UnknownVoiceError, match="en-us") as info:
        engine.stream("Hello", voice="elvish")
    assert "elvish" in str(info.value)
    with pytest.raises(UnknownVoiceError):
        synthesize("Hello", voice="en-usa")
    with pytest.raises(ValueError, match="rate"):
        engine.stream("Hello", rate=5)
    assert "en-us" in engine.voices()
    engine.check_voice("en-gb+f3")  # a language with a variant
    with pytest.raises(UnknownVoiceError):
        engine.check_voice("en-zz")  # no quiet fallback to some other English


def test_synthesize_is_not_silent(tmp_path):
    audio, rate = synthesize("Testing one two three.", voice="en-gb", pitch=60)
    assert rate == 22050 and audio.dtype == np.int16
    assert 1.0 < len(audio) / rate < 4.0
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 500
    path = write_wav(tmp_path / "speech.wav", "Testing one two three.", voice="en-gb", pitch=60)
    with wave.open(str(path)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (rate, 1, 2)
        assert abs(wav.getnframes() - len(audio)) < 0.02 * len(audio)  # espeak jitters a little
