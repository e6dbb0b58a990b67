"""Phoneme timing marks that travel with synthesised audio."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PhonemeMark:
    """One phoneme starting ``offset_s`` seconds after the start of the audio it rides with.

    ``ipa`` is the phoneme in IPA as espeak-ng writes it (e.g. ``"h"``, ``"əʊ"``, ``"m"``).
    A mark holds until the next mark; a pause is a mark with ``ipa == ""``.
    """

    ipa: str
    offset_s: float
