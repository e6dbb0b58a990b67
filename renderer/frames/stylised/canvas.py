"""Pixel grid, head pose transform and the per-frame drawing canvas.

Coordinates: "frame units" have y pointing down and the short side spanning about
[-1, 1] (see ZOOM and CENTER_Y for the exact framing). "Head space" is frame space rotated by the
head roll about the neck pivot and shifted by the head's translation, so every
feature can be drawn upright; yaw and pitch are handled by :class:`Pose` as a
per-feature parallax shift (see ``pose.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from renderer.frames.stylised.pose import Pose

#: Framing of the portrait: head-and-shoulders zoom and the frame-unit y at the image centre.
ZOOM = 1.15
CENTER_Y = 0.075


class FrameGrid:
    """Pixel-centre coordinates of one frame size, as separable row/column vectors."""

    def __init__(self, width: int, height: int, device: torch.device) -> None:
        self.width = width
        self.height = height
        self.unit = min(width, height) / 2.0 * ZOOM  # pixels per frame unit
        self.px = 1.0 / self.unit  # one pixel in frame units
        cols = torch.arange(width, dtype=torch.float32, device=device)
        rows = torch.arange(height, dtype=torch.float32, device=device)
        self.xs = (cols + 0.5 - width / 2.0) / self.unit  # (W,)
        self.ys = (rows + 0.5 - height / 2.0) / self.unit + CENTER_Y  # (H,)

    def full(self) -> tuple[Tensor, Tensor]:
        """Dense (H, W) x and y coordinate maps (for static layers built once)."""
        x = self.xs.view(1, -1).expand(self.height, self.width).contiguous()
        y = self.ys.view(-1, 1).expand(self.height, self.width).contiguous()
        return x, y

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        """Frame units -> (column, row) in pixels."""
        return x * self.unit + self.width / 2.0, (y - CENTER_Y) * self.unit + self.height / 2.0


class HeadTransform:
    """Roll about the neck pivot plus translation: maps head space <-> frame space."""

    def __init__(self, pose: Pose) -> None:
        self.c = math.cos(pose.roll)
        self.s = math.sin(pose.roll)
        self.px, self.py = pose.pivot
        self.tx, self.ty = pose.shift

    def to_frame(self, qx: float, qy: float) -> tuple[float, float]:
        """Head-space point -> frame units (rotation is clockwise on screen for roll > 0)."""
        dx, dy = qx - self.px, qy - self.py
        return (
            self.px + self.tx + self.c * dx - self.s * dy,
            self.py + self.ty + self.s * dx + self.c * dy,
        )

    def coords(self, grid: FrameGrid, rows: slice, cols: slice) -> tuple[Tensor, Tensor]:
        """Head-space (x, y) maps (h, w) of a pixel window; one broadcast add per map."""
        xs = grid.xs[cols] - (self.px + self.tx)  # (w,)
        ys = grid.ys[rows] - (self.py + self.ty)  # (h,)
        # Inverse rotation R(-roll): qx = c*dx + s*dy, qy = -s*dx + c*dy.
        qx = torch.add((xs * self.c + self.px).view(1, -1), (ys * self.s).view(-1, 1))
        qy = torch.add((xs * -self.s).view(1, -1), (ys * self.c + self.py).view(-1, 1))
        return qx, qy  # (h, w) each

    def pixel_box(
        self, grid: FrameGrid, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[int, int, int, int]:
        """Pixel bounds (r0, r1, c0, c1), clipped to the frame, of a head-space rectangle."""
        corners = [self.to_frame(x, y) for x in (x0, x1) for y in (y0, y1)]
        cols = [grid.to_pixel(x, y)[0] for x, y in corners]
        rows = [grid.to_pixel(x, y)[1] for x, y in corners]
        # One pixel of slack on every side so anti-aliased edges are never cut.
        c0 = max(0, math.floor(min(cols)) - 1)
        c1 = min(grid.width, math.ceil(max(cols)) + 1)
        r0 = max(0, math.floor(min(rows)) - 1)
        r1 = min(grid.height, math.ceil(max(rows)) + 1)
        return r0, r1, c0, c1


@dataclass
class Patch:
    """A window of the canvas: image view plus head-space coordinates of its pixels."""

    img: Tensor  # (3, h, w) view into the frame being drawn
    x: Tensor  # (h, w) head-space x
    y: Tensor  # (h, w) head-space y
    rows: slice  # absolute frame rows, to index static full-frame maps
    cols: slice  # absolute frame columns


class Canvas:
    """The dynamic window of one frame: everything the head touches is drawn in here."""

    def __init__(self, grid: FrameGrid, img: Tensor, pose: Pose, box: tuple[int, ...]) -> None:
        self.grid = grid
        self.pose = pose
        self.transform = HeadTransform(pose)
        self.r0, self.r1, self.c0, self.c1 = box
        rows, cols = slice(self.r0, self.r1), slice(self.c0, self.c1)
        self.img = img  # (3, h, w) of the window
        self.x, self.y = self.transform.coords(grid, rows, cols)  # (h, w) each
        self.aa = grid.px  # anti-aliasing half-width in head units (no scaling in head space)

    def whole(self) -> Patch:
        """The whole window as a patch."""
        return Patch(self.img, self.x, self.y, slice(self.r0, self.r1), slice(self.c0, self.c1))

    def patch(self, x0: float, x1: float, y0: float, y1: float) -> Patch | None:
        """Sub-window covering a head-space rectangle, or None when it is off the canvas."""
        r0, r1, c0, c1 = self.transform.pixel_box(self.grid, x0, x1, y0, y1)
        r0, r1 = max(r0, self.r0), min(r1, self.r1)
        c0, c1 = max(c0, self.c0), min(c1, self.c1)
        if r1 <= r0 or c1 <= c0:
            return None
        rr = slice(r0 - self.r0, r1 - self.r0)
        cc = slice(c0 - self.c0, c1 - self.c0)
        return Patch(
            self.img[:, rr, cc], self.x[rr, cc], self.y[rr, cc], slice(r0, r1), slice(c0, c1)
        )
