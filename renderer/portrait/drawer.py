"""PortraitDrawer: the motion vector warps one photo (a ``FrameDrawer``), frames batched.

Per frame, inside the rig's window (the only part of the frame that changes):

1. ``grid = base + pose_fields @ pose_coefs`` (one matmul), then the expressions' fields
   (a matmul per group), each stage read where the grid so far points (``grid_sample``);
2. eyelids: inside each eye, the grid is remapped so the lid's skin stretches down;
3. ``warped = grid_sample(photo, grid)`` (one call for the whole batch of one avatar);
4. the mouth's inside is painted where the lips have parted;
5. the window is pasted into the photo's uint8 copy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from renderer.frames.drawer import check_cancelled, resolve_device
from renderer.motion.space import MOTION_DIM
from renderer.portrait.raster import Box
from renderer.portrait.rig import NB, TABLE, Lid, Mouth, PortraitRig, build_rig

LID_OVERSHOOT = 0.6  # pixels: a closed lid reaches this far past the lower lid's edge


def _lookup(table: Tensor, u: Tensor) -> Tensor:
    """Linear interpolation of a (TABLE,) curve over u in [-1, 1]; any shape of u."""
    x = u.add(1.0).mul_((TABLE - 1) / 2.0).clamp_(0.0, TABLE - 1.001)
    i = x.floor()
    f = x.sub_(i)
    i = i.long()
    lo = table[i]
    return lo.add_(table[i + 1].sub_(lo).mul_(f))


def _lookup_many(tables: Tensor, u: Tensor) -> Tensor:
    """Several (k, TABLE) curves at once over u in [-1, 1] -> (k, *u.shape)."""
    x = u.add(1.0).mul_((TABLE - 1) / 2.0).clamp_(0.0, TABLE - 1.001)
    i = x.floor()
    f = x.sub_(i)
    i = i.long()
    lo = tables[:, i]  # (k, ...)
    return lo.add_(tables[:, i + 1].sub_(lo).mul_(f))


def _lookup_rows(tables: Tensor, u: Tensor) -> Tensor:
    """Per-item curves (n, TABLE) at u (n, h, w) -> (n, h, w)."""
    n = u.shape[0]
    x = u.add(1.0).mul_((TABLE - 1) / 2.0).clamp_(0.0, TABLE - 1.001).reshape(n, -1)
    i = x.floor()
    f = x - i
    i = i.long()
    lo = tables.gather(1, i)
    hi = tables.gather(1, i + 1)
    return lo.add_(hi.sub_(lo).mul_(f)).view_as(u)


def _to_pixels(rig: PortraitRig, grid: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised grid (n, h, w, 2) -> photo pixel x, y (n, h, w)."""
    px = grid[..., 0].add(1.0).mul_((rig.width - 1) / 2.0)
    py = grid[..., 1].add(1.0).mul_((rig.height - 1) / 2.0)
    return px, py


def _local(rig: PortraitRig, grid: Tensor, feat: Lid | Mouth) -> tuple[Tensor, Tensor]:
    """Feature-frame coordinates of where each grid point samples: u (half-widths), v (px)."""
    px, py = _to_pixels(rig, grid)
    dx, dy = px.sub_(feat.origin[0]), py.sub_(feat.origin[1])
    u = (dx * feat.ex[0]).add_(dy * feat.ex[1]).mul_(1.0 / feat.half_width)
    v = dx.mul_(feat.ey[0]).add_(dy.mul_(feat.ey[1]))
    return u, v


def frame_box(rig: PortraitRig, points: np.ndarray, margin: float) -> Box:
    """The window-relative box (clipped) around ``points`` (..., 2) frame pixels."""
    wy0, wy1, wx0, wx1 = rig.window
    flat = points.reshape(-1, 2)
    lo, hi = flat.min(0) - margin, flat.max(0) + margin
    return (
        int(np.clip(np.floor(lo[1]), wy0, wy1)) - wy0,
        int(np.clip(np.ceil(hi[1]) + 1, wy0, wy1)) - wy0,
        int(np.clip(np.floor(lo[0]), wx0, wx1)) - wx0,
        int(np.clip(np.ceil(hi[0]) + 1, wx0, wx1)) - wx0,
    )


