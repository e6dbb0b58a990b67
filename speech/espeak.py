"""Streaming text to speech through libespeak-ng (ctypes), with phoneme and word timings."""

from __future__ import annotations

import bisect
import ctypes
import difflib
import re
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from speech.phonemes import PhonemeMark
from speech.stream import SpeechChunk, SpeechStream, Synthesis

try:
    import espeakng_loader
except ImportError as e:  # pragma: no cover - it is a core dependency
    raise ImportError("Visage speaks through espeak-ng: pip install espeakng-loader") from e

__all__ = [
    "SAMPLE_RATE",
    "EspeakEngine",
    "SpeechChunk",
    "SpeechStream",
    "UnknownVoiceError",
    "synthesize",
    "write_wav",
]

SAMPLE_RATE = 22050  # what libespeak-ng synthesises at; checked when it loads
CHUNK_MS = 50
# espeak's own buffer; smaller than a chunk so abort and first audio come sooner.
_ESPEAK_BUFFER_MS = 20

# speak_lib.h constants (libespeak-ng 1.52).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 0x0001
_ENDPAUSE = 0x1000
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_PHONEME = 7
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0


class _EventId(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8))


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character index
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # ms
        ("sample", ctypes.c_int),  # sample index from the start of this synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _Voice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # (priority byte, name, NUL)*, then a 0 byte
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

# An event as (sample index, IPA or 0-based character position, is_word).
_Mark = tuple[int, str, bool]
# Takes one espeak buffer and its events; returns False to abort the synthesis.
_Sink = Callable[[bytes, list[_Mark]], bool]


class UnknownVoiceError(ValueError):
    """The requested espeak-ng voice does not exist."""


