"""The mouth: lips, dark inner mouth, teeth and tongue, driven by the mouth blendshapes.

The mouth is drawn in a "curved" space: ``v`` is the vertical offset from a mouth
line that bends up at each corner with that corner's smile, so every shape below is
a plain (egg-shaped) ellipse in (x, v).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from renderer.frames.stylised import sdf
from renderer.frames.stylised.canvas import Canvas, Patch
from renderer.motion.space import IDX

MOUTH_Y = 0.245  # head space, centre of the closed mouth line
Z_MOUTH = 0.85
HALF_WIDTH = 0.1
MAX_OPEN = 0.155  # opening height at jawOpen = 1
UPPER_LIP, LOWER_LIP = 0.024, 0.033  # lip thickness at rest
SEAM_TOP, SEAM_BOTTOM = 0.0028, 0.0038  # a closed mouth still shows a thin dark line


@dataclass(frozen=True)
class MouthShape:
    """Per-frame mouth geometry in head space."""

    cx: float  # centre of the mouth line
    cy: float
    hw: float  # half-width corner to corner
    bend_a: float  # corner lift: line y offset = -(a + b t) t^2, t in [-1, 1]
    bend_b: float
    open_top: float  # opening above / below the line
    open_bottom: float
    open_hw: float  # opening half-width
    lip_top: float  # lip thickness above / below the opening
    lip_bottom: float
    smile: tuple[float, float]  # (viewer's left, viewer's right) corner smile
    teeth: float  # visible height of the upper teeth


def mouth_shape(cv: Canvas, m: np.ndarray) -> MouthShape:
    """Map the mouth blendshapes of ``m`` to geometry."""

    def g(name: str) -> float:
        return float(np.clip(m[IDX[name]], 0.0, 1.0))

    jaw, close = g("jawOpen"), g("mouthClose")
    fun, puc = g("mouthFunnel"), g("mouthPucker")
    # Side +1 is the viewer's right, i.e. the avatar's left.
    sm = {1.0: g("mouthSmileLeft"), -1.0: g("mouthSmileRight")}
    st = {1.0: g("mouthStretchLeft"), -1.0: g("mouthStretchRight")}
    pose = cv.pose
    corner = {}
    for side in (1.0, -1.0):
        reach = 1.0 + 0.30 * st[side] + 0.16 * sm[side] - 0.36 * puc - 0.24 * fun
        corner[side] = side * HALF_WIDTH * reach * pose.side_scale(side) * pose.squash
    cx0, cy = pose.place(0.0, MOUTH_Y, Z_MOUTH)
    cx = cx0 + (corner[1.0] + corner[-1.0]) / 2.0
    hw = (corner[1.0] - corner[-1.0]) / 2.0
    lift = {s: 0.032 * sm[s] - 0.010 * st[s] for s in (1.0, -1.0)}

    lips_apart = 1.0 - 0.92 * close
    opening = (MAX_OPEN * jaw + 0.035 * fun + 0.012 * puc) * lips_apart
    top_share = 0.30 + 0.15 * fun  # the jaw moves the lower lip; a funnel opens both
    open_top = max(opening * top_share, SEAM_TOP)
    open_bottom = max(opening * (1.0 - top_share), SEAM_BOTTOM)
    rounded = max(fun, puc)
    open_hw = hw * (0.90 - 0.22 * rounded)
    fullness = (1.0 + 0.45 * puc + 0.25 * fun) * (1.0 - 0.45 * close)
    return MouthShape(
        cx=cx,
        cy=cy,
        hw=hw,
        bend_a=(lift[1.0] + lift[-1.0]) / 2.0,
        bend_b=(lift[1.0] - lift[-1.0]) / 2.0,
        open_top=open_top,
        open_bottom=open_bottom,
        open_hw=open_hw,
        lip_top=UPPER_LIP * fullness,
        lip_bottom=LOWER_LIP * fullness,
        smile=(sm[-1.0], sm[1.0]),
        teeth=min(0.026, 0.8 * opening),
    )


class MouthLayer:
    """Draws the mouth into its own small window of the canvas."""

    def __init__(self, colors: dict[str, Tensor]) -> None:
        self.c = colors

    def draw(self, cv: Canvas, m: np.ndarray) -> None:
        """Draw lips, inner mouth, teeth, tongue and smile creases."""
        ms = mouth_shape(cv, m)
        lift = abs(ms.bend_a) + abs(ms.bend_b)
        top = ms.cy - ms.open_top - ms.lip_top - lift - 0.03
        bottom = ms.cy + ms.open_bottom + ms.lip_bottom + 0.05  # room for the chin shade
        p = cv.patch(ms.cx - ms.hw - 0.06, ms.cx + ms.hw + 0.06, top, bottom)
        if p is None:
            return
        aa = cv.aa
        t = (p.x - ms.cx).mul_(1.0 / ms.hw).clamp_(-1.25, 1.25)  # (h, w) -1..1 corner to corner
        # v: offset from the bent mouth line (corners lift with the smile).
        bend = t.mul(ms.bend_b).add_(ms.bend_a).mul_(t).mul_(t)
        v = (p.y - ms.cy).add_(bend)  # (h, w)

        self._shadow_below(p, ms, v)
        self._lips(p, ms, t, v, aa)
        self._inside(p, ms, t, v, aa)
        self._creases(p, ms, aa)

    def _shadow_below(self, p: Patch, ms: MouthShape, v: Tensor) -> None:
        """Soft shade under the lower lip, where the chin curves in."""
        d = sdf.ellipse(p.x, v, ms.cx, ms.open_bottom + ms.lip_bottom + 0.012, ms.hw * 0.55, 0.014)
        sdf.paint(p.img, sdf.soft(d, -0.006, 0.012).mul_(0.35), self.c["skin_shadow"])

    def _lips(self, p: Patch, ms: MouthShape, t: Tensor, v: Tensor, aa: float) -> None:
        """Upper and lower lip as one egg around the opening, shaded by lip."""
        # Cupid's bow: the middle of the upper lip's outline dips slightly.
        bow = torch.exp(t * t * -30.0).mul_(0.006)
        vb = (v - bow).clamp_(max=0.0).add_(v.clamp(min=0.0))  # only the upper outline moves
        d = sdf.ellipse2(
            p.x,
            vb,
            ms.cx,
            0.0,
            ms.hw + 0.006,
            ms.open_top + ms.lip_top,
            ms.open_bottom + ms.lip_bottom,
        )
        lips = sdf.fill(d, aa * 1.4)
        upper = sdf.smoothstep_(v.mul(-1.0 / (2.0 * aa)).add_(0.5)).mul_(lips)
        sdf.paint(p.img, lips.mul(0.92), self.c["lip"])
        sdf.paint(p.img, upper.mul_(0.8), self.c["lip_dark"])
        # Highlight on the fullest part of the lower lip.
        hy = ms.open_bottom + ms.lip_bottom * 0.45
        hl = sdf.ellipse(p.x, v, ms.cx - ms.hw * 0.12, hy, ms.hw * 0.38, ms.lip_bottom * 0.28)
        sdf.paint(p.img, sdf.soft(hl, -0.004, 0.008).mul_(lips).mul_(0.7), self.c["lip_light"])

    def _inside(self, p: Patch, ms: MouthShape, t: Tensor, v: Tensor, aa: float) -> None:
        """Dark mouth, teeth and tongue, all clipped to the opening."""
        d_open = sdf.ellipse2(p.x, v, ms.cx, 0.0, ms.open_hw, ms.open_top, ms.open_bottom)
        opening = sdf.fill(d_open, aa)
        h, w = opening.shape
        inner = self.c["mouth"].expand(3, h, w).clone()  # (3, h, w)
        depth = sdf.smoothstep_(v.mul(1.0 / max(ms.open_bottom, 1e-3)).add_(0.2))
        sdf.paint(inner, depth.neg_().add_(1.0).mul_(0.6), self.c["mouth_deep"])
        if ms.open_bottom > 0.02:
            tongue = sdf.ellipse(
                p.x, v, ms.cx, ms.open_bottom * 0.98, ms.open_hw * 0.62, ms.open_bottom * 0.5
            )
            sdf.paint(inner, sdf.fill(tongue, aa * 2.0), self.c["tongue"])
            lower = ms.open_bottom - min(0.014, (ms.open_bottom - 0.02) * 0.5)
            low_teeth = sdf.fill(lower - v, aa).mul_(0.85)
            sdf.paint(inner, low_teeth, self.c["teeth_shadow"])
        if ms.teeth > 0.002:
            # Upper teeth hang from the upper lip: a band whose lower edge follows the line.
            edge = v - (-ms.open_top + ms.teeth)
            teeth = sdf.fill(edge, aa)
            sdf.paint(inner, teeth, self.c["teeth"])
            sides = t.mul(t).mul_(teeth).mul_(0.7)
            sdf.paint(inner, sides, self.c["teeth_shadow"])
        sdf.paint(p.img, opening, inner)

    def _creases(self, p: Patch, ms: MouthShape, aa: float) -> None:
        """Short curved creases beside the corners that appear with a smile."""
        for side, smile in ((-1.0, ms.smile[0]), (1.0, ms.smile[1])):
            if smile < 0.05:
                continue
            lift = ms.bend_a + side * ms.bend_b
            x0 = ms.cx + side * (ms.hw + 0.010)
            y0 = ms.cy - lift
            d, h = sdf.segment(p.x, p.y, x0, y0 - 0.014, x0 + side * 0.010, y0 + 0.012)
            d.sub_(h.mul_(h.neg().add_(1.0)).mul_(0.012))  # thickest in the middle
            sdf.paint(p.img, sdf.fill(d, aa).mul_(0.45 * smile), self.c["skin_shadow"])
