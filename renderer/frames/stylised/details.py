"""Small facial details: cheek blush and the nose hint."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from renderer.frames.stylised import sdf
from renderer.frames.stylised.canvas import Canvas
from renderer.motion.space import IDX

CHEEK = (0.205, 0.135, 0.078, 0.05)  # x (mirrored), y, rx, ry
NOSE_TIP = (0.0, 0.125)
Z_CHEEKS, Z_NOSE = 0.65, 1.05


class DetailLayer:
    """Blush that lifts with a smile, and a soft nose drawn with shading only."""

    def __init__(self, colors: dict[str, Tensor]) -> None:
        self.c = colors

    def draw_cheeks(self, cv: Canvas, m: np.ndarray) -> None:
        """Two soft blush ellipses; each rises a little with its side's smile."""
        for side, smile in ((1.0, "mouthSmileLeft"), (-1.0, "mouthSmileRight")):
            lift = 0.018 * float(np.clip(m[IDX[smile]], 0.0, 1.0))
            x, y = cv.pose.place(side * CHEEK[0], CHEEK[1] - lift, Z_CHEEKS)
            rx = CHEEK[2] * cv.pose.squash * cv.pose.side_scale(side)
            ry = CHEEK[3]
            # The blush fades out 0.04 beyond its ellipse; the margin also covers the error
            # of the approximate ellipse distance away from the outline.
            p = cv.patch(x - rx - 0.06, x + rx + 0.06, y - ry - 0.06, y + ry + 0.06)
            if p is None:
                continue
            d = sdf.ellipse(p.x, p.y, x, y, rx, ry)
            sdf.paint(p.img, sdf.soft(d, -0.03, 0.04).mul_(0.28), self.c["blush"])

    def draw_nose(self, cv: Canvas) -> None:
        """Tip shadow, nostril hints and a highlight; no outline, so it stays friendly."""
        x, y = cv.pose.place(*NOSE_TIP, Z_NOSE)
        sq = cv.pose.squash
        p = cv.patch(x - 0.07, x + 0.07, y - 0.12, y + 0.05)
        if p is None:
            return
        aa = cv.aa
        # Shadow side of the bridge (light comes from the upper left).
        bridge, h = sdf.segment(p.x, p.y, x + 0.012, y - 0.10, x + 0.03 * sq, y - 0.01)
        sdf.paint(p.img, sdf.soft(bridge, 0.0, 0.02).mul_(h).mul_(0.22), self.c["skin_shadow"])
        # Underside of the tip: a soft crescent.
        under = sdf.ellipse(p.x, p.y, x, y + 0.012, 0.045 * sq, 0.018)
        sdf.paint(p.img, sdf.soft(under, -0.006, 0.01).mul_(0.38), self.c["skin_shadow"])
        for side in (-1.0, 1.0):
            nostril = sdf.ellipse(p.x, p.y, x + side * 0.021 * sq, y + 0.018, 0.011 * sq, 0.0065)
            sdf.paint(p.img, sdf.fill(nostril, aa * 1.5).mul_(0.45), self.c["lip_dark"])
        tip = sdf.ellipse(p.x, p.y, x - 0.006, y - 0.006, 0.022 * sq, 0.015)
        sdf.paint(p.img, sdf.soft(tip, -0.008, 0.01).mul_(0.55), self.c["skin_light"])
