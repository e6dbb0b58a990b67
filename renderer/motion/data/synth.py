"""Speak one utterance (espeak-ng or Piper): 16 kHz audio plus its phoneme, word and
pause spans."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from renderer.motion.data.voices import VoiceSetting, is_piper, piper_speed
from renderer.motion.features import SAMPLE_RATE, to_model_rate
from speech.espeak import EspeakEngine
from speech.stream import SpeechStream

PAUSE_MIN_S = 0.15  # a silence at least this long counts as a pause
LEAD_RANGE_S = (0.3, 1.0)  # silence added before and after each sentence


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled time span in seconds; ``label`` is IPA for phonemes, the word for words."""

    label: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Timeline:
    """What is said when: speech phonemes (no silences), words and pauses, in seconds."""

    phonemes: tuple[Span, ...]
    words: tuple[Span, ...]
    pauses: tuple[tuple[float, float], ...]
    duration: float

    def scaled(self, factor: float) -> Timeline:
        """Every time multiplied by ``factor`` (a speed change of ``1 / factor``)."""

        def s(spans: tuple[Span, ...]) -> tuple[Span, ...]:
            return tuple(replace(x, start=x.start * factor, end=x.end * factor) for x in spans)

        return Timeline(
            s(self.phonemes),
            s(self.words),
            tuple((a * factor, b * factor) for a, b in self.pauses),
            self.duration * factor,
        )


@dataclass(frozen=True, slots=True)
class Spoken:
    """One synthesised utterance: float32 mono audio at 16 kHz and its timeline."""

    text: str
    setting: VoiceSetting
    audio: np.ndarray
    timeline: Timeline


_Marks = list[tuple[str, float]]


def _stream(engine: EspeakEngine, text: str, setting: VoiceSetting) -> tuple[SpeechStream, int]:
    """The utterance's speech stream and its sample rate, from espeak-ng or Piper."""
    if is_piper(setting.voice):
        from speech.piper import PiperEngine

        piper = PiperEngine()  # the voice loads once per process
        # Whole sentences, as Piper speaks a reply after its first clause.
        stream = piper.stream(text, speed=piper_speed(setting.rate), split_first=False)
        return stream, piper.sample_rate
    stream = engine.stream(text, voice=setting.voice, rate=setting.rate, pitch=setting.pitch)
    return stream, engine.sample_rate


def _marks(
    engine: EspeakEngine, text: str, setting: VoiceSetting
) -> tuple[np.ndarray, int, _Marks, _Marks]:
    """The int16 audio, its rate, and its (ipa, seconds) phoneme and (word, seconds) word
    marks."""
    pieces: list[bytes] = []
    phonemes: _Marks = []
    words: _Marks = []
    t = 0.0
    stream, rate = _stream(engine, text, setting)
    with stream as s:
        for chunk in s:
            phonemes += [(p.ipa, t + p.offset_s) for p in chunk.phonemes]
            words += [(w, t + at) for w, at in chunk.words]
            t += chunk.duration_s
            pieces.append(chunk.audio)
    audio = np.frombuffer(b"".join(pieces), dtype=np.int16)
    return audio, rate, phonemes, words


def timeline_from_marks(
    phonemes: list[tuple[str, float]], words: list[tuple[str, float]], duration: float
) -> Timeline:
    """Spans from espeak's marks: a mark holds until the next; ``""`` marks are silence."""
    spans: list[Span] = []
    for i, (ipa, start) in enumerate(phonemes):
        end = phonemes[i + 1][1] if i + 1 < len(phonemes) else duration
        if ipa and end > start:
            spans.append(Span(ipa, start, min(end, duration)))
    # Silences: every gap between speech phonemes, plus the edges.
    edges = [0.0, *[x for sp in spans for x in (sp.start, sp.end)], duration]
    gaps = [(edges[i], edges[i + 1]) for i in range(0, len(edges), 2)]
    pauses = tuple((a, b) for a, b in gaps if b - a >= PAUSE_MIN_S)
    word_spans: list[Span] = []
    for i, (word, start) in enumerate(words):
        end = words[i + 1][1] if i + 1 < len(words) else duration
        # A word ends where the next starts or where a pause begins, whichever is first.
        end = min([end, *[a for a, _ in pauses if start < a < end]])
        word_spans.append(Span(word, start, max(end, start)))
    return Timeline(tuple(spans), tuple(word_spans), pauses, duration)


def speak(
    text: str,
    setting: VoiceSetting,
    rng: np.random.Generator,
    engine: EspeakEngine | None = None,
) -> Spoken:
    """Synthesise ``text``; pad 0.3-1.0 s of silence before and after (drawn from ``rng``)."""
    engine = engine or EspeakEngine()
    raw, rate, phonemes, words = _marks(engine, text, setting)
    audio = to_model_rate(raw, rate)
    lead = float(rng.uniform(*LEAD_RANGE_S))
    tail = float(rng.uniform(*LEAD_RANGE_S))
    duration = len(audio) / SAMPLE_RATE
    last = max((i for i, (ipa, _) in enumerate(phonemes) if ipa), default=len(phonemes) - 1)
    speech_end = phonemes[last + 1][1] if last + 1 < len(phonemes) else duration
    # The speech already ends with a short pause; add only what the drawn tail still needs.
    tail = max(0.0, tail - (duration - speech_end))
    n_lead, n_tail = round(lead * SAMPLE_RATE), round(tail * SAMPLE_RATE)
    audio = np.concatenate(
        [np.zeros(n_lead, np.float32), audio, np.zeros(n_tail, np.float32)]
    ).astype(np.float32)
    at = n_lead / SAMPLE_RATE
    timeline = timeline_from_marks(
        [(ipa, t + at) for ipa, t in phonemes],
        [(w, t + at) for w, t in words],
        len(audio) / SAMPLE_RATE,
    )
    return Spoken(text, setting, audio, timeline)
