"""Frames Visage adds to pipecat's set."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import TTSAudioRawFrame

from renderer.phonemes import PhonemeMark


@dataclass
class PhonemeAudioRawFrame(TTSAudioRawFrame):
    """TTS audio that carries the phonemes spoken in it.

    Everything downstream treats it as ordinary TTS audio; the avatar stage also reads
    ``phonemes`` (offsets relative to the start of this frame's audio) to shape the mouth.
    """

    phonemes: list[PhonemeMark] = field(default_factory=list)
