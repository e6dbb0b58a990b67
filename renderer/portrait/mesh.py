"""The portrait's triangle mesh: every pixel of the frame lies in exactly one triangle.

Vertices are the face landmarks, a cut along the lips (two rows of seam vertices that
coincide at rest, so the lips can part), three rings around the face (hair, ears, neck)
and points on the frame's border. Everything outside the lips' outer contour is a
Delaunay triangulation; the lips are strips made by hand between their outer and inner
contours, and the gap between the inner contours is three more strips (upper teeth, the
cut, lower teeth). The landmarks inside the lips are left out: in a smile their rows
nearly coincide, and the lips move as two pieces anyway.

Coordinates are pixel indices of the output frame: pixel (row i, column j) is the point
(x=j, y=i); ``y`` points down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as PolyPath
from scipy.spatial import ConvexHull, Delaunay

from renderer.portrait.landmarks import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LIPS_INNER,
    LIPS_OUTER,
    RIGHT_BROW,
    RIGHT_EYE,
)

#: Inner lip contours, corner (78) to corner (308): upper and lower edge of the mouth's gap.
UPPER_INNER = (78, *LIPS_INNER[:10:-1], 308)
LOWER_INNER = LIPS_INNER[:11]
#: Outer lip contours, corner (61) to corner (291).
UPPER_OUTER = (61, *LIPS_OUTER[:10:-1], 291)
LOWER_OUTER = LIPS_OUTER[:11]
#: Where the lips part inside the photo's own gap (0: upper lip's edge, 1: lower's); teeth
#: shown in the photo above this line stay with the upper lip.
SEAM_SPLIT = 0.6
SEAM_HALF = 0.25  # pixels: the cut's half-thickness at rest
#: Rings around the face oval: its radius from the face centre times (up/sides, down).
RINGS = ((1.3, 1.5), (1.65, 2.0), (2.05, 2.6))
KIND_LANDMARK, KIND_SEAM_UP, KIND_SEAM_LOW, KIND_BORDER, KIND_UNUSED = -1, -2, -3, -4, -5
KIND_THINNED = -6  # a landmark too close to another to be a vertex (tiny triangles fold)
#: Landmarks always kept as vertices (the features the shapes move, and the face's outline).
KEEP = frozenset(
    (
        *FACE_OVAL,
        *LIPS_OUTER,
        *LIPS_INNER,
        *RIGHT_EYE,
        *LEFT_EYE,
        *RIGHT_BROW[0],
        *RIGHT_BROW[1],
        *LEFT_BROW[0],
        *LEFT_BROW[1],
        1,
        4,
        5,
        6,
        168,
        195,
        197,
        98,
        327,
        64,
        294,
        152,
        10,
    )
)
THIN = 0.035  # face units (eye-corner distance): closest two other landmarks may be
# (rings are 0, 1, 2)


@dataclass(frozen=True)
class MouthFrame:
    """The mouth's axes at rest: origin between the inner corners, ``ex`` corner to corner."""

    origin: np.ndarray  # (2,)
    ex: np.ndarray  # (2,) unit, towards landmark 308 (the subject's left)
    ey: np.ndarray  # (2,) unit, down the face
    half_width: float  # pixels, centre to inner corner

    def local(self, p: np.ndarray) -> np.ndarray:
        """(N, 2) pixels -> (N, 2) (u, v): u in half-widths, v in pixels below the line."""
        d = p - self.origin
        return np.stack([d @ self.ex / self.half_width, d @ self.ey], -1)


@dataclass(frozen=True)
class Mesh:
    """Rest geometry: vertex positions, depths, triangles and what each vertex is."""

    points: np.ndarray  # (V, 2) float64, pixels
    depth: np.ndarray  # (V,) float64, pixels, larger is further from the camera
    triangles: np.ndarray  # (T, 3) int64, positive signed area at rest
    kind: np.ndarray  # (V,) int: KIND_* or the ring number
    seam_upper: np.ndarray  # (11,) vertex ids, corner to corner (corners shared)
    seam_lower: np.ndarray  # (11,)
    cut: np.ndarray  # (T,) bool: triangles of the cut (their edges join the two lips)
    mouth: MouthFrame


def signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(T,) signed areas of ``triangles`` over ``points`` (..., V, 2); > 0 keeps orientation."""
    a, b, c = (points[..., triangles[:, k], :] for k in range(3))
    ab, ac = b - a, c - a
    return 0.5 * (ab[..., 0] * ac[..., 1] - ab[..., 1] * ac[..., 0])


def mouth_frame(lm: np.ndarray) -> MouthFrame:
    """The mouth's frame from (468, 2) landmark pixels."""
    c0, c1 = lm[UPPER_INNER[0]], lm[UPPER_INNER[-1]]
    ex = (c1 - c0) / max(float(np.linalg.norm(c1 - c0)), 1e-6)
    return MouthFrame(
        (c0 + c1) / 2, ex, np.array([-ex[1], ex[0]]), float(np.linalg.norm(c1 - c0)) / 2
    )


