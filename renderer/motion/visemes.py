"""IPA phoneme -> viseme: target values of the mouth blendshapes for one phoneme.

Targets are for a phoneme spoken at normal loudness; the motion source scales the jaw
by the audio envelope and smooths between targets. Symbols follow espeak-ng's IPA
output (stress and length marks are ignored; diphthongs blend their two parts).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from renderer.motion.space import IDX

#: Mouth channels a viseme sets, in this order.
VISEME_CHANNELS: tuple[str, ...] = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthStretchLeft",
    "mouthStretchRight",
)
VISEME_IDX = np.array([IDX[n] for n in VISEME_CHANNELS], dtype=np.int64)

# (jaw, close, funnel, pucker, stretch); stretch goes to both corners.
_V = tuple[float, float, float, float, float]
_VOWELS: dict[str, _V] = {
    # Close vowels: little jaw; front ones spread the lips, back ones round them.
    "i": (0.18, 0, 0, 0, 0.55),
    "ɪ": (0.24, 0, 0, 0, 0.40),
    "ᵻ": (0.25, 0, 0, 0, 0.25),
    "ɨ": (0.20, 0, 0, 0, 0.30),
    "ɯ": (0.20, 0, 0, 0, 0.30),
    "y": (0.18, 0, 0.35, 0.75, 0),
    "ʏ": (0.24, 0, 0.30, 0.60, 0),
    "ʉ": (0.20, 0, 0.30, 0.60, 0),
    "u": (0.18, 0, 0.45, 0.80, 0),
    "ʊ": (0.26, 0, 0.40, 0.50, 0),
    # Mid vowels.
    "e": (0.34, 0, 0, 0, 0.45),
    "ɛ": (0.46, 0, 0, 0, 0.35),
    "ə": (0.34, 0, 0, 0, 0.05),
    "ɘ": (0.33, 0, 0, 0, 0.10),
    "ɜ": (0.40, 0, 0.10, 0, 0.10),
    "ɚ": (0.30, 0, 0.35, 0.20, 0),
    "ɝ": (0.30, 0, 0.35, 0.20, 0),
    "ɤ": (0.35, 0, 0, 0, 0.15),
    "ø": (0.32, 0, 0.45, 0.55, 0),
    "ɵ": (0.35, 0, 0.35, 0.35, 0),
    "o": (0.40, 0, 0.60, 0.35, 0),
    "œ": (0.45, 0, 0.45, 0.35, 0),
    "ɔ": (0.55, 0, 0.55, 0.20, 0),
    "ʌ": (0.55, 0, 0, 0, 0.10),
    "ɐ": (0.50, 0, 0, 0, 0.10),
    # Open vowels: the jaw drops.
    "æ": (0.65, 0, 0, 0, 0.35),
    "a": (0.75, 0, 0, 0, 0.20),
    "ɑ": (0.80, 0, 0.05, 0, 0.05),
    "ɒ": (0.70, 0, 0.30, 0.10, 0),
}
_CONSONANTS: dict[str, _V] = {
    # Bilabials press the lips together.
    "p": (0.04, 1.0, 0, 0, 0),
    "b": (0.04, 1.0, 0, 0, 0),
    "m": (0.04, 1.0, 0, 0, 0),
    "ɸ": (0.06, 0.7, 0, 0.1, 0),
    "β": (0.06, 0.7, 0, 0.1, 0),
    # Labiodentals: lower lip against the upper teeth.
    "f": (0.08, 0.65, 0, 0, 0.15),
    "v": (0.08, 0.65, 0, 0, 0.15),
    # Dentals and alveolars: tongue work, a small jaw opening.
    "θ": (0.16, 0, 0, 0, 0.15),
    "ð": (0.16, 0, 0, 0, 0.15),
    "t": (0.16, 0, 0, 0, 0.15),
    "d": (0.16, 0, 0, 0, 0.15),
    "n": (0.15, 0, 0, 0, 0.10),
    "l": (0.22, 0, 0, 0, 0.10),
    "ɫ": (0.22, 0, 0, 0, 0.05),
    "ɾ": (0.18, 0, 0, 0, 0.10),
    "ɬ": (0.16, 0, 0, 0, 0.20),
    "s": (0.07, 0, 0, 0, 0.40),
    "z": (0.07, 0, 0, 0, 0.40),
    # Postalveolars round and push the lips out.
    "ʃ": (0.10, 0, 0.75, 0.35, 0),
    "ʒ": (0.10, 0, 0.75, 0.35, 0),
    "tʃ": (0.10, 0, 0.70, 0.30, 0),
    "dʒ": (0.10, 0, 0.70, 0.30, 0),
    "ts": (0.10, 0, 0, 0, 0.35),
    "dz": (0.10, 0, 0, 0, 0.35),
    # Rhotics (English r is lip-rounded).
    "ɹ": (0.15, 0, 0.35, 0.30, 0),
    "r": (0.18, 0, 0.20, 0.15, 0),
    "ʁ": (0.20, 0, 0.10, 0.05, 0),
    "ʀ": (0.20, 0, 0.10, 0.05, 0),
    # Palatals, velars, glottals: the jaw sits mid, lips neutral.
    "j": (0.16, 0, 0, 0, 0.40),
    "ç": (0.14, 0, 0, 0, 0.35),
    "ʝ": (0.14, 0, 0, 0, 0.35),
    "ɲ": (0.18, 0, 0, 0, 0.20),
    "ʎ": (0.18, 0, 0, 0, 0.20),
    "k": (0.22, 0, 0, 0, 0.05),
    "g": (0.22, 0, 0, 0, 0.05),
    "ɡ": (0.22, 0, 0, 0, 0.05),
    "ŋ": (0.20, 0, 0, 0, 0.05),
    "x": (0.22, 0, 0, 0, 0.05),
    "ɣ": (0.22, 0, 0, 0, 0.05),
    "χ": (0.22, 0, 0, 0, 0.05),
    "q": (0.22, 0, 0, 0, 0.05),
    "h": (0.30, 0, 0, 0, 0.05),
    "ɦ": (0.30, 0, 0, 0, 0.05),
    "ʔ": (0.08, 0, 0, 0, 0),
    # Rounded approximants.
    "w": (0.10, 0, 0.45, 0.90, 0),
    "ʍ": (0.10, 0, 0.45, 0.90, 0),
    "ɥ": (0.12, 0, 0.40, 0.85, 0),
}
_TABLE: dict[str, _V] = {**_VOWELS, **_CONSONANTS}
_NEUTRAL_SPEECH: _V = (0.30, 0, 0, 0, 0.05)  # unknown symbols: a generic open syllable
# Stress, length, syllabicity, aspiration and tie marks carry no mouth shape.
_IGNORED = set("ˈˌːˑ\u0329\u032f\u0361\u035c‿ʰʲʷ\u0303-_'|.!?,;: ")


def _vector(v: _V) -> np.ndarray:
    """(jaw, close, funnel, pucker, stretch) -> values for VISEME_CHANNELS."""
    jaw, close, funnel, pucker, stretch = v
    return np.array([jaw, close, funnel, pucker, stretch, stretch], dtype=np.float32)


def is_vowel(ipa: str) -> bool:
    """True when the phoneme's first recognised symbol is a vowel."""
    units = _units(ipa)
    return bool(units) and units[0] in _VOWELS