def close_lids(rig: PortraitRig, grid: Tensor, lid: Lid, blink: Tensor, box: Box) -> None:
    """Remap ``grid`` (n, h, w, 2, the window's) in place inside one eye: the lid's edge
    (lashes) slides ``blink`` (n,) of the way down to the lower lid, and the band of lid
    skin above it stretches to follow, over the eye; only inside ``box``."""
    y0, y1, x0, x1 = box
    g = grid[:, y0:y1, x0:x1]
    u, v = _local(rig, g, lid)  # (n, h, w) where each pixel samples the photo
    top, bottom, skin = _lookup_many(lid.curves, u)
    lash = lid.lash
    drop = bottom.sub_(top).add_(LID_OVERSHOOT).mul_(blink.view(-1, 1, 1))  # lid travel
    edge = top + drop
    fold = edge - lash  # where the stretched skin meets the lashes
    outside = u.abs_() >= 1.0
    # Skin: [skin, fold) -> [skin, top - lash); lashes: [fold, edge] -> moved up by drop.
    stretch = (top - lash - skin).div_((fold - skin).clamp_(min=1e-3))
    dv_skin = (v - skin).mul_(stretch).add_(skin).sub_(v)
    dv = torch.where(v < fold, dv_skin, -drop)
    dv.masked_fill_((v < skin) | (v > edge) | outside, 0.0)
    g[..., 0].add_(dv * (lid.ey[0] * 2.0 / (rig.width - 1)))
    g[..., 1].add_(dv.mul_(lid.ey[1] * 2.0 / (rig.height - 1)))


def mouth_outline(rig: PortraitRig, rows: np.ndarray) -> tuple[Tensor, Tensor, Box]:
    """Where the lips' cut lies in each frame, from its rows' forward positions ``rows``
    (n, 22, 2): the output mouth frame (n, 6) = origin, ex, and its half-width; the
    opening's upper and lower edges sampled across the mouth (n, 2, TABLE), pixels below
    the frame's axis; the box holding it."""
    mo = rig.mouth
    up, low = rows[:, : len(mo.upper_ids)], rows[:, len(mo.upper_ids) :]
    c0, c1 = up[:, 0], up[:, -1]
    origin = (c0 + c1) / 2
    span = np.linalg.norm(c1 - c0, axis=1)  # (n,)
    ex = (c1 - c0) / np.maximum(span, 1e-6)[:, None]
    ey = np.stack([-ex[:, 1], ex[:, 0]], 1)
    hw = span / 2
    grid = np.linspace(-1.0, 1.0, TABLE)
    frame = np.concatenate([origin, ex, hw[:, None], np.zeros((len(up), 1))], 1)
    edges = np.empty((len(up), 2, TABLE))
    for k in range(len(up)):
        for j, row in enumerate((up[k], low[k])):
            d = row - origin[k]
            ru, rv = d @ ex[k] / hw[k], d @ ey[k]
            order = np.argsort(ru)
            edges[k, j] = np.interp(grid, ru[order], rv[order])
    edges[:, 1] = np.maximum(edges[:, 1], edges[:, 0])
    dev = rig.device
    return (
        torch.from_numpy(frame.astype(np.float32)).to(dev),
        torch.from_numpy(edges.astype(np.float32)).to(dev),
        frame_box(rig, np.concatenate([up, low], 1), 2.0),
    )


