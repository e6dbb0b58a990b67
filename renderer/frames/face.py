"""FaceRenderer: one motion vector in, one RGB frame of the stylised avatar out.

The static layer (backdrop, shoulders, neck) is drawn once. Per frame only the
window the head can touch is redrawn, and the detailed features (eyes, brows,
nose, mouth) only inside their own small windows.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from renderer.frames.background import StaticLayer, to_uint8
from renderer.frames.canvas import Canvas, FrameGrid, HeadTransform
from renderer.frames.details import DetailLayer
from renderer.frames.eyes import EyeLayer
from renderer.frames.head import BOUNDS, HeadLayer
from renderer.frames.mouth import MouthLayer
from renderer.frames.palette import Palette, color_bank
from renderer.frames.pose import Pose
from renderer.motion.space import IDX, MOTION_DIM


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


class DrawCancelled(Exception):
    """``render`` was called off midway: the frame it was drawing is no longer wanted."""


class FaceRenderer:
    """Draws the procedural face for a motion vector; ``render`` is thread-safe."""

    def __init__(self, width: int, height: int, device: str = "auto") -> None:
        if width < 16 or height < 16:
            raise ValueError(f"frame size {width}x{height} is too small; use at least 16x16")
        self.width = width
        self.height = height
        self.device = resolve_device(device)
        self.grid = FrameGrid(width, height, self.device)
        colors = color_bank(Palette(), self.device)
        with torch.inference_mode():
            self.static = StaticLayer(self.grid, colors)
        self.head = HeadLayer(colors, self.static.neck_mask)
        self.details = DetailLayer(colors)
        self.mouth = MouthLayer(colors)
        self.eyes = EyeLayer(colors)
        # Renders may come from several worker threads; torch ops are safe, our state is not
        # shared, but serialising keeps CPU use predictable (one frame at a time).
        self._lock = threading.Lock()

    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        """Draw one frame: (MOTION_DIM,) float motion -> (H, W, 3) contiguous uint8 RGB.

        When ``cancel`` is set from another thread, drawing stops at the next layer and
        raises :class:`DrawCancelled`, so the thread is free for a frame that matters more.
        """
        m = np.asarray(motion, dtype=np.float32)
        if m.shape != (MOTION_DIM,):
            raise ValueError(f"motion must have shape ({MOTION_DIM},), got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError("motion contains NaN or infinite values")
        pose = Pose.from_motion(m)
        with self._lock, torch.inference_mode():
            box = self._window(pose)
            r0, r1, c0, c1 = box
            img = self.static.image[:, r0:r1, c0:c1].clone()  # (3, h, w) working window
            cv = Canvas(self.grid, img, pose, box)
            hs = self.head.shape(pose, float(np.clip(m[IDX["jawOpen"]], 0.0, 1.0)))
            self.head.draw_back(cv, hs)
            _check(cancel)
            head_cov = self.head.draw_skin(cv, hs)
            _check(cancel)
            self.details.draw_cheeks(cv, m)
            self.details.draw_nose(cv)
            _check(cancel)
            self.mouth.draw(cv, m)
            _check(cancel)
            self.eyes.draw(cv, m)
            _check(cancel)
            self.head.draw_front(cv, head_cov)
            out = self.static.image_u8.clone()  # (H, W, 3)
            out[r0:r1, c0:c1] = to_uint8(img)
            return out.cpu().numpy()

    def _window(self, pose: Pose) -> tuple[int, int, int, int]:
        """Pixel box of everything the head can touch in this pose (parallax included)."""
        x0, x1, y0, y1 = BOUNDS
        mx = 0.2 * abs(math.sin(pose.yaw))
        my = 0.2 * abs(math.sin(pose.pitch))
        return HeadTransform(pose).pixel_box(self.grid, x0 - mx, x1 + mx, y0 - my, y1 + my)


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise DrawCancelled
