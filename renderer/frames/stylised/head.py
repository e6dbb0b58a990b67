"""Head layers: back hair, ears, skin with shading, chin shadow, front hair."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from renderer.frames.stylised import sdf
from renderer.frames.stylised.canvas import Canvas, Patch
from renderer.frames.stylised.pose import Pose

# Head space at rest (y down). Depth z drives the yaw/pitch parallax (see pose.py).
CRANIUM = (0.0, -0.10, 0.355, 0.43)  # cx, cy, rx, ry
JAW = (0.0, 0.075, 0.295, 0.345)
JAW_DROP = 0.035  # how far the chin drops at jawOpen = 1
HEAD_BLEND = 0.10
Z_HEAD, Z_BACK_HAIR, Z_FRONT_HAIR, Z_FRINGE, Z_EARS = 0.2, -0.5, 0.3, 0.6, -0.1
BACK_HAIR = (0.0, -0.11, 0.455, 0.52)
BACK_HAIR_BOTTOM = 0.25
CAP = (0.0, -0.115, 0.378, 0.452)
FACE_WINDOW = (0.0, 0.13, 0.322, 0.505)
FRINGE = (-0.07, -0.345, 0.34, 0.115, -0.42)  # cx, cy, rx, ry, tilt (rad): a swept lock
STRAND_CENTER = (0.42, -0.95)  # strands are arcs about this point, sweeping like the fringe
STRANDS = ((0.63, 0.3, "hair_light"), (0.71, 0.4, "hair_shadow"), (0.78, 0.25, "hair_light"))
EAR = (0.342, 0.035, 0.052, 0.082)
#: Head-space rectangle that contains every pixel this module can touch (before parallax).
BOUNDS = (-0.52, 0.52, -0.70, 0.62)


@dataclass(frozen=True)
class HeadShape:
    """Per-frame head outline placement, shared by the skin and the chin shadow."""

    dx: float  # parallax shift of the outline
    dy: float
    jaw_drop: float


class HeadLayer:
    """Draws everything of the head except the facial features."""

    def __init__(self, colors: dict[str, Tensor], neck_mask: Tensor) -> None:
        self.c = colors
        self.neck_mask = neck_mask  # (H, W) static coverage of the neck

    def shape(self, pose: Pose, jaw: float) -> HeadShape:
        """Outline placement for this frame."""
        dx, dy = _shift(pose, Z_HEAD)
        return HeadShape(dx, dy, JAW_DROP * jaw)

    def head_distance(self, x: Tensor, y: Tensor, hs: HeadShape) -> Tensor:
        """Signed distance to the head outline (cranium smoothly joined to the jaw)."""
        cx, cy, rx, ry = CRANIUM
        cranium = sdf.ellipse(x, y, cx + hs.dx, cy + hs.dy, rx, ry)
        jx, jy, jrx, jry = JAW
        jaw = sdf.ellipse(
            x, y, jx + hs.dx, jy + hs.dy + hs.jaw_drop * 0.5, jrx, jry + hs.jaw_drop * 0.5
        )
        return sdf.smooth_union(cranium, jaw, HEAD_BLEND)

    def draw_back(self, cv: Canvas, hs: HeadShape) -> None:
        """Hair behind the head, the chin shadow on the neck and the ears."""
        p = cv.whole()
        dx, dy = _shift(cv.pose, Z_BACK_HAIR)
        cx, cy, rx, ry = BACK_HAIR
        d = sdf.ellipse(p.x, p.y, cx + dx, cy + dy, rx, ry)
        # Soft bob: round off the straight cut at the bottom.
        cut = (p.y - (BACK_HAIR_BOTTOM + dy)).neg_()
        d = sdf.smooth_union(d.neg_(), cut, 0.06).neg_()
        a = sdf.fill(d, cv.aa)
        sdf.paint(p.img, a, self.c["hair"])
        _sheen(p, d, a, 0.06, dx + dy, self.c["hair_light"])
        # Darker towards the ends and the inside, where less light reaches.
        depth = sdf.smoothstep_(p.y.sub(-0.15 + dy).mul_(1.0 / 0.4)).mul_(a)
        sdf.paint(p.img, depth.mul_(0.75), self.c["hair_shadow"])

        self._chin_shadow(cv, hs)
        for side in (-1.0, 1.0):
            self._ear(cv, side)

    def _chin_shadow(self, cv: Canvas, hs: HeadShape) -> None:
        """Soft shadow the jaw casts onto the (static) neck."""
        p = cv.patch(-0.32, 0.32, 0.18, 0.62)
        if p is None:
            return
        jx, jy, jrx, jry = JAW
        d = sdf.ellipse(p.x, p.y, jx + hs.dx, jy + hs.dy + hs.jaw_drop + 0.045, jrx * 0.92, jry)
        a = sdf.soft(d, -0.02, 0.05).mul_(self.neck_mask[p.rows, p.cols])
        sdf.paint(p.img, a.mul_(0.6), self.c["skin_shadow"])

    def _ear(self, cv: Canvas, side: float) -> None:
        """One ear, tucked behind the head outline (drawn before the skin)."""
        cx, cy, rx, ry = EAR
        ex, ey = cv.pose.place(side * cx, cy, Z_EARS)
        p = cv.patch(ex - rx - 0.02, ex + rx + 0.02, ey - ry - 0.02, ey + ry + 0.02)
        if p is None:
            return
        d = sdf.ellipse(p.x, p.y, ex, ey, rx, ry)
        sdf.paint(p.img, sdf.fill(d, cv.aa), self.c["skin"])
        inner = sdf.ellipse(p.x, p.y, ex + side * 0.012, ey + 0.005, rx * 0.55, ry * 0.62)
        sdf.paint(p.img, sdf.soft(inner, -0.012, 0.012).mul_(0.55), self.c["skin_shadow"])

    def draw_skin(self, cv: Canvas, hs: HeadShape) -> Tensor:
        """Face skin with edge shading and a key light; returns the head coverage (h, w)."""
        p = cv.whole()
        d = self.head_distance(p.x, p.y, hs)
        a = sdf.fill(d, cv.aa)
        sdf.paint(p.img, a, self.c["skin"])
        # Rim darkening: the face curves away from the light near its outline.
        rim = sdf.soft(d, -0.13, 0.0).mul_(a)
        sdf.paint(p.img, rim.mul_(0.55), self.c["skin_shadow"])
        # Key light from the upper left, fixed in head space so it turns with the head.
        key = sdf.smoothstep_(torch.add(p.x * -1.6, p.y, alpha=-1.2).sub_(0.05)).mul_(a)
        sdf.paint(p.img, key.mul_(0.5), self.c["skin_light"])
        return a

    def draw_front(self, cv: Canvas, head_cov: Tensor) -> None:
        """Hair cap and swept fringe over the forehead, with the shadow they cast."""
        p = cv.patch(-0.48, 0.48, -0.64, 0.46)  # the cap, its parallax and its shadow
        if p is None:
            return
        rr = slice(p.rows.start - cv.r0, p.rows.stop - cv.r0)
        cc = slice(p.cols.start - cv.c0, p.cols.stop - cv.c0)
        head = head_cov[rr, cc]
        cdx, cdy = _shift(cv.pose, Z_FRONT_HAIR)
        fdx, fdy = _shift(cv.pose, Z_FRINGE)
        cx, cy, rx, ry = CAP
        cap = sdf.ellipse(p.x, p.y, cx + cdx, cy + cdy, rx, ry)
        wx, wy, wrx, wry = FACE_WINDOW
        window = sdf.ellipse(p.x, p.y, wx + fdx, wy + fdy, wrx * cv.pose.squash, wry)
        lock = _tilted_ellipse(p, FRINGE, fdx, fdy)
        d = torch.minimum(torch.maximum(cap, window.neg()), torch.maximum(lock, cap))
        # Distance from the visible skin (window minus fringe), measured into the hair.
        from_skin = torch.maximum(window, lock.neg_())

        # Shadow on the forehead just below the hairline.
        shadow = sdf.soft(d, 0.0, 0.05).mul_(head)
        sdf.paint(p.img, shadow.mul_(0.45), self.c["skin_shadow"])

        a = sdf.fill(d, cv.aa)
        sdf.paint(p.img, a, self.c["hair"])
        _sheen(p, cap, a, 0.07, cdx + cdy, self.c["hair_light"])
        # A few swept strands following the fringe, fading out at both ends.
        fade = sdf.smoothstep_((p.x - (fdx - 0.34)).mul_(1.0 / 0.14))
        fade.mul_(sdf.smoothstep_((p.x - (fdx + 0.22)).mul_(-1.0 / 0.16))).mul_(a)
        for radius, alpha, color in STRANDS:
            arc = length_from(p, STRAND_CENTER[0] + fdx, STRAND_CENTER[1] + fdy).sub_(radius)
            strand = sdf.fill(arc.abs_().sub_(0.003), cv.aa).mul_(fade)
            sdf.paint(p.img, strand.mul_(alpha), self.c[color])
        # The hair curls under where it meets the face: darker along that edge.
        edge = sdf.soft(from_skin, 0.0, 0.06).mul_(a)
        sdf.paint(p.img, edge.mul_(0.5), self.c["hair_shadow"])


def _sheen(p: Patch, d: Tensor, a: Tensor, inset: float, shift: float, color: Tensor) -> None:
    """Soft highlight band ``inset`` inside an outline, on the lit upper-left side."""
    band = (d + inset).abs_()
    lit = sdf.smoothstep_(torch.add(p.x * -1.4, p.y, alpha=-1.0).sub_(0.05 - shift))
    sheen = sdf.soft(band, 0.0, 0.035).mul_(lit).mul_(a)
    sdf.paint(p.img, sheen.mul_(0.6), color)


def _shift(pose: Pose, z: float) -> tuple[float, float]:
    """Parallax offset of a layer at depth z, measured at the face centre."""
    x, y = pose.place(0.0, 0.05, z)
    return x, y - 0.05


def _tilted_ellipse(p: Patch, e: tuple[float, ...], dx: float, dy: float) -> Tensor:
    """Distance to an ellipse rotated by e[4] radians (clockwise on screen)."""
    cx, cy, rx, ry, tilt = e
    c, s = math.cos(tilt), math.sin(tilt)
    u = p.x - (cx + dx)
    v = p.y - (cy + dy)
    ur = torch.add(u * c, v, alpha=s)
    vr = torch.add(v * c, u, alpha=-s)
    return sdf.ellipse(ur, vr, 0.0, 0.0, rx, ry)


def length_from(p: Patch, cx: float, cy: float) -> Tensor:
    """Distance of every pixel of ``p`` to a point."""
    return sdf.length(p.x - cx, p.y - cy)