def paint_mouth(rig: PortraitRig, warped: Tensor, frame: Tensor, edges: Tensor, box: Box) -> None:
    """Paint the mouth's inside over ``warped`` (n, 3, h, w, the window's) in place, between
    the lips' edges of :func:`mouth_outline`: a dark cavity, upper teeth (unless the
    photo shows its own, which move with the lips) and a tongue."""
    mo = rig.mouth
    y0, y1, x0, x1 = box
    n = warped.shape[0]
    dx = mo.xs[x0:x1].view(1, 1, -1) - frame[:, 0].view(n, 1, 1)  # (n, 1, w)
    dy = mo.ys[y0:y1].view(1, -1, 1) - frame[:, 1].view(n, 1, 1)  # (n, h, 1)
    ex, ey = frame[:, 2].view(n, 1, 1), frame[:, 3].view(n, 1, 1)
    u = (dx * ex + dy * ey).div_(frame[:, 4].view(n, 1, 1))  # (n, h, w)
    v = dy * ex - dx * ey
    top = _lookup_rows(edges[:, 0], u)
    gap = _lookup_rows(edges[:, 1], u).sub_(top)  # (n, h, w) opening height, pixels
    y = v.sub_(top)  # pixels below the upper lip's edge
    u2 = u.square_()
    mask = (y + 0.5).clamp_(0.0, 1.0) * (gap - y + 0.5).clamp_(0.0, 1.0)
    mask.mul_(((gap - 1.0) * (1.0 / 1.5)).clamp_(0.0, 1.0)).mul_(u2 < 1.0)
    t = (y / gap.clamp(min=1.0)).clamp_(0.0, 1.0)
    # Cavity: darkest in the middle of the opening and towards the corners.
    mid = (t * 2.0 - 1.0).square_().neg_().add_(1.0)
    deep = (mid * 0.5 + u2 * 0.3 + (1.0 - t) * 0.3).clamp_(0.0, 1.0).unsqueeze(1)  # (n, 1, h, w)
    colour = mo.cavity.view(1, 3, 1, 1) + (mo.deep - mo.cavity).view(1, 3, 1, 1) * deep
    width = mo.mouth_width
    side = (1.0 - u2).clamp_(min=0.0)
    if mo.paint_teeth:
        # Upper teeth hang from the upper lip: shaded towards the corners and their tips,
        # in the lip's shadow at the top, with a faint gap between neighbours.
        teeth_h = torch.clamp(gap * 0.28, max=0.075 * width) * side.sqrt()
        teeth = (teeth_h - y + 0.5).clamp_(0.0, 1.0) * ((gap - 2.0) * 0.5).clamp_(0.0, 1.0)
        teeth.mul_((1.15 - u2).clamp_(0.0, 1.0))
        down = (y / teeth_h.clamp(min=1.0)).clamp_(0.0, 1.0)
        gaps = (u.abs() * 4.0 + 0.5).frac_().sub_(0.5).abs_().mul_(-12.5).add_(1.0).clamp_(min=0.0)
        shade = (1.0 - 0.55 * u2) * (1.0 - 0.18 * down) * (1.0 - 0.25 * gaps)
        shade.mul_(1.0 - 0.35 * (1.0 - y.clamp(0.0, 2.0) * 0.5))  # under the lip
        tc = mo.teeth.view(1, 3, 1, 1) * shade.unsqueeze(1)
        colour = colour + (tc - colour) * teeth.unsqueeze(1)
    tongue_h = torch.clamp(gap * 0.3, max=0.12 * width) * side
    below = y - (gap - tongue_h)  # pixels into the tongue
    tongue = (below + 0.5).clamp_(0.0, 1.0) * ((gap - 4.0) * 0.25).clamp_(0.0, 1.0)
    lit = 1.0 - (below / tongue_h.clamp(min=1.0)).clamp_(0.0, 1.0) * 0.5
    tongue_c = mo.tongue.view(1, 3, 1, 1) * lit.unsqueeze(1)
    colour = colour + (tongue_c - colour) * tongue.unsqueeze(1)
    win = warped[:, :, y0:y1, x0:x1]
    win.add_((colour - win).mul_(mask.unsqueeze(1)))


