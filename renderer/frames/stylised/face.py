"""StylisedFace: one motion vector in, one RGB frame of the stylised avatar out.

The static layer (backdrop, shoulders, neck) is drawn once. Per frame only the
window the head can touch is redrawn, and the detailed features (eyes, brows,
nose, mouth) only inside their own small windows.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

from renderer.frames.drawer import check_cancelled, resolve_device
from renderer.frames.stylised.background import StaticLayer, to_uint8
from renderer.frames.stylised.canvas import Canvas, FrameGrid, HeadTransform
from renderer.frames.stylised.details import DetailLayer
from renderer.frames.stylised.eyes import EyeLayer
from renderer.frames.stylised.head import BOUNDS, HeadLayer
from renderer.frames.stylised.mouth import MouthLayer
from renderer.frames.stylised.palette import Palette, color_bank
from renderer.frames.stylised.pose import Pose
from renderer.motion.space import IDX, MOTION_DIM


class StylisedFace:
    """Draws the procedural face for a motion vector (a ``FrameDrawer``); thread-safe."""

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
        raises ``DrawCancelled``, so the thread is free for a frame that matters more.
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
            check_cancelled(cancel)
            head_cov = self.head.draw_skin(cv, hs)
            check_cancelled(cancel)
            self.details.draw_cheeks(cv, m)
            self.details.draw_nose(cv)
            check_cancelled(cancel)
            self.mouth.draw(cv, m)
            check_cancelled(cancel)
            self.eyes.draw(cv, m)
            check_cancelled(cancel)
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
