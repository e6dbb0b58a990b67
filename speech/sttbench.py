"""``visage bench stt``: word error rate and real-time factor of speech-to-text engines on a
fixed set of sentences, spoken by several synthetic voices.

The speech is deterministic: each voice speaks the whole set in a fresh process (espeak-ng
carries state from one synthesis to the next, and Piper samples noise from onnxruntime's
generator, seeded here before the voice loads), so every run hears the same samples.
Utterances are padded as a live call hears them: a little silence before (the pre-roll
before VAD's start) and after (VAD's stop delay).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from speech.wer import word_errors

SAMPLE_RATE = 16_000

#: What a caller asks an avatar: greetings, requests, questions, short and long.
SENTENCES: tuple[str, ...] = (
    "Hello, who are you?",
    "Hello there, what is your name?",
    "Can you tell me what the weather will be like tomorrow?",
    "I would like to book a table for two people tonight.",
    "How long does it take to drive from the airport to the city center?",
    "Please remind me to call my sister after lunch.",
    "What time does the museum open on Sunday morning?",
    "Could you explain how a rainbow forms in the sky?",
    "My order has not arrived yet and I am getting worried.",
    "Thank you very much, that was really helpful.",
)

LEAD_S = 0.3  # silence before the speech (VAD's pre-roll)
TAIL_S = 0.4  # silence after it (VAD's stop delay and its analysis window)


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: ``engine`` is "espeak" or "piper"."""

    name: str
    engine: str
    voice: str = "en-us"
    rate: int = 170
    pitch: int = 50


VOICES: tuple[Voice, ...] = (
    Voice("espeak en-us", "espeak", "en-us", 170, 50),
    Voice("espeak en-us+f3", "espeak", "en-us+f3", 160, 60),
    Voice("piper joe", "piper"),
)


def _speak_all(voice: Voice, sentences: tuple[str, ...]) -> list[np.ndarray]:
    """Every sentence in ``voice``, 16 kHz int16, padded (runs in a fresh process)."""
    import soxr

    speak: Callable[[str], tuple[np.ndarray, int]]
    if voice.engine == "piper":
        import onnxruntime

        onnxruntime.set_seed(0)  # Piper's noise, before its session exists
        from speech.piper import PiperEngine

        engine = PiperEngine(threads=1)  # one thread: the same sums in the same order
        speak = engine.synthesize
    else:
        from speech.espeak import synthesize

        def speak(text: str) -> tuple[np.ndarray, int]:
            return synthesize(text, voice=voice.voice, rate=voice.rate, pitch=voice.pitch)

    lead = np.zeros(int(LEAD_S * SAMPLE_RATE), np.int16)
    tail = np.zeros(int(TAIL_S * SAMPLE_RATE), np.int16)
    out = []
    for text in sentences:
        samples, rate = speak(text)
        pcm = soxr.resample(samples, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else samples
        out.append(np.concatenate([lead, np.asarray(pcm, np.int16), tail]))
    return out


def speak(voice: Voice, sentences: tuple[str, ...] = SENTENCES) -> list[np.ndarray]:
    """The sentences spoken by ``voice``, the same samples on every run (a fresh process
    per voice). Raises the voice's error (e.g. Piper not installed)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_speak_all, voice, sentences).result()


@dataclass
class Score:
    """One engine on one voice."""

    errors: int = 0
    words: int = 0
    audio_s: float = 0.0
    compute_s: float = 0.0

    @property
    def wer(self) -> float:
        """Word error rate."""
        return self.errors / self.words if self.words else 0.0

    @property
    def rtf(self) -> float:
        """Real-time factor: seconds of computing per second of audio."""
        return self.compute_s / self.audio_s if self.audio_s else 0.0

    def add(self, other: Score) -> None:
        """Pool ``other`` into this score."""
        self.errors += other.errors
        self.words += other.words
        self.audio_s += other.audio_s
        self.compute_s += other.compute_s

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly figures."""
        return {
            "wer": round(self.wer, 4),
            "rtf": round(self.rtf, 4),
            "errors": self.errors,
            "words": self.words,
            "audio_s": round(self.audio_s, 2),
            "compute_s": round(self.compute_s, 3),
        }


def score(
    transcribe: Callable[[np.ndarray], str],
    speech: list[np.ndarray],
    sentences: tuple[str, ...] = SENTENCES,
) -> tuple[Score, list[str]]:
    """Transcribe each utterance; the pooled score and the transcripts."""
    result, heard = Score(), []
    for text, pcm in zip(sentences, speech, strict=True):
        start = time.perf_counter()
        words = transcribe(pcm)
        result.compute_s += time.perf_counter() - start
        result.audio_s += len(pcm) / SAMPLE_RATE
        errors, count = word_errors(text, words)
        result.errors += errors
        result.words += count
        heard.append(words)
    return result, heard


def run_bench(
    engines: dict[str, Callable[[np.ndarray], str]],
    voices: tuple[Voice, ...] = VOICES,
    sentences: tuple[str, ...] = SENTENCES,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every engine on every voice that can speak here; a JSON-friendly report."""
    spoken: dict[str, list[np.ndarray]] = {}
    skipped: dict[str, str] = {}
    for voice in voices:
        try:
            spoken[voice.name] = speak(voice, sentences)
        except Exception as e:  # e.g. Piper not installed: bench the other voices
            skipped[voice.name] = f"{type(e).__name__}: {e}"
            log(f"voice {voice.name} skipped: {skipped[voice.name]}")
    report: dict[str, Any] = {
        "sentences": list(sentences),
        "voices": list(spoken),
        "skipped_voices": skipped,
        "engines": {},
    }
    for name, transcribe in engines.items():
        total, per_voice = Score(), {}
        for voice_name, speech in spoken.items():
            result, heard = score(transcribe, speech, sentences)
            total.add(result)
            per_voice[voice_name] = {**result.as_dict(), "heard": heard}
            log(f"{name:<12} {voice_name:<16} WER {result.wer:6.1%}  RTF {result.rtf:.3f}")
        report["engines"][name] = {"all": total.as_dict(), "voices": per_voice}
    return report


def format_table(report: dict[str, Any]) -> str:
    """WER (and RTF) per engine: one column per voice, then all voices pooled."""
    voices = report["voices"]
    header = ["engine", *voices, "all voices", "RTF"]
    rows = [header]
    for name, figures in report["engines"].items():
        cells = [name]
        cells += [f"{figures['voices'][v]['wer']:.1%}" for v in voices]
        cells += [f"{figures['all']['wer']:.1%}", f"{figures['all']['rtf']:.3f}"]
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    words = sum(len(s.split()) for s in report["sentences"])
    lines.append(
        f"word error rate on {len(report['sentences'])} sentences ({words} words) per voice; "
        "RTF: seconds of computing per second of audio"
    )
    return "\n".join(lines)