def _units(ipa: str) -> tuple[str, ...]:
    """Split an IPA string into table symbols, longest match first, dropping diacritics."""
    s = "".join(ch for ch in ipa if ch not in _IGNORED)
    out: list[str] = []
    i = 0
    while i < len(s):
        if s[i : i + 2] in _TABLE:
            out.append(s[i : i + 2])
            i += 2
        elif s[i] in _TABLE:
            out.append(s[i])
            i += 1
        else:
            i += 1  # an unknown diacritic or symbol
    return tuple(out)


@lru_cache(maxsize=512)
def _viseme_cached(ipa: str) -> np.ndarray:
    if ipa == "":
        return np.zeros(len(VISEME_CHANNELS), dtype=np.float32)  # pause: mouth at rest
    units = _units(ipa)
    if not units:
        return _vector(_NEUTRAL_SPEECH)
    if len(units) == 1:
        return _vector(_TABLE[units[0]])
    # Diphthongs and clusters: mostly the first target, glide towards the rest.
    first = _vector(_TABLE[units[0]]) * 0.65
    rest = sum(_vector(_TABLE[u]) for u in units[1:]) * (0.35 / (len(units) - 1))
    return (first + rest).astype(np.float32)


def viseme(ipa: str) -> np.ndarray:
    """Mouth targets (len(VISEME_CHANNELS),) float32 for one espeak-ng IPA phoneme."""
    return _viseme_cached(ipa).copy()
