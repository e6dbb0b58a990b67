"""Rasterising a deformed mesh: per-vertex values interpolated at every pixel it covers.

This turns a forward displacement of the mesh's vertices into the backward field a warp
samples with: at each output pixel, barycentric interpolation over the *deformed* triangle
that covers it of (rest - deformed) gives where in the photo that pixel comes from.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # y0, y1, x0, x1: rows y0..y1-1, columns x0..x1-1


def rasterize(
    points: np.ndarray, triangles: np.ndarray, values: np.ndarray, box: Box, *, still: float = 0.02
) -> np.ndarray:
    """Interpolate ``values`` (V, K) over the mesh ``points`` (V, 2) at the pixels of ``box``.

    Returns (y1 - y0, x1 - x0, K) float32; pixels covered only by triangles whose values are
    all below ``still`` (or by none) are 0. Vectorised: every pair (triangle, pixel of its
    bounding box) is tested at once.
    """
    y0, y1, x0, x1 = box
    k = values.shape[1]
    out = np.zeros((y1 - y0, x1 - x0, k), np.float32)
    moving = np.abs(values).max(1) > still  # (V,)
    tri = triangles[moving[triangles].any(1)]
    if not len(tri):
        return out
    pts = points[tri]  # (T, 3, 2)
    lo = np.floor(pts.min(1)).astype(np.int64)  # (T, 2) x, y
    hi = np.ceil(pts.max(1)).astype(np.int64)
    lo = np.maximum(lo, [x0, y0])
    hi = np.minimum(hi, [x1 - 1, y1 - 1])
    size = np.clip(hi - lo + 1, 0, None)  # (T, 2)
    count = size[:, 0] * size[:, 1]
    keep = count > 0
    tri, pts, lo, size, count = tri[keep], pts[keep], lo[keep], size[keep], count[keep]
    ti = np.repeat(np.arange(len(tri)), count)  # (N,)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    px = lo[ti, 0] + local % size[ti, 0]
    py = lo[ti, 1] + local // size[ti, 0]
    a, b, c = pts[ti, 0], pts[ti, 1], pts[ti, 2]  # (N, 2)
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    ok = np.abs(area) > 1e-9
    area = np.where(ok, area, 1.0)
    l1 = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (py - a[:, 1]) * (c[:, 0] - a[:, 0])) / area
    l2 = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (b[:, 1] - a[:, 1]) * (px - a[:, 0])) / area
    l0 = 1.0 - l1 - l2
    eps = 1e-6
    inside = ok & (l0 >= -eps) & (l1 >= -eps) & (l2 >= -eps)
    t = tri[ti[inside]]  # (M, 3)
    lam = np.stack([l0[inside], l1[inside], l2[inside]], 1)  # (M, 3)
    vals = np.einsum("mj,mjk->mk", lam, values[t])  # (M, K)
    out[py[inside] - y0, px[inside] - x0] = vals
    return out


def backward_field(
    rest: np.ndarray, moved: np.ndarray, triangles: np.ndarray, box: Box
) -> np.ndarray:
    """(h, w, 2) float32: for each pixel of ``box`` in the deformed frame, the offset to the
    photo point it shows (0 where nothing moved)."""
    return rasterize(moved, triangles, rest - moved, box)


def support(field: np.ndarray, eps: float = 0.05) -> Box | None:
    """The smallest box (within the field's own) holding all of its non-zero pixels."""
    nz = np.abs(field).max(-1) > eps
    if not nz.any():
        return None
    rows, cols = np.flatnonzero(nz.any(1)), np.flatnonzero(nz.any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
