"""The static layer: backdrop gradient, shoulders, neck. Drawn once per frame size."""

from __future__ import annotations

import torch
from torch import Tensor

from renderer.frames.stylised import sdf
from renderer.frames.stylised.canvas import FrameGrid

NECK_TOP = 0.18  # neck capsule, head space at rest (the body does not move with the head)
NECK_BOTTOM = 0.80
NECK_HALF_WIDTH = 0.135
TRAPEZIUS = (0.0, 0.94, 0.56, 0.36)  # cx, cy, rx, ry: the slope from neck to shoulder
SHOULDERS = (0.0, 1.27, 1.0, 0.55)
COLLAR_CENTER_Y, COLLAR_RX, COLLAR_RY = 0.59, 0.18, 0.115


class StaticLayer:
    """Everything that never moves, plus the neck mask the chin shadow needs."""

    def __init__(self, grid: FrameGrid, colors: dict[str, Tensor]) -> None:
        x, y = grid.full()  # (H, W) each
        aa = grid.px
        img = self._backdrop(x, y, colors)  # (3, H, W)

        # Neck: a capsule, shaded darker at its sides so it reads as a cylinder.
        neck_d, _ = sdf.segment(x, y, 0.0, NECK_TOP, 0.0, NECK_BOTTOM)
        neck_d.sub_(NECK_HALF_WIDTH)
        self.neck_mask = sdf.fill(neck_d, aa)  # (H, W) coverage, reused by the chin shadow
        sdf.paint(img, self.neck_mask, colors["skin"])
        side = sdf.soft(neck_d, -0.035, 0.0) * self.neck_mask
        sdf.paint(img, side * 0.45, colors["skin_shadow"])

        # Shoulders with a round neckline cut out; the neck shows through the cut.
        body = sdf.smooth_union(sdf.ellipse(x, y, *TRAPEZIUS), sdf.ellipse(x, y, *SHOULDERS), 0.18)
        collar = sdf.ellipse(x, y, 0.0, COLLAR_CENTER_Y, COLLAR_RX, COLLAR_RY)
        shirt_d = torch.maximum(body, collar.neg())
        shirt = sdf.fill(shirt_d, aa)
        sdf.paint(img, shirt, colors["shirt"])
        # Light from the upper left: a broad gradient across the chest, darker flanks.
        light = sdf.smoothstep_(x.mul(-0.9).add_(0.35)) * shirt
        sdf.paint(img, light * 0.35, colors["shirt_light"])
        flank = sdf.soft(body, -0.12, 0.0) * shirt
        sdf.paint(img, flank * 0.55, colors["shirt_shadow"])
        # A ribbed collar band just outside the neckline, and its shadow on the neck.
        band = sdf.fill((collar - 0.018).abs_().sub_(0.018), aa) * sdf.fill(body, aa)
        sdf.paint(img, band, colors["shirt_light"])
        inner = sdf.soft(collar.neg(), -0.03, 0.0) * sdf.fill(collar, aa) * self.neck_mask
        sdf.paint(img, inner * 0.5, colors["skin_shadow"])

        self.image = img.contiguous()  # (3, H, W) float in [0, 1]
        # (H, W, 3) uint8 copy: each frame starts from a clone of it and only the head's
        # window is converted, so the static part costs one memcpy.
        self.image_u8 = to_uint8(img).contiguous()

    @staticmethod
    def _backdrop(x: Tensor, y: Tensor, colors: dict[str, Tensor]) -> Tensor:
        """Vertical two-colour gradient with a soft glow behind the head."""
        t = sdf.smoothstep_(y.mul(0.5).add_(0.5))  # 0 at the top, 1 at the bottom
        img = colors["bg_top"].expand(3, *x.shape).clone()  # (3, H, W)
        sdf.paint(img, t, colors["bg_bottom"])
        glow = sdf.soft(sdf.ellipse(x, y, 0.0, -0.05, 0.75, 0.85), -0.5, 0.35)
        sdf.paint(img, glow * 0.6, colors["bg_glow"])
        return img


def to_uint8(img: Tensor) -> Tensor:
    """(3, h, w) float in [0, 1] -> (h, w, 3) uint8 (a strided view, not contiguous)."""
    return img.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).permute(1, 2, 0)
