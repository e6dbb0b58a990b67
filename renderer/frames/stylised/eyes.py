"""Eyes (white, iris, pupil, highlights, blinking lids, lashes) and eyebrows."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from renderer.frames.stylised import sdf
from renderer.frames.stylised.canvas import Canvas
from renderer.motion.space import IDX

EYE_X, EYE_Y = 0.138, -0.005  # centre of the avatar's eyes, head space (x mirrored per side)
EYE_RX, EYE_RY_TOP, EYE_RY_BOTTOM = 0.071, 0.041, 0.031
IRIS_R, PUPIL_R = 0.043, 0.018
Z_EYES, Z_BROWS = 0.75, 0.8
BROW_INNER = (0.052, -0.112)  # (x, y) of the inner end, for side = +1
BROW_OUTER = (0.205, -0.112)
BROW_ARCH = 0.03
BROW_HALF_THICK = (0.0145, 0.0065)  # inner, outer


class EyeLayer:
    """Both eyes and both brows; side +1 is the viewer's right = the avatar's left."""

    def __init__(self, colors: dict[str, Tensor]) -> None:
        self.c = colors

    def draw(self, cv: Canvas, motion: np.ndarray) -> None:
        """Draw eyes then brows for this frame's motion."""
        for side, blink, brow_down in (
            (1.0, "eyeBlinkLeft", "browDownLeft"),
            (-1.0, "eyeBlinkRight", "browDownRight"),
        ):
            self._eye(cv, side, float(np.clip(motion[IDX[blink]], 0.0, 1.0)))
            self._brow(
                cv,
                side,
                float(np.clip(motion[IDX["browInnerUp"]], 0.0, 1.0)),
                float(np.clip(motion[IDX[brow_down]], 0.0, 1.0)),
            )

    def _eye(self, cv: Canvas, side: float, blink: float) -> None:
        """One eye; ``blink`` 0 = open, 1 = closed."""
        pose = cv.pose
        cx, cy = pose.place(side * EYE_X, EYE_Y, Z_EYES)
        rx = EYE_RX * pose.squash * pose.side_scale(side)
        rt, rb = EYE_RY_TOP, EYE_RY_BOTTOM
        p = cv.patch(cx - rx - 0.04, cx + rx + 0.04, cy - rt - 0.045, cy + rb + 0.02)
        if p is None:
            return
        aa = cv.aa
        d_eye = sdf.ellipse2(p.x, p.y, cx, cy, rx, rt, rb)
        # Upper lid edge: an arc that slides from the top of the eye down to the lower arc.
        t = (p.x - cx).mul_(1.0 / rx)
        arc = t.mul_(t).neg_().add_(1.0).clamp_(min=0.0).sqrt_()  # (h, w) sqrt(1 - t^2)
        lid_k = -rt + (rt + rb) * blink
        lid_y = arc * lid_k + cy  # (h, w) y of the lid edge above each pixel
        opening = sdf.fill(d_eye, aa).mul_(sdf.fill(lid_y - p.y, aa))

        # Eye white, with the lid's soft shadow along its top.
        sdf.paint(p.img, opening, self.c["eye_white"])
        lid_shade = sdf.soft(p.y - lid_y, 0.0, 0.022).mul_(opening)
        sdf.paint(p.img, lid_shade * 0.8, self.c["eye_shadow"])

        # Iris and pupil look at the camera: they counter-rotate against the head turn.
        ix = cx + 0.05 * math.sin(pose.yaw)
        # The lids cover a sliver of the iris at top and bottom: a relaxed, not staring, look.
        iy = cy + (rb - rt) / 2.0 - 0.03 * math.sin(pose.pitch)
        d_iris = sdf.circle(p.x, p.y, ix, iy, IRIS_R)
        iris = sdf.fill(d_iris, aa).mul_(opening)
        sdf.paint(p.img, iris, self.c["iris"])
        rim = sdf.soft(d_iris, -0.013, 0.0).mul_(iris)
        sdf.paint(p.img, rim, self.c["iris_dark"])
        sdf.paint(p.img, lid_shade.mul_(0.6).mul_(iris), self.c["iris_dark"])
        pupil = sdf.fill(sdf.circle(p.x, p.y, ix, iy, PUPIL_R), aa).mul_(opening)
        sdf.paint(p.img, pupil, self.c["pupil"])
        for hx, hy, hr, ha in ((-0.013, -0.013, 0.0095, 0.95), (0.012, 0.011, 0.0045, 0.7)):
            glint = sdf.fill(sdf.circle(p.x, p.y, ix + hx, iy + hy, hr), aa).mul_(opening)
            sdf.paint(p.img, glint.mul_(ha), self.c["highlight"])

        # Lash line riding on the lid edge, thicker towards the outer corner.
        outer = (p.x - cx).mul_(side / rx).clamp_(0.0, 1.0)  # 0 inner half .. 1 outer corner
        thick = outer.mul_(0.006).add_(0.0065)  # (h, w) half-thickness
        lash_d = (p.y - (lid_y - thick)).abs_().sub_(thick)
        span = sdf.fill((p.x - cx).abs_().sub_(rx * 1.02), aa)
        lash = sdf.fill(lash_d, aa).mul_(span)
        # Outer flick: a short stroke tapering off the corner, starting on the lash line.
        fy = cy + lid_k * 0.45 - 0.004
        flick, h = sdf.segment(
            p.x, p.y, cx + side * rx * 0.88, fy, cx + side * (rx + 0.018), fy - 0.012
        )
        flick.sub_(h.mul_(-0.0045).add_(0.0055))
        lash = torch.maximum(lash, sdf.fill(flick, aa))
        sdf.paint(p.img, lash, self.c["lash"])
        # Faint lower lash line and lid crease complete the shape without outlining it.
        lower = sdf.fill((d_eye.abs() - 0.002), aa).mul_(sdf.smoothstep_((p.y - cy) * 80.0))
        sdf.paint(p.img, lower.mul_(0.35), self.c["lash"])
        crease = sdf.ellipse2(p.x, p.y, cx, cy, rx * 1.02, rt + 0.024, rb)
        crease = sdf.fill(crease.abs_().sub_(0.0025), aa * 1.5)
        crease.mul_(sdf.smoothstep_((cy - p.y) * 60.0))
        sdf.paint(p.img, crease.mul_(0.35), self.c["skin_shadow"])

    def _brow(self, cv: Canvas, side: float, up: float, down: float) -> None:
        """One tapered, arched brow; inner end rises with browInnerUp, all drops with down."""
        pose = cv.pose
        ix, iy = BROW_INNER
        ox, oy = BROW_OUTER
        iy += -0.045 * up + 0.035 * down
        oy += -0.014 * up + 0.012 * down
        ix -= 0.008 * down  # frowning pulls the brows together
        ax, ay = pose.place(side * ix, iy, Z_BROWS)
        bx, by = pose.place(side * ox, oy, Z_BROWS)
        scale = pose.side_scale(side)
        p = cv.patch(min(ax, bx) - 0.03, max(ax, bx) + 0.03, min(ay, by) - 0.06, max(ay, by) + 0.03)
        if p is None:
            return
        # Bend the space so a straight capsule becomes an arch peaking at its middle.
        s = (p.x - ax).mul_(1.0 / (bx - ax)).clamp_(0.0, 1.0)
        bend = s.mul(s.neg().add_(1.0)).mul_(4.0 * BROW_ARCH * (1.0 - 0.4 * up))
        d, h = sdf.segment(p.x, p.y + bend, ax, ay, bx, by)
        r0, r1 = BROW_HALF_THICK
        d.sub_(h.mul_((r1 - r0) * scale).add_(r0 * scale))
        sdf.paint(p.img, sdf.fill(d, cv.aa * 1.3), self.c["brow"])
