"""Helpers for the motion model tests: small random models and short speech."""

from __future__ import annotations

import numpy as np
import torch

from renderer.motion.model import SIZES, MotionDiT


def random_model(seed: int = 0, size: str = "tiny") -> MotionDiT:
    """A MotionDiT whose zero-initialised layers are randomised, so it outputs something."""
    torch.manual_seed(seed)
    model = MotionDiT(SIZES[size])
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and not torch.any(p):
                p.normal_(0.0, 0.05)
    return model.eval()


def speech(text: str = "Hello there, nice to meet you.") -> tuple[np.ndarray, int]:
    """espeak-ng speech: (int16 mono samples, sample rate)."""
    from speech.espeak import EspeakEngine

    engine = EspeakEngine()
    with engine.stream(text) as stream:
        audio = b"".join(chunk.audio for chunk in stream)
    return np.frombuffer(audio, dtype=np.int16), engine.sample_rate


def random_pieces(x: np.ndarray, rng: np.random.Generator, low: int, high: int) -> list[np.ndarray]:
    """``x`` split into consecutive pieces of random sizes in [low, high]."""
    out, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(low, high + 1))
        out.append(x[pos : pos + n])
        pos += n
    return out
