"""The voice plan: which espeak-ng voices, rates and pitches each split speaks with.

A voice is ``language+variant``. Test voices never occur in train or validation: the
test split has its own variants (timbres) and two accents of its own, so the model is
judged on voices it never heard.
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


def pick_voice(rng: np.random.Generator, split: Split) -> VoiceSetting:
    """A random voice of the split with a rate and pitch drawn from the plan's ranges."""
    voices = split_voices(split)
    voice = voices[int(rng.integers(len(voices)))]
    # Triangular: most speech near a normal pace, the extremes still covered.
    rate = round(float(rng.triangular(RATE_RANGE[0], 175, RATE_RANGE[1])))
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    return VoiceSetting(voice, rate, pitch)
