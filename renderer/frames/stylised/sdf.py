"""Signed-distance primitives and coverage helpers for the procedural face.

Distances are negative inside a shape and measured in the same units as the
coordinates. All functions take (h, w) coordinate tensors and python-float shape
parameters, so the per-frame cost is a handful of elementwise kernels per shape.
"""

from __future__ import annotations

import torch
from torch import Tensor


def length(x: Tensor, y: Tensor) -> Tensor:
    """Euclidean norm of (x, y); cheaper than torch.hypot on CPU."""
    return torch.addcmul(x * x, y, y).sqrt_()


def smoothstep_(t: Tensor) -> Tensor:
    """In place: clamp ``t`` to [0, 1] and apply the cubic smoothstep."""
    t.clamp_(0.0, 1.0)
    s = t.mul(-2.0).add_(3.0)
    return s.mul_(t).mul_(t)


def fill(d: Tensor, aa: float) -> Tensor:
    """Anti-aliased coverage in [0, 1] of the region ``d < 0``; the edge spans ``2 * aa``."""
    # t goes 0 -> 1 as d goes +aa -> -aa; smoothstep makes the ramp look like a box filter.
    return smoothstep_(d.mul(-0.5 / aa).add_(0.5))


def soft(d: Tensor, inner: float, outer: float) -> Tensor:
    """Coverage that is 1 for ``d <= inner`` and fades smoothly to 0 at ``d >= outer``."""
    return smoothstep_(d.sub(outer).mul_(1.0 / (inner - outer)))


def circle(u: Tensor, v: Tensor, cx: float, cy: float, r: float) -> Tensor:
    """Distance to a circle of radius ``r`` centred at (cx, cy)."""
    return length(u - cx, v - cy).sub_(r)


def ellipse(u: Tensor, v: Tensor, cx: float, cy: float, rx: float, ry: float) -> Tensor:
    """Approximate distance to an axis-aligned ellipse (exact on the boundary's normal)."""
    return ellipse2(u, v, cx, cy, rx, ry, ry)


def ellipse2(
    u: Tensor, v: Tensor, cx: float, cy: float, rx: float, ry_top: float, ry_bottom: float
) -> Tensor:
    """Approximate distance to an egg made of two half-ellipses sharing ``rx``.

    ``ry_top`` is the half-height above the centre (smaller y), ``ry_bottom`` below it.
    Uses the first-order estimate d = k0 (k0 - 1) / k1 with k0 = |p / r|, k1 = |p / r^2|.
    """
    a = (u - cx).mul_(1.0 / rx)  # (h, w) u / rx
    dv = v - cy
    if ry_top == ry_bottom:
        b = dv.mul_(1.0 / ry_top)  # (h, w) v / ry
        b2 = b * (1.0 / ry_top)
    else:
        # Piecewise radius: the negative half of dv uses ry_top, the positive half ry_bottom.
        neg = dv.clamp(max=0.0)
        pos = dv.clamp_(min=0.0)
        b = torch.add(neg * (1.0 / ry_top), pos, alpha=1.0 / ry_bottom)
        b2 = torch.add(neg.mul_(1.0 / ry_top**2), pos, alpha=1.0 / ry_bottom**2)
    k0 = length(a, b)
    k1 = length(a.mul_(1.0 / rx), b2).clamp_min_(1e-6)
    return k0.sub(1.0).mul_(k0).div_(k1)


def segment(
    u: Tensor, v: Tensor, ax: float, ay: float, bx: float, by: float
) -> tuple[Tensor, Tensor]:
    """Distance to the segment a-b and the projection parameter h in [0, 1] along it."""
    bax, bay = bx - ax, by - ay
    inv = 1.0 / max(bax * bax + bay * bay, 1e-12)
    pax = u - ax
    pay = v - ay
    h = torch.add(pax * (bax * inv), pay, alpha=bay * inv).clamp_(0.0, 1.0)
    dist = length(pax.sub_(h * bax), pay.sub_(h * bay))
    return dist, h


def smooth_union(a: Tensor, b: Tensor, k: float) -> Tensor:
    """Polynomial smooth minimum of two distances with blend radius ``k``."""
    h = (b - a).mul_(0.5 / k).add_(0.5).clamp_(0.0, 1.0)
    out = torch.lerp(b, a, h)
    return out.sub_(h.mul(h.neg().add_(1.0)).mul_(k))


def paint(img: Tensor, alpha: Tensor, color: Tensor) -> None:
    """Composite ``color`` (3, 1, 1) or (3, h, w) over ``img`` (3, h, w) with coverage (h, w)."""
    img.lerp_(color, alpha)