class _Library:
    """The process-wide libespeak-ng; every call goes through ``_SYNTH_LOCK``."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetVoiceByProperties.argtypes = (ctypes.POINTER(_Voice),)
        lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = (
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        data = espeakng_loader.get_data_path()
        options = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _ESPEAK_BUFFER_MS, data.encode(), options
        )
        if rate != SAMPLE_RATE:
            raise RuntimeError(
                f"libespeak-ng failed to initialise with data at {data} (got {rate}); "
                "reinstall it with: pip install --force-reinstall espeakng-loader"
            )
        self.lib = lib
        self.sample_rate: int = rate
        self.known_voices: dict[str, bytes] = {}  # voice -> name for espeak_SetVoiceByName
        self._sink: _Sink | None = None
        self.languages = self._list_languages()
        # Kept on self: ctypes must hold the callback for as long as the library may call it.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def _list_languages(self) -> list[str]:
        """Language names espeak-ng accepts as voices (e.g. ``en-us``), sorted."""
        names: set[str] = set()
        voices = self.lib.espeak_ListVoices(None)
        i = 0
        while voices[i]:
            base, offset = voices[i].contents.languages, 0
            while ctypes.string_at(base + offset, 1)[0]:
                name = ctypes.string_at(base + offset + 1)
                names.add(name.decode())
                offset += len(name) + 2
            i += 1
        return sorted(names)

    def set_voice(self, voice: str) -> bool:
        """Select a voice (``name`` or ``name+variant``); False if espeak does not know it."""
        name = self.known_voices.get(voice) or self._resolve(voice)
        if name is None or self.lib.espeak_SetVoiceByName(name) != _EE_OK:
            return False
        self.known_voices[voice] = name
        return True

    def _resolve(self, voice: str) -> bytes | None:
        """The voice file name for ``voice``, which may be a language such as ``en-gb``."""
        if not voice or self.lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
            return voice.encode() or None
        # Like the espeak-ng CLI, try it as a language, but only an exact one: a typo must
        # not quietly fall back to some other English.
        language, _, variant = voice.partition("+")
        if language.lower() not in self.languages:
            return None
        spec = _Voice()
        wanted = ctypes.create_string_buffer(language.lower().encode())
        spec.languages = ctypes.addressof(wanted)
        if self.lib.espeak_SetVoiceByProperties(ctypes.byref(spec)) != _EE_OK:
            return None
        name = self.lib.espeak_GetCurrentVoice().contents.identifier
        return name + b"+" + variant.encode() if variant else name

    def synth(self, text: str, rate: int, pitch: int, sink: _Sink) -> None:
        """Synthesise ``text`` with the selected voice, handing audio and events to ``sink``."""
        self.lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
        data = text.encode()
        self._sink = sink
        try:
            flags = _CHARS_UTF8 | _ENDPAUSE
            self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
        finally:
            self._sink = None

    def _on_synth(self, wav: Any, count: int, events: Any) -> int:
        """Called by espeak for each buffer; returning 1 aborts the synthesis at once."""
        marks: list[_Mark] = []
        i = 0
        while (event := events[i]).type != _EVENT_LIST_TERMINATED:
            if event.type == _EVENT_PHONEME:
                # An 8-byte field: a long IPA name may be cut mid-character.
                ipa = event.id.string.decode("utf-8", errors="ignore")
                marks.append((event.sample, ipa, False))
            elif event.type == _EVENT_WORD:
                marks.append((event.sample, str(event.text_position - 1), True))
            i += 1
        audio = ctypes.string_at(wav, count * 2) if count > 0 and wav else b""
        sink = self._sink
        try:
            return 0 if sink is not None and sink(audio, marks) else 1
        except BaseException:
            # An exception cannot cross the C boundary; the sink records it, we just stop.
            return 1


_LIB_LOCK = threading.Lock()
# libespeak-ng keeps its state in globals: one synthesis at a time per process.
_SYNTH_LOCK = threading.Lock()
_library: _Library | None = None


def _lib() -> _Library:
    """Load and initialise libespeak-ng once per process."""
    global _library
    with _LIB_LOCK:
        if _library is None:
            _library = _Library()
        return _library


class _Words:
    """Maps espeak's word events (character positions) back to the words of the text.

    espeak reports some words only as part of a neighbour ("I am" is one event, "42" is
    two), so each event yields every word not yet reported up to the one it points at.
    """

    def __init__(self, text: str) -> None:
        self._spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        self._starts = [start for start, _ in self._spans]
        self._text = text
        self._next = 0  # index of the first word not reported yet

    def upto(self, position: int) -> list[str]:
        """Words not yet reported, through the one holding ``position``."""
        i = bisect.bisect_right(self._starts, position) - 1
        if i < self._next or position >= self._spans[i][1]:
            return []
        words = [self._text[a:b] for a, b in self._spans[self._next : i + 1]]
        self._next = i + 1
        return words

    def rest(self) -> list[str]:
        """Words never reported (espeak spoke them with an earlier word)."""
        return self.upto(self._starts[-1]) if self._starts else []


class _Chunker:
    """Cuts espeak's audio into fixed chunks and files each event in the chunk it starts in."""

    def __init__(self, text: str, chunk_samples: int, sample_rate: int) -> None:
        self._words = _Words(text)
        self._chunk_bytes = chunk_samples * 2
        self._rate = sample_rate
        self._buffer = bytearray()
        self._start = 0  # sample index of the buffer's first sample
        self._marks: list[_Mark] = []
        self._last_sample = 0

    def feed(self, audio: bytes, marks: list[_Mark]) -> list[SpeechChunk]:
        """Take one espeak buffer; return the chunks it completes."""
        for sample, payload, is_word in marks:
            self._last_sample = max(self._last_sample, sample)
            if is_word:
                self._marks += [(sample, word, True) for word in self._words.upto(int(payload))]
            else:
                self._marks.append((sample, payload, False))
        self._buffer += audio
        chunks = []
        while len(self._buffer) >= self._chunk_bytes:
            chunks.append(self._cut(self._chunk_bytes, last=False))
        return chunks

    def flush(self) -> SpeechChunk | None:
        """The final, shorter chunk, if any audio is left."""
        self._marks += [(self._last_sample, word, True) for word in self._words.rest()]
        return self._cut(len(self._buffer), last=True) if self._buffer else None

    def _cut(self, size: int, last: bool) -> SpeechChunk:
        samples = size // 2
        end = self._start + samples
        # Marks exactly at a chunk's end belong to the next chunk, except after the last one.
        mine = sorted(
            (m for m in self._marks if last or m[0] < end), key=lambda m: m[0]
        )  # stable: keeps espeak's order for equal samples
        self._marks = [m for m in self._marks if not (last or m[0] < end)]
        chunk = SpeechChunk(bytes(self._buffer[:size]), sample_rate=self._rate)
        for sample, text, is_word in mine:
            offset = min(max(sample - self._start, 0), samples) / self._rate
            if is_word:
                chunk.words.append((text, offset))
            else:
                chunk.phonemes.append(PhonemeMark(text, offset))
        del self._buffer[:size]
        self._start = end
        return chunk