def _seam(lm: np.ndarray, mf: MouthFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner lip rows pushed apart where they touch, and the two rows of the cut between."""
    up, low = lm[list(UPPER_INNER)].copy(), lm[list(LOWER_INNER)].copy()
    # The inner corners a little inside the outer ones (a closed mouth has them together).
    inset = 0.08 * mf.half_width
    for inner, outer, side in ((0, 61, 1.0), (-1, 291, -1.0)):
        short = inset - side * float((up[inner] - lm[outer]) @ mf.ex)
        if short > 0:
            up[inner] += side * short * mf.ex
            low[inner] = up[inner]
    need = 2 * SEAM_HALF + 0.6  # room for the strips on both sides of the cut
    gap = (low[1:-1] - up[1:-1]) @ mf.ey  # (9,)
    push = np.clip(need - gap, 0.0, None)[:, None] / 2 * mf.ey
    up[1:-1] -= push
    low[1:-1] += push
    mid = up[1:-1] + SEAM_SPLIT * (low[1:-1] - up[1:-1])
    return up, low, np.stack([mid - SEAM_HALF * mf.ey, mid + SEAM_HALF * mf.ey])


def _rings(lm: np.ndarray, z: np.ndarray, down: np.ndarray, w: int, h: int) -> tuple:
    """Ring points around the face oval (inside the frame) with their ring number and depth."""
    oval = lm[list(FACE_OVAL)]
    centre = oval.mean(0)
    d = oval - centre
    downness = np.clip((d @ down) / np.linalg.norm(d, axis=1), 0.0, 1.0) ** 2
    back = float(z[list(FACE_OVAL)].mean())
    margin = 0.02 * min(w, h)
    pts, kinds, depths = [], [], []
    for k, (side, below) in enumerate(RINGS):
        scale = side + (below - side) * downness  # (36,)
        ring = centre + d * scale[:, None]
        inside = (
            (ring[:, 0] > margin)
            & (ring[:, 0] < w - 1 - margin)
            & (ring[:, 1] > margin)
            & (ring[:, 1] < h - 1 - margin)
        )
        t = (k + 1) / len(RINGS)
        pts.append(ring[inside])
        kinds.append(np.full(int(inside.sum()), k))
        depths.append((1 - t) * z[list(FACE_OVAL)][inside] + t * back)
    return np.concatenate(pts), np.concatenate(kinds), np.concatenate(depths)


def _border(w: int, h: int) -> np.ndarray:
    """Points along the frame's edges, corners included, about every eighth of a side."""
    xs = np.linspace(0, w - 1, 9)
    ys = np.linspace(0, h - 1, 9)[1:-1]
    top = np.stack([xs, np.zeros_like(xs)], 1)
    bottom = np.stack([xs, np.full_like(xs, h - 1)], 1)
    left = np.stack([np.zeros_like(ys), ys], 1)
    right = np.stack([np.full_like(ys, w - 1), ys], 1)
    return np.concatenate([top, bottom, left, right])


def build_mesh(landmarks: np.ndarray, width: int, height: int) -> Mesh:
    """The mesh of a face: ``landmarks`` (468, 3) in output pixels (x, y, depth)."""
    lm = landmarks[:, :2].astype(np.float64).copy()
    z = landmarks[:, 2].astype(np.float64)
    mf = mouth_frame(lm)
    up, low, (su, sl) = _seam(lm, mf)
    lm[list(UPPER_INNER)] = up
    lm[list(LOWER_INNER)] = low
    face_down = np.array([-(lm[263] - lm[33])[1], (lm[263] - lm[33])[0]])
    ring_pts, ring_kind, ring_z = _rings(lm, z, face_down, width, height)
    border = _border(width, height)
    n_lm, n_seam = len(lm), len(su)
    points = np.concatenate([lm, su, sl, ring_pts, border])
    kind = np.concatenate(
        [
            np.full(n_lm, KIND_LANDMARK),
            np.full(n_seam, KIND_SEAM_UP),
            np.full(n_seam, KIND_SEAM_LOW),
            ring_kind,
            np.full(len(border), KIND_BORDER),
        ]
    )
    seam_z = (z[list(UPPER_INNER[1:-1])] + z[list(LOWER_INNER[1:-1])]) / 2
    depth = np.concatenate(
        [z, seam_z, seam_z, ring_z, np.full(len(border), ring_z.max() if len(ring_z) else z.max())]
    )
    ids_su = np.arange(n_lm, n_lm + n_seam)
    ids_sl = ids_su + n_seam
    seam_upper = np.array([UPPER_INNER[0], *ids_su, UPPER_INNER[-1]])
    seam_lower = np.array([LOWER_INNER[0], *ids_sl, LOWER_INNER[-1]])

    # Delaunay outside the lips' outer contour; the lips and their gap as strips.
    lips = PolyPath(lm[[*UPPER_OUTER, *LOWER_OUTER[-2:0:-1]]])
    outline = np.array([*UPPER_OUTER, *LOWER_OUTER])
    inner_lips = lips.contains_points(lm) & ~np.isin(np.arange(n_lm), outline)
    kind[:n_lm][inner_lips] = KIND_UNUSED
    kind[list(UPPER_INNER) + list(LOWER_INNER)] = KIND_LANDMARK
    _thin(lm, kind)
    outside = np.flatnonzero((kind != KIND_UNUSED) & (kind != KIND_THINNED))
    outside = outside[~np.isin(outside, [*UPPER_INNER, *LOWER_INNER, *ids_su, *ids_sl])]
    tri = outside[Delaunay(points[outside]).simplices]
    on_outline = np.isin(tri, outline).all(1)
    tri = tri[~(on_outline & lips.contains_points(points[tri].mean(1)))]
    strips, strip_cut = _gap_strips(
        points,
        np.array(UPPER_OUTER),
        np.array(UPPER_INNER),
        seam_upper,
        seam_lower,
        np.array(LOWER_INNER),
        np.array(LOWER_OUTER),
    )
    triangles = np.concatenate([tri, strips])
    cut = np.concatenate([np.zeros(len(tri), bool), strip_cut])
    flip = signed_areas(points, triangles) < 0
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    _check(points, triangles)
    return Mesh(points, depth, triangles.astype(np.int64), kind, seam_upper, seam_lower, cut, mf)


def _thin(lm: np.ndarray, kind: np.ndarray) -> None:
    """Mark landmarks (not in KEEP) closer than THIN face units to a kept one as thinned."""
    iod = float(np.linalg.norm(lm[263] - lm[33]))
    kept = [i for i in range(len(lm)) if i in KEEP or kind[i] != KIND_LANDMARK]
    kept_pts = lm[kept]
    for i in range(len(lm)):
        if i in KEEP or kind[i] != KIND_LANDMARK:
            continue
        if np.min(np.linalg.norm(kept_pts - lm[i], axis=1)) < THIN * iod:
            kind[i] = KIND_THINNED
        else:
            kept_pts = np.vstack([kept_pts, lm[i]])


def _gap_strips(points: np.ndarray, *rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangles between consecutive rows (upper outer lip, upper inner, the cut's two
    sides, lower inner, lower outer); which are the cut (the middle strip)."""
    out: list[tuple[int, int, int]] = []
    cut: list[bool] = []
    middle = len(rows) // 2 - 1
    for k in range(len(rows) - 1):
        a, b = rows[k], rows[k + 1]
        first = len(out)
        for i in range(len(a) - 1):
            # Rows share their corner vertices (index 0 and -1).
            if a[i] == b[i]:
                out.append((a[i], a[i + 1], b[i + 1]))
            elif a[i + 1] == b[i + 1]:
                out.append((a[i], a[i + 1], b[i]))
            else:
                out.extend(_split(points, a[i], a[i + 1], b[i + 1], b[i]))
        cut += [k == middle] * (len(out) - first)
    return np.array(out, dtype=np.int64), np.array(cut, bool)


def _split(points: np.ndarray, *quad: int) -> tuple[tuple[int, int, int], ...]:
    """The quad (a0, a1, b1, b0) as two triangles, along the diagonal that keeps both the
    same way round and the thinner one fattest."""
    a0, a1, b1, b0 = quad
    best: tuple[float, tuple[tuple[int, int, int], ...]] = (-1.0, ())
    for tris in (((a0, a1, b1), (a0, b1, b0)), ((a0, a1, b0), (a1, b1, b0))):
        areas = signed_areas(points, np.array(tris))
        score = float(np.abs(areas).min()) if np.sign(areas[0]) == np.sign(areas[1]) else -1.0
        if score > best[0]:
            best = (score, tris)
    return best[1] or ((a0, a1, b1), (a0, b1, b0))


def _check(points: np.ndarray, triangles: np.ndarray) -> None:
    """Raise ``ValueError`` unless the triangles tile the frame once, all positive."""
    areas = signed_areas(points, triangles)
    if (areas <= 0).any():
        raise ValueError(
            f"portrait mesh: {int((areas <= 0).sum())} triangles fold at rest; "
            "the face landmarks look wrong"
        )
    hull = float(ConvexHull(points[np.unique(triangles)]).volume)  # 2-D "volume": area
    if abs(float(areas.sum()) - hull) > 1e-6 * hull:
        raise ValueError("portrait mesh: triangles overlap around the lips")
