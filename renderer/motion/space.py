"""The motion space: the one contract between motion sources and face drawers.

A motion frame is one float32 vector per video frame (25 fps by default). Its entries
are ARKit blendshape coefficients in [0, 1] followed by head rotation in radians:

================  =====================================================  =========
name              meaning                                                range
================  =====================================================  =========
jawOpen           jaw drop; the main lip-sync channel                    [0, 1]
mouthClose        lips pressed together while the jaw may be open (p/b/m) [0, 1]
mouthFunnel       lips pushed out into an "o" / "sh" shape              [0, 1]
mouthPucker       lips pursed narrow ("oo", "w")                         [0, 1]
mouthSmileLeft    left mouth corner up and out                           [0, 1]
mouthSmileRight   right mouth corner up and out                          [0, 1]
mouthStretchLeft  left mouth corner pulled sideways ("ee")               [0, 1]
mouthStretchRight right mouth corner pulled sideways                     [0, 1]
eyeBlinkLeft      left eyelid closed                                     [0, 1]
eyeBlinkRight     right eyelid closed                                    [0, 1]
browInnerUp       inner brows raised (questions, emphasis)               [0, 1]
browDownLeft      left brow lowered                                      [0, 1]
browDownRight     right brow lowered                                     [0, 1]
headPitch         nod, positive = chin down                              radians
headYaw           turn, positive = face turns to the viewer's left       radians
headRoll          tilt, positive = clockwise as seen by the viewer       radians
================  =====================================================  =========

"Left" and "right" are the avatar's own, as in ARKit.
"""

from __future__ import annotations

import numpy as np

MOTION_FPS = 25

BLENDSHAPE_NAMES: tuple[str, ...] = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "browInnerUp",
    "browDownLeft",
    "browDownRight",
)
HEAD_NAMES: tuple[str, ...] = ("headPitch", "headYaw", "headRoll")
MOTION_NAMES: tuple[str, ...] = BLENDSHAPE_NAMES + HEAD_NAMES
MOTION_DIM = len(MOTION_NAMES)

#: Index of each named channel in a motion vector, e.g. ``IDX["jawOpen"] == 0``.
IDX: dict[str, int] = {name: i for i, name in enumerate(MOTION_NAMES)}


def neutral_motion() -> np.ndarray:
    """A closed-mouth, eyes-open, head-straight motion vector (all zeros)."""
    return np.zeros(MOTION_DIM, dtype=np.float32)


#: Head angles are clamped to +-this many radians (blendshapes to [0, 1]).
HEAD_ANGLE_MAX = 0.5


def clip_motion(motion: np.ndarray) -> np.ndarray:
    """Clamp blendshapes to [0, 1] and head angles to +-HEAD_ANGLE_MAX; works on (..., D)."""
    out = np.array(motion, dtype=np.float32, copy=True)
    nb = len(BLENDSHAPE_NAMES)
    out[..., :nb] = np.clip(out[..., :nb], 0.0, 1.0)
    out[..., nb:] = np.clip(out[..., nb:], -HEAD_ANGLE_MAX, HEAD_ANGLE_MAX)
    return out