class _Synthesis(Synthesis):
    """libespeak-ng synthesising one utterance on its thread."""

    def __init__(
        self,
        text: str,
        voice: str,
        rate: int,
        pitch: int,
        chunk_samples: int,
        should_abort: Callable[[], bool] | None,
        max_buffered: int | None,
        on_ready: Callable[[], object] | None,
    ) -> None:
        super().__init__(
            thread_name="espeak-synth",
            should_abort=should_abort,
            max_buffered=max_buffered,
            on_ready=on_ready,
        )
        self.args = (text, voice, rate, pitch, chunk_samples)

    def produce(self) -> None:
        text, voice, rate, pitch, chunk_samples = self.args
        lib = _lib()
        chunker = _Chunker(text, chunk_samples, lib.sample_rate)

        def sink(audio: bytes, marks: list[_Mark]) -> bool:
            # Runs inside espeak's callback: False makes it return 1, which aborts at once.
            try:
                if self.stop_requested():
                    return False
                return all(self.put(chunk) for chunk in chunker.feed(audio, marks))
            except BaseException as e:
                self.error = e
                return False

        while not _SYNTH_LOCK.acquire(timeout=0.05):
            if self.stop_requested():
                return
        try:
            if self.stop_requested():
                return
            if not lib.set_voice(voice):
                raise _unknown_voice(voice, lib.languages)
            lib.synth(text, rate, pitch, sink)
        finally:
            _SYNTH_LOCK.release()
        last = chunker.flush()
        if last is not None and self.error is None and not self.aborted:
            self.put(last)


class EspeakEngine:
    """libespeak-ng text to speech: 22,050 Hz int16 mono, phoneme marks in IPA, word marks.

    Engines are cheap: all share the one library per process, and a lock serialises their
    syntheses (libespeak-ng is not re-entrant).
    """

    def __init__(self, chunk_ms: int = CHUNK_MS) -> None:
        self._lib = _lib()
        self.chunk_samples = max(1, round(self._lib.sample_rate * chunk_ms / 1000))

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (22,050 for espeak-ng)."""
        return self._lib.sample_rate

    def voices(self) -> list[str]:
        """Voice names espeak-ng accepts; add ``+f1``..``+f5`` or ``+m1``..``+m7`` for variants."""
        return list(self._lib.languages)

    def check_voice(self, voice: str) -> None:
        """Raise UnknownVoiceError if espeak-ng has no such voice."""
        if voice in self._lib.known_voices:
            return
        with _SYNTH_LOCK:
            ok = self._lib.set_voice(voice)
        if not ok:
            raise _unknown_voice(voice, self._lib.languages)

    def check_params(self, voice: str, rate: int, pitch: int) -> None:
        """Raise ValueError (UnknownVoiceError for the voice) if espeak-ng can't use these."""
        _check_range("rate", rate, 80, 450)
        _check_range("pitch", pitch, 0, 99)
        self.check_voice(voice)

    def stream(
        self,
        text: str,
        voice: str = "en-us",
        rate: int = 170,
        pitch: int = 50,
        should_abort: Callable[[], bool] | None = None,
        *,
        max_buffered: int | None = None,
        on_ready: Callable[[], object] | None = None,
    ) -> SpeechStream:
        """Start synthesising ``text``; iterate the result for ~50 ms chunks as they come.

        ``should_abort`` is polled for every espeak buffer; once it returns True synthesis
        stops. ``max_buffered`` bounds the chunks synthesised ahead of the reader (None:
        unbounded, so the espeak lock is never held while waiting for a slow reader).
        ``on_ready`` is called from the synthesis thread when a chunk is ready or the
        stream ends, e.g. to wake an asyncio reader.
        """
        self.check_params(voice, rate, pitch)
        synthesis = _Synthesis(
            text, voice, rate, pitch, self.chunk_samples, should_abort, max_buffered, on_ready
        )
        return SpeechStream(synthesis)

    def synthesize(
        self, text: str, voice: str = "en-us", rate: int = 170, pitch: int = 50
    ) -> tuple[np.ndarray, int]:
        """The whole utterance as an int16 array, and the sample rate."""
        with self.stream(text, voice=voice, rate=rate, pitch=pitch) as speech:
            audio = b"".join(chunk.audio for chunk in speech)
        return np.frombuffer(audio, dtype=np.int16).copy(), self.sample_rate


def _unknown_voice(voice: str, names: list[str]) -> UnknownVoiceError:
    """The error for an unknown voice, naming a few that exist."""
    close = difflib.get_close_matches(voice.split("+", 1)[0].lower(), names, n=3, cutoff=0.7)
    examples = list(dict.fromkeys([*close, "en-us", "en-gb", "en-us+f3", "de", "fr"]))[:6]
    return UnknownVoiceError(
        f"Unknown espeak-ng voice {voice!r}. Try one of: {', '.join(examples)} "
        f"({len(names)} voices in all; list them with EspeakEngine().voices())."
    )


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"espeak-ng {name} must be between {low} and {high}, got {value}")


def synthesize(
    text: str, voice: str = "en-us", rate: int = 170, pitch: int = 50
) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng: int16 mono samples and the sample rate (22,050)."""
    return EspeakEngine().synthesize(text, voice=voice, rate=rate, pitch=pitch)


def write_wav(path: str | Path, text: str, **kw: int | str) -> Path:
    """Speak ``text`` into a 16-bit mono WAV file; keywords as for ``synthesize``."""
    audio, rate = synthesize(text, **kw)  # type: ignore[arg-type]
    path = Path(path)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(audio.tobytes())
    return path
