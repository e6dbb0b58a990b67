"""A second, trivial face drawer, plugged in through ``avatar.face`` by import path."""

from __future__ import annotations

import threading
import time

import numpy as np
import torch

from renderer.config import AvatarSettings
from renderer.frames import FrameDrawer
from renderer.motion.space import IDX

FLAT_DRAWER = "tests.helpers.drawers:flat_drawer"


class FlatDrawer:
    """A flat image whose red level is the jaw opening and whose blue is the first blink
    channel: enough to see, from received pixels, that the mouth moved with the voice."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.device = torch.device("cpu")
        self.calls = 0

    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        """(height, width, 3) uint8: red = 255 * jawOpen, green 128, blue = 255 * blink."""
        self.calls += 1
        jaw = float(np.clip(motion[IDX["jawOpen"]], 0.0, 1.0))
        blink = float(np.clip(motion[IDX["eyeBlinkLeft"]], 0.0, 1.0))
        image = np.empty((self.height, self.width, 3), np.uint8)
        image[...] = (round(255 * jaw), 128, round(255 * blink))
        return image


def flat_drawer(settings: AvatarSettings, width: int, height: int) -> FrameDrawer:
    """The builder ``avatar.face = "tests.helpers.drawers:flat_drawer"`` names."""
    return FlatDrawer(width, height)


def jaw_of(image: bytes) -> float:
    """The jaw opening a FlatDrawer image shows (its first pixel's red level)."""
    return image[0] / 255


SLOW_DRAWER = "tests.helpers.drawers:slow_drawer"
SLOW_DRAW_S = 0.12  # over the frame period of every rung of the ladder


class SlowDrawer(FlatDrawer):
    """A FlatDrawer on a machine far too slow for it: every frame takes SLOW_DRAW_S."""

    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        """A FlatDrawer image, late."""
        time.sleep(SLOW_DRAW_S)
        return super().render(motion, cancel)


def slow_drawer(settings: AvatarSettings, width: int, height: int) -> FrameDrawer:
    """The builder ``avatar.face = "tests.helpers.drawers:slow_drawer"`` names."""
    return SlowDrawer(width, height)
