"""The face-drawer seam: one motion vector in, one RGB image out.

Every way of drawing the avatar (the stylised face today, a photo portrait next) is a
:class:`FrameDrawer`. The player, the degradation ladder and ``visage profile`` only
know this protocol; :func:`renderer.frames.factory.build_drawer` picks the
implementation from the settings.
"""

from __future__ import annotations

import threading
from typing import Protocol, runtime_checkable

import numpy as np
import torch


class DrawCancelled(Exception):
    """``render`` was called off midway: the frame it was drawing is no longer wanted."""


@runtime_checkable
class FrameDrawer(Protocol):
    """Draws the avatar for a motion vector at a fixed size, on one torch device."""

    @property
    def width(self) -> int:
        """Image width in pixels."""
        ...

    @property
    def height(self) -> int:
        """Image height in pixels."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the drawing runs."""
        ...

    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        """(MOTION_DIM,) float motion -> (height, width, 3) contiguous uint8 RGB.

        Safe to call from a worker thread. When ``cancel`` is set from another thread,
        drawing stops at its next checkpoint and raises :class:`DrawCancelled`.
        """
        ...


def check_cancelled(cancel: threading.Event | None) -> None:
    """Raise :class:`DrawCancelled` if ``cancel`` is set (a drawer's checkpoint)."""
    if cancel is not None and cancel.is_set():
        raise DrawCancelled


def resolve_device(device: str) -> torch.device:
    """'auto' -> CUDA when available else CPU; 'cuda' without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but torch sees no CUDA GPU; "
            "use device='cpu' or 'auto'"
        )
    return torch.device(device)
