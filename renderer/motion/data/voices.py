"""The voice plan: which espeak-ng voices, rates and pitches each split speaks with.

A voice is ``language+variant``. Test voices never occur in train or validation: the
test split has its own variants (timbres) and two accents of its own, so the model is
judged on voices it never heard.

A share of the utterances (``piper_share``, none by default) can be spoken by the
embedded Piper voice instead (``PIPER_VOICE``; its speed follows the drawn rate, it has
no pitch setting). There is one Piper voice, so a Piper test set holds out the
sentences, not the voice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["train", "val", "test"]

TRAIN_LANGUAGES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan")
TEST_ONLY_LANGUAGES = ("en-us-nyc", "en-gb-x-gbcwmd")
# Variants bundled with espeakng-loader's data (voices/!v); "" is the language's default.
TRAIN_VARIANTS = (
    "", "m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f3", "f5",
    "klatt", "klatt2", "klatt4", "Alex", "Andy", "Gene", "Lee", "Mike", "Reed", "adam",
    "anika", "aunty", "benjamin", "boris", "caleb", "david", "ed", "edward", "iven",
    "iven2", "john", "linda", "max", "michel", "norbert", "pablo", "paul", "quincy", "rob",
    "robert", "sandro", "shelby", "steph", "travis", "victor", "zac", "whisper",
)  # fmt: skip
TEST_VARIANTS = (
    "f4", "m4", "m7", "klatt3", "Annie", "Michael", "belinda", "grandpa", "ian", "steph2",
    "Jacky", "marcelo",
)  # fmt: skip
RATE_RANGE = (120, 260)  # words per minute
PITCH_RANGE = (20, 80)  # espeak's 0-99 base pitch
PIPER_VOICE = "piper:en_US-joe-medium"
PIPER_RATE = 175  # words per minute taken as Piper's own speed (1.0)
PIPER_SPEED_RANGE = (0.8, 1.25)  # Piper's speed stays natural in this range


def _voice(language: str, variant: str) -> str:
    return f"{language}+{variant}" if variant else language


def split_voices(split: Split) -> tuple[str, ...]:
    """Every voice a split may use; train and val share them, test's are disjoint."""
    if split in ("train", "val"):
        return tuple(_voice(lang, v) for lang in TRAIN_LANGUAGES for v in TRAIN_VARIANTS)
    if split == "test":
        languages = TRAIN_LANGUAGES + TEST_ONLY_LANGUAGES
        return tuple(_voice(lang, v) for lang in languages for v in TEST_VARIANTS) + tuple(
            _voice(lang, v) for lang in TEST_ONLY_LANGUAGES for v in ("", "m1", "f2")
        )
    raise ValueError(f"split must be train, val or test, got {split!r}")


@dataclass(frozen=True, slots=True)
class VoiceSetting:
    """How one utterance is spoken."""

    voice: str
    rate: int  # words per minute
    pitch: int  # 0-99


def is_piper(voice: str) -> bool:
    """Whether ``voice`` names the Piper voice rather than an espeak-ng one."""
    return voice.startswith("piper:")


def piper_speed(rate: int) -> float:
    """Piper's speed for a drawn rate in words per minute (clamped to a natural range)."""
    return min(max(rate / PIPER_RATE, PIPER_SPEED_RANGE[0]), PIPER_SPEED_RANGE[1])


def pick_voice(rng: np.random.Generator, split: Split, piper_share: float = 0.0) -> VoiceSetting:
    """A random voice of the split with a rate and pitch drawn from the plan's ranges;
    with probability ``piper_share`` the Piper voice (no draw is made when it is 0, so
    espeak-only datasets stay as they were)."""
    if piper_share > 0.0 and rng.random() < piper_share:
        rate = round(float(rng.triangular(RATE_RANGE[0], PIPER_RATE, RATE_RANGE[1])))
        return VoiceSetting(PIPER_VOICE, rate, 0)
    voices = split_voices(split)
    voice = voices[int(rng.integers(len(voices)))]
    # Triangular: most speech near a normal pace, the extremes still covered.
    rate = round(float(rng.triangular(RATE_RANGE[0], 175, RATE_RANGE[1])))
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    return VoiceSetting(voice, rate, pitch)
