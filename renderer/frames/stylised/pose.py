"""Head pose of one frame: roll as a rotation, yaw/pitch as depth parallax.

A 2D face cannot really turn, so yaw and pitch move each layer by an amount
proportional to its depth ``z`` (front of the face ~ +1, back of the hair ~ -0.5)
and squash horizontal spacing by cos(yaw). Layers in front slide further than the
head outline, which reads as a 3D turn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from renderer.motion.space import IDX

PIVOT = (0.0, 0.42)  # head space: top of the neck, the centre of roll
FACE_CENTER_Y = 0.05  # head space: pitch squashes vertical offsets about this height
DEPTH = 0.24  # head-space shift of a z=1 feature per radian-ish of yaw/pitch (sin)


@dataclass(frozen=True)
class Pose:
    """Yaw, pitch and roll in radians plus the derived head translation."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    @classmethod
    def from_motion(cls, motion: np.ndarray) -> Pose:
        """Read the head channels of a motion vector, clamped to +-0.5 rad."""

        def get(name: str) -> float:
            return float(np.clip(motion[IDX[name]], -0.5, 0.5))

        return cls(yaw=get("headYaw"), pitch=get("headPitch"), roll=get("headRoll"))

    @property
    def pivot(self) -> tuple[float, float]:
        """Roll pivot in head space."""
        return PIVOT

    @property
    def shift(self) -> tuple[float, float]:
        """Whole-head translation in frame units: a nod dips the head, a turn slides it a bit."""
        return (-0.04 * math.sin(self.yaw), 0.06 * math.sin(self.pitch))

    @property
    def squash(self) -> float:
        """Horizontal foreshortening of the face under yaw."""
        return math.cos(self.yaw)

    def place(self, x: float, y: float, z: float) -> tuple[float, float]:
        """Where a head-space point at depth ``z`` appears after yaw and pitch."""
        sy, sp = math.sin(self.yaw), math.sin(self.pitch)
        # Positive yaw turns the face to the viewer's left, positive pitch lowers the chin.
        px = x * math.cos(self.yaw) - sy * z * DEPTH
        py = FACE_CENTER_Y + (y - FACE_CENTER_Y) * math.cos(self.pitch) + sp * z * DEPTH
        return px, py

    def side_scale(self, side: float) -> float:
        """Size factor of a feature on ``side`` (-1: viewer's left, +1: right); far ones shrink."""
        return 1.0 + 0.22 * math.sin(self.yaw) * side
