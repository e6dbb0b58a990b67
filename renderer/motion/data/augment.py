"""Seeded audio augmentation so the model does not learn one synthesiser's exact spectrum.

Speed change first (it moves every phoneme, so the timeline is scaled with it), then
EQ, additive noise (none for a fifth of utterances, since live TTS pauses are digital
silence) and gain. Everything is drawn from the caller's generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import soxr

from renderer.motion.data.synth import Timeline
from renderer.motion.features import SAMPLE_RATE

SPEED_RANGE = (0.93, 1.07)
GAIN_DB_RANGE = (-6.0, 6.0)
SNR_DB_RANGE = (25.0, 45.0)
EQ_DB_RANGE = (-6.0, 6.0)


@dataclass(frozen=True, slots=True)
class Augmentation:
    """What was done to one utterance's audio, for the record."""

    speed: float
    gain_db: float
    snr_db: float
    noise: str  # "white", "pink" or "none" (clean speech keeps digital silence in pauses)
    eq: tuple[tuple[str, float, float], ...]  # (kind, frequency Hz, gain dB)

    def describe(self) -> str:
        """A short human-readable summary."""
        eq = ",".join(f"{k}@{f:.0f}Hz{g:+.1f}dB" for k, f, g in self.eq)
        noise = "no-noise" if self.noise == "none" else f"{self.noise}@{self.snr_db:.0f}dB"
        return f"speed={self.speed:.3f} gain={self.gain_db:+.1f}dB {noise} eq=[{eq}]"


def change_speed(audio: np.ndarray, speed: float) -> np.ndarray:
    """Play ``speed`` times faster by resampling (pitch moves too); length / speed."""
    if speed == 1.0:
        return audio.astype(np.float32)
    out = soxr.resample(audio.astype(np.float32), SAMPLE_RATE * speed, SAMPLE_RATE, quality="HQ")
    return np.asarray(out, dtype=np.float32)


def _shelf(freqs: np.ndarray, corner: float, gain_db: float, high: bool) -> np.ndarray:
    """Smooth shelf magnitude (dB) over ``freqs``: 0 dB on one side, ``gain_db`` on the other."""
    x = np.log2(np.maximum(freqs, 1.0) / corner) * 2.0  # ~ an octave-wide transition
    s = 1.0 / (1.0 + np.exp(-x if high else x))
    return gain_db * s


def _peak(freqs: np.ndarray, centre: float, gain_db: float, octaves: float) -> np.ndarray:
    """Bell-shaped boost or cut (dB) around ``centre``, ``octaves`` wide."""
    x = np.log2(np.maximum(freqs, 1.0) / centre) / (octaves / 2.0)
    return gain_db * np.exp(-(x**2))


def _fast_len(n: int) -> int:
    """A length >= n that numpy's FFT handles quickly (odd prime lengths are very slow)."""
    return 1 << max(0, (n - 1).bit_length())


def equalise(audio: np.ndarray, eq: tuple[tuple[str, float, float], ...]) -> np.ndarray:
    """Apply shelves and peaks as one zero-phase filter in the frequency domain."""
    if not eq or audio.size == 0:
        return audio.astype(np.float32)
    n, m = audio.size, _fast_len(audio.size)
    spec = np.fft.rfft(audio.astype(np.float64), m)  # zero-padded: little wrap-around
    freqs = np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE)
    db = np.zeros_like(freqs)
    for kind, f, g in eq:
        if kind == "low":
            db += _shelf(freqs, f, g, high=False)
        elif kind == "high":
            db += _shelf(freqs, f, g, high=True)
        else:
            db += _peak(freqs, f, g, 1.0)
    return np.fft.irfft(spec * 10.0 ** (db / 20.0), m)[:n].astype(np.float32)


def noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Unit-RMS white or pink (1/f power) noise."""
    white = rng.standard_normal(n)
    if kind == "pink" and n > 1:
        m = _fast_len(n)
        spec = np.fft.rfft(rng.standard_normal(m))
        spec /= np.sqrt(np.maximum(np.fft.rfftfreq(m, 1.0 / SAMPLE_RATE), 20.0))
        white = np.fft.irfft(spec, m)[:n]
    return white / (np.sqrt(np.mean(white**2)) + 1e-12)


def draw(rng: np.random.Generator) -> Augmentation:
    """A random augmentation from the ranges above."""
    eq: list[tuple[str, float, float]] = []
    if rng.random() < 0.6:
        eq.append(("low", float(rng.uniform(150, 500)), float(rng.uniform(*EQ_DB_RANGE))))
    if rng.random() < 0.6:
        eq.append(("high", float(rng.uniform(2000, 5000)), float(rng.uniform(*EQ_DB_RANGE))))
    for _ in range(int(rng.integers(0, 3))):
        eq.append(("peak", float(np.exp(rng.uniform(np.log(200), np.log(6000)))),
                   float(rng.uniform(*EQ_DB_RANGE))))  # fmt: skip
    return Augmentation(
        speed=float(rng.uniform(*SPEED_RANGE)),
        gain_db=float(rng.uniform(*GAIN_DB_RANGE)),
        snr_db=float(rng.uniform(*SNR_DB_RANGE)),
        noise=str(rng.choice(["white", "pink", "none"], p=[0.4, 0.4, 0.2])),
        eq=tuple(eq),
    )


def apply(
    audio: np.ndarray, timeline: Timeline, aug: Augmentation, rng: np.random.Generator
) -> tuple[np.ndarray, Timeline]:
    """Augmented audio and the timeline scaled to match its new speed."""
    out = change_speed(audio, aug.speed)
    timeline = timeline.scaled(len(out) / max(len(audio), 1))
    out = equalise(out, aug.eq)
    # Noise is set against the speech level (the loudest 30% of 10 ms frames), not silence.
    frames = out[: len(out) // 160 * 160].reshape(-1, 160)
    power = np.sort(np.mean(frames.astype(np.float64) ** 2, axis=1))
    speech_power = float(power[int(len(power) * 0.7) :].mean()) if len(power) else 0.0
    noise_rms = np.sqrt(speech_power / 10.0 ** (aug.snr_db / 10.0))
    if aug.noise != "none":
        out = out + noise_rms * noise(rng, len(out), aug.noise)
    out = out * 10.0 ** (aug.gain_db / 20.0)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak > 0.99:  # never clip: back the gain off instead
        out = out * (0.99 / peak)
    return out.astype(np.float32), timeline
