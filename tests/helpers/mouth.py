"""Where the stylised face's mouth is on screen, and how much it moves with the voice:
what the browser tests measure in the page (web/stats.js samples that region)."""

from __future__ import annotations

import numpy as np

from renderer.frames.stylised.face import StylisedFace
from renderer.motion.space import IDX, neutral_motion


def mouth_box(size: int = 256) -> tuple[float, float, float, float]:
    """Where the mouth is on screen: the pixels that change when the jaw opens, padded."""
    face = StylisedFace(size, size, device="cpu")
    open_jaw = neutral_motion()
    open_jaw[IDX["jawOpen"]] = 1.0
    changed = (
        np.abs(face.render(open_jaw).astype(int) - face.render(neutral_motion()).astype(int)).sum(
            axis=2
        )
        > 30
    )
    ys, xs = np.nonzero(changed)
    pad = 0.02
    return (
        max(xs.min() / size - pad, 0.0),
        max(ys.min() / size - pad, 0.0),
        min(xs.max() / size + pad, 1.0),
        min(ys.max() / size + pad, 1.0),
    )


def mouth_activity(frames: list[dict]) -> tuple[list[float], list[float]]:
    """Mouth-region change per frame, split into loud-reply frames and quiet stretches."""
    frames = [f for f in frames if f["t"] - frames[0]["t"] > 1000]  # skip the first second
    loud_times = np.array([f["t"] for f in frames if f["rms"] >= 0.03])
    talking = [f["mouthDiff"] for f in frames if f["rms"] >= 0.03]
    silent = [
        f["mouthDiff"]
        for f in frames
        if f["rms"] < 0.003 and (loud_times.size == 0 or np.abs(loud_times - f["t"]).min() > 500)
    ]
    return talking, silent
