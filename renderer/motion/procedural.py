"""ProceduralMotion: the v0 motion source (phoneme visemes + audio envelope + idle life).

One call to :meth:`ProceduralMotion.step` per video frame turns that frame's audio
and phoneme marks into a motion vector:

* mouth: the visemes of the phonemes active during the frame (duration weighted),
  jaw scaled by loudness and gated by silence, then smoothed with a fast attack and
  a slightly slower release so syllables stay crisp without jitter. Without
  phonemes the envelope alone drives the jaw, shaped a little by the zero-crossing
  rate (hiss -> spread lips, voiced -> open jaw).
* idle: seeded blinks, breathing and slow head sway, small brow motion; head and
  brows move more while speaking and nod on loud syllables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from renderer.motion.idle import Blinker, SmoothNoise
from renderer.motion.space import IDX, MOTION_DIM, MOTION_FPS
from renderer.motion.visemes import VISEME_CHANNELS, VISEME_IDX, viseme
from speech.phonemes import PhonemeMark

SILENCE_DB, LOUD_DB = -48.0, -15.0  # envelope level 0 and 1 (dBFS of the frame RMS)
# Time constants (s): attack when a channel rises, release when it falls.
ATTACK_S = np.array([0.030, 0.012, 0.040, 0.040, 0.045, 0.045], dtype=np.float32)
RELEASE_S = np.array([0.055, 0.045, 0.070, 0.070, 0.080, 0.080], dtype=np.float32)
_JAW = VISEME_CHANNELS.index("jawOpen")
_CLOSE = VISEME_CHANNELS.index("mouthClose")
_SHAPES = [i for i in range(len(VISEME_CHANNELS)) if i not in (_JAW, _CLOSE)]


def envelope_level(audio: np.ndarray) -> float:
    """Loudness of a frame in [0, 1]: its RMS in dBFS mapped from SILENCE_DB..LOUD_DB."""
    if audio.size == 0:
        return 0.0
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    db = 20.0 * math.log10(rms + 1e-9)
    return min(max((db - SILENCE_DB) / (LOUD_DB - SILENCE_DB), 0.0), 1.0)


def zero_crossing_rate(audio: np.ndarray) -> float:
    """Fraction of sample pairs that change sign; high for hiss (s, f), low for vowels."""
    if audio.size < 2:
        return 0.0
    signs = np.signbit(audio)
    return float(np.count_nonzero(signs[1:] != signs[:-1])) / (audio.size - 1)


def _smoothstep(e0: float, e1: float, x: float) -> float:
    t = min(max((x - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


class ProceduralMotion:
    """Deterministic (per seed) motion source for one avatar; call ``step`` once per frame.

    A ``MotionSource`` that reads each frame's audio and phoneme marks as it plays, so it
    has nothing to do with the audio as it is pushed.
    """

    reads_frames = True

    def __init__(self, fps: int = MOTION_FPS, seed: int = 0) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.fps = fps
        self.frame_s = 1.0 / fps
        rng = np.random.default_rng(seed)
        self._blinker = Blinker(rng)
        self._yaw = SmoothNoise(rng, 0.05, 0.35)
        self._pitch = SmoothNoise(rng, 0.07, 0.40)
        self._roll = SmoothNoise(rng, 0.04, 0.25)
        self._brow = SmoothNoise(rng, 0.10, 0.50)
        self._smile = SmoothNoise(rng, 0.02, 0.08)
        self._breath_hz = float(rng.uniform(0.22, 0.28))
        self._attack = (1.0 - np.exp(-self.frame_s / ATTACK_S)).astype(np.float32)
        self._release = (1.0 - np.exp(-self.frame_s / RELEASE_S)).astype(np.float32)
        self._frame = 0
        self._mouth = np.zeros(len(VISEME_CHANNELS), dtype=np.float32)  # smoothed visemes
        self._phoneme: str | None = None  # mark carried over from earlier frames
        self._talk = 0.0  # smoothed "speaking" in [0, 1]
        self._level_slow = 0.0  # slow loudness average, the baseline for emphasis
        self._emphasis = 0.0

    def push_audio(self, samples: np.ndarray, sample_rate: int) -> None:
        """Nothing to look ahead at: the motion follows each frame's audio as it plays."""

    def end_audio(self, n_frames: int) -> None:
        """Nothing to close: silence after the utterance reads as silence."""

    def clear(self) -> None:
        """Interruption: the next utterance starts without a carried phoneme."""
        self._phoneme = None

    def ready(self) -> bool:
        """Always: each frame's motion is made from that frame alone."""
        return True

    def next_motion(
        self,
        audio: np.ndarray,
        sample_rate: int,
        phonemes: Sequence[PhonemeMark],
        speaking: bool,
    ) -> np.ndarray:
        """The ``MotionSource`` call: :meth:`step`."""
        return self.step(audio, sample_rate, phonemes, speaking)

    def step(
        self,
        audio: np.ndarray,
        sample_rate: int,
        phonemes: Sequence[PhonemeMark],
        speaking: bool,
    ) -> np.ndarray:
        """Motion (MOTION_DIM,) float32 for one frame of audio (float32 mono in [-1, 1])."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        t = self._frame * self.frame_s
        self._frame += 1
        if not speaking:
            self._phoneme = None  # the next utterance starts without a carried mark
        level = envelope_level(audio) if speaking else 0.0

        target = self._mouth_target(audio, sample_rate, phonemes, level) if speaking else None
        if target is None:
            target = np.zeros(len(VISEME_CHANNELS), dtype=np.float32)
        rate = np.where(target > self._mouth, self._attack, self._release)
        self._mouth += rate * (target - self._mouth)

        self._talk += (float(speaking) - self._talk) * (1.0 - math.exp(-self.frame_s / 0.5))
        self._level_slow += (level - self._level_slow) * (1.0 - math.exp(-self.frame_s / 0.8))
        peak = max(0.0, level - self._level_slow - 0.08) * 2.0
        self._emphasis += (min(peak, 1.0) - self._emphasis) * (1.0 - math.exp(-self.frame_s / 0.15))

        out = np.zeros(MOTION_DIM, dtype=np.float32)
        out[VISEME_IDX] = self._mouth
        self._idle(out, t, speaking)
        return out

    def _mouth_target(
        self, audio: np.ndarray, sample_rate: int, phonemes: Sequence[PhonemeMark], level: float
    ) -> np.ndarray:
        """Viseme target for this frame: phoneme visemes if known, else envelope shapes."""
        gate = _smoothstep(0.04, 0.22, level)  # silence closes the mouth
        frame_s = audio.size / sample_rate if audio.size and sample_rate > 0 else self.frame_s
        marked = self._phoneme_target(phonemes, frame_s)
        if marked is None:
            return self._envelope_target(audio, level, gate)
        target, covered = marked
        # Loud syllables open wider, quiet ones less, silence not at all; lip closures
        # (mouthClose) are kept regardless so p/b/m read even when they are silent.
        target[_JAW] *= (0.55 + 0.65 * level) * gate
        target[_SHAPES] *= gate
        if covered < 1.0:
            target += self._envelope_target(audio, level, gate) * (1.0 - covered)
        return np.clip(target, 0.0, 1.0)

    def _phoneme_target(
        self, phonemes: Sequence[PhonemeMark], frame_s: float
    ) -> tuple[np.ndarray, float] | None:
        """Duration-weighted viseme over the frame and the fraction covered by marks."""
        marks = sorted(phonemes, key=lambda mk: mk.offset_s)
        if self._phoneme is None and not marks:
            return None
        total = np.zeros(len(VISEME_CHANNELS), dtype=np.float32)
        covered = 0.0
        start = 0.0
        current = self._phoneme
        for mark in marks:
            at = min(max(mark.offset_s, 0.0), frame_s)
            if current is not None and at > start:
                total += viseme(current) * ((at - start) / frame_s)
                covered += (at - start) / frame_s
            start, current = at, mark.ipa
        if current is not None and frame_s > start:
            total += viseme(current) * ((frame_s - start) / frame_s)
            covered += (frame_s - start) / frame_s
        self._phoneme = current
        if covered <= 0.0:
            return None
        return total, min(covered, 1.0)

    def _envelope_target(self, audio: np.ndarray, level: float, gate: float) -> np.ndarray:
        """Mouth shape from loudness alone (for TTS engines without phoneme timing)."""
        target = np.zeros(len(VISEME_CHANNELS), dtype=np.float32)
        zcr = zero_crossing_rate(audio)
        hiss = _smoothstep(0.18, 0.35, zcr)  # fricatives: teeth close, lips spread
        target[_JAW] = 0.85 * level**0.9 * gate * (1.0 - 0.6 * hiss)
        stretch = (0.1 + 0.3 * hiss) * gate
        target[VISEME_CHANNELS.index("mouthStretchLeft")] = stretch
        target[VISEME_CHANNELS.index("mouthStretchRight")] = stretch
        target[VISEME_CHANNELS.index("mouthFunnel")] = 0.15 * (1.0 - hiss) * gate
        return target

    def _idle(self, out: np.ndarray, t: float, speaking: bool) -> None:
        """Blinks, breathing, head sway, brows and a resting smile, written into ``out``."""
        blink = self._blinker.step(t, self.frame_s, speaking)
        out[IDX["eyeBlinkLeft"]] = blink
        out[IDX["eyeBlinkRight"]] = blink

        talk, emph = self._talk, self._emphasis
        breath = math.sin(2.0 * math.pi * self._breath_hz * t)
        out[IDX["headYaw"]] = (0.035 + 0.045 * talk) * self._yaw(t)
        out[IDX["headPitch"]] = (
            (0.025 + 0.025 * talk) * self._pitch(t) + 0.008 * breath + 0.06 * emph
        )
        out[IDX["headRoll"]] = (0.02 + 0.015 * talk) * self._roll(t)

        brow = self._brow(t)
        out[IDX["browInnerUp"]] = min(1.0, max(0.0, 0.06 + 0.06 * brow + 0.1 * talk + 0.45 * emph))
        frown = max(0.0, -brow) * (0.06 + 0.04 * talk)
        out[IDX["browDownLeft"]] = frown
        out[IDX["browDownRight"]] = frown * 0.8

        # A friendly resting smile that drifts slowly; speech adds its own corners.
        smile = 0.16 + 0.06 * self._smile(t) - 0.06 * talk
        out[IDX["mouthSmileLeft"]] = smile
        out[IDX["mouthSmileRight"]] = smile * 0.9
