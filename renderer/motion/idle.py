"""Idle motion building blocks: smooth noise and natural blinks, both seeded."""

from __future__ import annotations

import math

import numpy as np


class SmoothNoise:
    """Band-limited noise in about [-1, 1]: a sum of a few sines with random phases.

    Cheap, smooth at any frame rate and exactly reproducible for a seed.
    """

    def __init__(self, rng: np.random.Generator, low_hz: float, high_hz: float, parts: int = 3):
        self.freq = rng.uniform(low_hz, high_hz, parts) * 2.0 * math.pi  # (parts,) rad/s
        self.phase = rng.uniform(0.0, 2.0 * math.pi, parts)
        self.gain = rng.uniform(0.5, 1.0, parts)
        self.gain /= self.gain.sum()

    def __call__(self, t: float) -> float:
        """Noise value at time ``t`` seconds."""
        return float(np.dot(self.gain, np.sin(self.freq * t + self.phase)))


class Blinker:
    """Schedules blinks at a natural random rate and returns the eyelid closure per frame.

    A blink closes in ~60 ms, stays shut ~30 ms and reopens over ~80 ms. Intervals are
    1.2 s plus a gamma-distributed wait (mean ~3.6 s idle, ~3.0 s while speaking, i.e.
    17-20 blinks a minute), with an occasional quick double blink.
    """

    CLOSE_S, HOLD_S, OPEN_S = 0.06, 0.03, 0.08

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.start = -math.inf  # start time of the current / last blink
        self.next = self._interval(speaking=False) * rng.uniform(0.2, 1.0)

    def _interval(self, speaking: bool) -> float:
        mean_wait = 1.8 if speaking else 2.4
        return 1.2 + float(self.rng.gamma(2.0, mean_wait / 2.0))

    def profile(self, dt: float) -> float:
        """Lid closure ``dt`` seconds into a blink (0 open .. 1 closed)."""
        if dt < 0.0:
            return 0.0
        if dt < self.CLOSE_S:
            x = dt / self.CLOSE_S
            return x * x * (3.0 - 2.0 * x)
        dt -= self.CLOSE_S
        if dt < self.HOLD_S:
            return 1.0
        dt -= self.HOLD_S
        if dt < self.OPEN_S:
            x = 1.0 - dt / self.OPEN_S
            return x * x * (3.0 - 2.0 * x)
        return 0.0

    def step(self, t: float, frame_s: float, speaking: bool) -> float:
        """Closure for the frame covering [t, t + frame_s)."""
        if t >= self.next:
            self.start = self.next
            double = self.rng.random() < 0.1
            self.next = self.start + (0.3 if double else self._interval(speaking))
        # The peak of the lid over the frame: a short blink is never lost between samples.
        return max(self.profile(t + k * frame_s / 4.0 - self.start) for k in range(4))