class PortraitDrawer:
    """Draws one portrait avatar for a motion vector (a ``FrameDrawer``); thread-safe."""

    def __init__(self, rig: PortraitRig) -> None:
        self.rig = rig
        self.width, self.height, self.device = rig.width, rig.height, rig.device
        self._lock = threading.Lock()
        self._buffers: dict[tuple[int, ...], Tensor] = {}  # expression fields, per rig, n, stage

    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        """Draw one frame: (MOTION_DIM,) float motion -> (H, W, 3) contiguous uint8 RGB."""
        m = np.asarray(motion, dtype=np.float32)
        if m.shape != (MOTION_DIM,):
            raise ValueError(f"motion must have shape ({MOTION_DIM},), got {m.shape}")
        return self.render_batch(m[None], cancel=cancel)[0]

    def render_batch(
        self,
        motions: np.ndarray,
        rigs: Sequence[PortraitRig] | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """(B, MOTION_DIM) motion, one rig per row (default: this drawer's) -> (B, H, W, 3)
        uint8. Rows of the same rig are drawn as one batch."""
        m = np.asarray(motions, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] != MOTION_DIM:
            raise ValueError(f"motions must have shape (B, {MOTION_DIM}), got {m.shape}")
        if not np.all(np.isfinite(m)):
            raise ValueError("motion contains NaN or infinite values")
        rigs = [self.rig] * len(m) if rigs is None else list(rigs)
        if len(rigs) != len(m):
            raise ValueError(f"{len(m)} motions but {len(rigs)} avatars")
        if any((r.width, r.height) != (self.width, self.height) for r in rigs):
            raise ValueError(f"every avatar must be rigged at {self.width}x{self.height}")
        with self._lock, torch.inference_mode():
            out = torch.empty(
                (len(m), self.height, self.width, 3), dtype=torch.uint8, device=self.device
            )
            by_rig: dict[int, list[int]] = {}
            for i, r in enumerate(rigs):
                by_rig.setdefault(id(r), []).append(i)
            for rows in by_rig.values():
                self._draw(rigs[rows[0]], m[rows], out, rows, cancel)
            return out.cpu().numpy()

    def _draw(
        self,
        rig: PortraitRig,
        motion: np.ndarray,
        out: Tensor,
        rows: list[int],
        cancel: threading.Event | None,
    ) -> None:
        """Draw ``motion`` (n, D) of one rig into ``out[rows]``."""
        n = len(motion)
        dev = rig.device
        coef_np = rig.coefficients(motion)  # (n, NB + 6)
        coefs = torch.from_numpy(coef_np.astype(np.float32)).to(dev)
        y0, y1, x0, x1 = rig.window
        h, w = y1 - y0, x1 - x0
        grid = self._warp(rig, motion, coefs, coef_np)  # (n, h, w, 2)
        check_cancelled(cancel)
        # Forward positions of the eyes' and mouth's outlines (one call for all).
        marks = rig.vertices(motion, rig.mark_ids)  # (n, M, 2)
        for k, lid in enumerate(rig.lids):
            blink = coef_np[:, lid.channel]
            if (blink > 1e-3).any():
                around = marks[:, rig.mark_slices[k]]
                box = frame_box(rig, around, 0.3 * lid.half_width + 2.0)
                close_lids(rig, grid, lid, coefs[:, lid.channel], box)
        photo = rig.photo.expand(n, -1, -1, -1)
        warped = F.grid_sample(
            photo, grid, mode="bilinear", padding_mode="border", align_corners=True
        )
        check_cancelled(cancel)
        if (coef_np[:, :NB] @ rig.mouth.opening > 0.5).any():
            paint_mouth(rig, warped, *mouth_outline(rig, marks[:, rig.mark_slices[-1]]))
        planes = warped.add_(0.5).clamp_(0.0, 255.0).to(torch.uint8)  # (n, 3, h, w)
        whole = (h, w) == (rig.height, rig.width)
        for k, row in enumerate(rows):
            # Interleave the three planes: stack is much faster than a permuted copy on CPU.
            if whole:
                torch.stack((planes[k, 0], planes[k, 1], planes[k, 2]), -1, out=out[row])
            else:
                out[row].copy_(rig.photo_u8)
                out[row, y0:y1, x0:x1] = torch.stack((planes[k, 0], planes[k, 1], planes[k, 2]), -1)

    def _warp(
        self, rig: PortraitRig, motion: np.ndarray, coefs: Tensor, coef_np: np.ndarray
    ) -> Tensor:
        """The window's sampling grid (n, h, w, 2), normalised: head pose, then expressions."""
        y0, y1, x0, x1 = rig.window
        n = len(motion)
        grid = torch.addmm(rig.base, coefs[:, NB:], rig.pose.fields).view(n, y1 - y0, x1 - x0, 2)
        if coef_np[:, :NB].any():
            self._express(rig, grid, coefs, coef_np, motion)
        return grid

    def sampling_grid(self, motion: np.ndarray) -> np.ndarray:
        """(H, W, 2) where each frame pixel samples the photo (x, y pixels) for ``motion``,
        before the eyelids (which cover, not warp) and the mouth's inside are drawn."""
        rig = self.rig
        m = np.asarray(motion, np.float32)[None]
        with self._lock, torch.inference_mode():
            coef_np = rig.coefficients(m)
            coefs = torch.from_numpy(coef_np.astype(np.float32)).to(rig.device)
            px, py = _to_pixels(rig, self._warp(rig, m, coefs, coef_np))
            y0, y1, x0, x1 = rig.window
            ys, xs = torch.meshgrid(
                torch.arange(rig.height, dtype=torch.float32),
                torch.arange(rig.width, dtype=torch.float32),
                indexing="ij",
            )
            out = torch.stack([xs, ys], -1)
            out[y0:y1, x0:x1] = torch.stack([px[0], py[0]], -1).cpu()
            return out.numpy()

    def _express(
        self, rig: PortraitRig, grid: Tensor, coefs: Tensor, coef_np: np.ndarray, motion: np.ndarray
    ) -> None:
        """Add the expression fields to ``grid`` (n, h, w, 2), stage by stage, each read where
        the warp so far takes a pixel (the features move with the head, so must their
        motion; the jaw's squeeze into the lips' cut comes last, so nothing folds it)."""
        n = grid.shape[0]
        angles = np.clip(motion[:, NB : NB + 3], -rig.pose_limit, rig.pose_limit)
        reach = float(np.abs(rig.head.displacement(angles, rig.face_ids)).max()) + 2.0
        wy1, wx1 = grid.shape[1:3]
        for k, stage in enumerate(rig.stages):
            active = [g for g in stage.groups if coef_np[:, list(g.coefs)].any()]
            if not active:
                continue
            sy0, sy1, sx0, sx1 = stage.box
            key = (id(rig), n, k, sy1 - sy0, sx1 - sx0)
            field = self._buffers.get(key)
            if field is None:
                field = torch.zeros((n, sy1 - sy0, sx1 - sx0, 2), device=grid.device)
                self._buffers[key] = field
            else:
                field.zero_()
            for group in active:
                gy0, gy1, gx0, gx1 = group.box
                part = coefs[:, list(group.coefs)] @ group.fields  # (n, h * w * 2)
                field[:, gy0:gy1, gx0:gx1].add_(part.view(n, gy1 - gy0, gx1 - gx0, 2))
            # Only the pixels the warp so far can take into this stage's box.
            r = math.ceil(reach)
            ry0, ry1 = max(0, sy0 - r), min(wy1, sy1 + r)
            rx0, rx1 = max(0, sx0 - r), min(wx1, sx1 + r)
            sub = grid[:, ry0:ry1, rx0:rx1]  # (n, hr, wr, 2)
            at = torch.addcmul(stage.affine[1], sub, stage.affine[0])  # in the field's own units
            moved = F.grid_sample(field.permute(0, 3, 1, 2), at, align_corners=True)
            sub.add_(moved.permute(0, 2, 3, 1))  # (n, hr, wr, 2)
            reach += stage.spread


def portrait_drawer(
    image: np.ndarray,
    landmarks: np.ndarray,
    width: int,
    height: int,
    device: str = "auto",
    name: str = "",
) -> PortraitDrawer:
    """A drawer for a photo and its 468 landmarks (see :func:`renderer.portrait.rig.build_rig`)."""
    rig = build_rig(image, landmarks, width, height, resolve_device(device), name)
    return PortraitDrawer(rig)


def load_portrait_drawer(
    avatars_dir: Path, name: str, width: int, height: int, device: str = "auto"
) -> PortraitDrawer:
    """The drawer of the avatar ``name`` stored in ``avatars_dir``."""
    from renderer.portrait.avatar import load_avatar

    avatar = load_avatar(avatars_dir, name)
    return portrait_drawer(avatar.image, avatar.landmarks, width, height, device, name)
