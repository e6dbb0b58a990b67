"""What each motion channel does to the mesh: a displacement of every vertex.

Each blendshape is defined on the face's features (lips, eyes, brows, nose, the face's
outline) in face units (``iod``: the distance between the eyes' outer corners), and filled
in over the rest of the mesh (cheeks, forehead, chin, hair, neck) as a harmonic function of
the mesh, which is smooth and never overshoots. The cut between the lips is left out of the
fill, so the lips move apart. The head's pose is a rigid 3-D rotation of the head about a
pivot behind the chin, faded out over the rings around the face so that the neck follows and
the background stays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from renderer.motion.space import BLENDSHAPE_NAMES, IDX
from renderer.portrait.landmarks import (
    CHIN,
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LEFT_EYE_OUTER,
    NOSE_TIP,
    RIGHT_BROW,
    RIGHT_EYE,
    RIGHT_EYE_OUTER,
)
from renderer.portrait.mesh import (
    KIND_BORDER,
    KIND_LANDMARK,
    KIND_THINNED,
    KIND_UNUSED,
    LOWER_INNER,
    LOWER_OUTER,
    UPPER_INNER,
    UPPER_OUTER,
    Mesh,
)

NOSE = (1, 4, 5, 6, 168, 195, 197, 98, 327, 64, 294)
CORNERS = (61, 291, 78, 308)
JAW_LIP = 0.30  # lower lip drop at jawOpen = 1, in iod
JAW_CHIN = 0.22
#: Channels that move the mesh (blinks are drawn by the eyelids instead).
MESH_CHANNELS = tuple(
    IDX[n] for n in BLENDSHAPE_NAMES if n not in ("eyeBlinkLeft", "eyeBlinkRight")
)


@dataclass(frozen=True)
class FaceFrame:
    """The face's axes and scale at rest."""

    centre: np.ndarray  # (2,) pixels, mean of the face oval
    ex: np.ndarray  # (2,) unit, from the subject's right eye to the left
    ey: np.ndarray  # (2,) unit, down the face
    iod: float  # pixels between the eyes' outer corners


def face_frame(points: np.ndarray) -> FaceFrame:
    """The face frame from mesh points (landmark ids are vertex ids)."""
    d = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
    iod = float(np.linalg.norm(d))
    ex = d / iod
    return FaceFrame(points[list(FACE_OVAL)].mean(0), ex, np.array([-ex[1], ex[0]]), iod)


def _laplacian(mesh: Mesh) -> sp.csr_matrix:
    """Cotangent Laplacian (weights clamped to >= 0) of the mesh without the lips' cut."""
    p, tri = mesh.points, mesh.triangles[~mesh.cut]
    rows, cols, vals = [], [], []
    for k in range(3):
        i, j, o = tri[:, (k + 1) % 3], tri[:, (k + 2) % 3], tri[:, k]
        a, b = p[i] - p[o], p[j] - p[o]
        cross = np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
        cot = np.clip((a * b).sum(1) / np.maximum(cross, 1e-9), 1e-3, 1e3) / 2
        rows += [i, j]
        cols += [j, i]
        vals += [cot, cot]
    n = len(p)
    w = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), (n, n))
    w = w.tocsr()
    return (sp.diags(np.asarray(w.sum(1)).ravel()) - w).tocsr()


class HarmonicFill:
    """Fills values given on control vertices over the free ones (one factorisation):
    harmonic (``order`` 1, never overshoots) or biharmonic (2, smooth at the controls)."""

    def __init__(self, mesh: Mesh, control: np.ndarray, order: int = 1) -> None:
        lap = _laplacian(mesh)
        if order == 2:
            lap = (lap @ lap).tocsr()
        used = np.zeros(len(mesh.points), bool)
        used[mesh.triangles.ravel()] = True
        self.control = control | ~used
        self.free = np.flatnonzero(~self.control)
        ctrl = np.flatnonzero(self.control)
        self.ctrl = ctrl
        self.lu = splu(lap[self.free][:, self.free].tocsc())
        self.coupling = lap[self.free][:, ctrl]

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(V, K) values (read on control vertices) -> (V, K), free ones filled."""
        out = values.copy()
        if len(self.free):
            out[self.free] = self.lu.solve(-(self.coupling @ values[self.ctrl]))
        return out


def _feature_ids(mesh: Mesh) -> dict[str, np.ndarray]:
    up = {*UPPER_OUTER[1:-1], *UPPER_INNER[1:-1], *mesh.seam_upper[1:-1]}
    low = {*LOWER_OUTER[1:-1], *LOWER_INNER[1:-1], *mesh.seam_lower[1:-1]}
    return {
        "upper": np.array(sorted(up)),
        "lower": np.array(sorted(low)),
        "corners": np.array(CORNERS),
        "oval": np.array(FACE_OVAL),
        "nose": np.array(NOSE),
        "eye_r": np.array(RIGHT_EYE),
        "eye_l": np.array(LEFT_EYE),
        "brow_r": np.array(RIGHT_BROW[0] + RIGHT_BROW[1]),
        "brow_l": np.array(LEFT_BROW[0] + LEFT_BROW[1]),
        "lid_low_r": np.array(RIGHT_EYE[1:8]),
        "lid_low_l": np.array(LEFT_EYE[1:8]),
        "lid_up_r": np.array(RIGHT_EYE[9:]),
        "lid_up_l": np.array(LEFT_EYE[9:]),
    }


def blendshape_displacements(mesh: Mesh) -> np.ndarray:
    """(13, V, 2) float64 pixel displacement of every vertex at each blendshape = 1."""
    p = mesh.points
    ff = face_frame(p)
    mf = mesh.mouth
    iod = ff.iod
    ids = _feature_ids(mesh)
    control = np.zeros(len(p), bool)
    for key in ("upper", "lower", "corners", "oval", "nose", "eye_r", "eye_l"):
        control[ids[key]] = True
    control[ids["brow_r"]] = control[ids["brow_l"]] = True
    control[mesh.kind >= 0] = True  # expressions end at the first ring round the face
    control[mesh.kind == KIND_BORDER] = True
    control[mesh.kind == KIND_UNUSED] = True
    fill = HarmonicFill(mesh, control, order=2)

    uv = mf.local(p)
    u, xm = uv[:, 0], (p - mf.origin) @ mf.ex  # half-widths; pixels along the mouth
    c = np.sqrt(np.clip(1.0 - (u / 1.15) ** 2, 0.0, 1.0))  # 1 mid-mouth, 0 at the corners
    xf = (p - ff.centre) @ ff.ex  # pixels across the face
    yf = (p - ff.centre) @ ff.ey
    y_nose = float((p[NOSE_TIP] - ff.centre) @ ff.ey)
    y_chin = float((p[CHIN] - ff.centre) @ ff.ey)
    jaw_k = np.clip((yf - y_nose) / (y_chin - y_nose), 0.0, 1.0) ** 1.5
    lips = np.concatenate([ids["upper"], ids["lower"], ids["corners"]])
    outer_up = np.array(UPPER_OUTER[1:-1])
    outer_low = np.array(LOWER_OUTER[1:-1])
    oval = ids["oval"]

    def mouth_vec(ix: np.ndarray, dx: np.ndarray | float, dv: np.ndarray | float) -> np.ndarray:
        return (
            np.broadcast_to(dx, ix.shape)[:, None] * mf.ex
            + np.broadcast_to(dv, ix.shape)[:, None] * mf.ey
        )

    def face_vec(ix: np.ndarray, dx: np.ndarray | float, dy: np.ndarray | float) -> np.ndarray:
        return (
            np.broadcast_to(dx, ix.shape)[:, None] * ff.ex
            + np.broadcast_to(dy, ix.shape)[:, None] * ff.ey
        )

    out = np.zeros((len(BLENDSHAPE_NAMES), len(p), 2))
    lid = np.sin(np.pi * np.arange(1, 8) / 8)  # (7,) along a lid, 0 at the eye's corners

    def put(name: str, ix: np.ndarray, vec: np.ndarray) -> None:
        out[IDX[name], ix] += vec

    lo, up_, cn = ids["lower"], ids["upper"], ids["corners"]
    # jawOpen: the lower lip and chin drop, the mouth narrows a little, the jaw line follows.
    put("jawOpen", lo, mouth_vec(lo, -0.05 * xm[lo], JAW_LIP * iod * (0.15 + 0.85 * c[lo])))
    put("jawOpen", cn, mouth_vec(cn, -0.05 * xm[cn], 0.1 * JAW_LIP * iod))
    put("jawOpen", up_, mouth_vec(up_, -0.03 * xm[up_], -0.015 * iod * c[up_]))
    put(
        "jawOpen",
        oval,
        face_vec(oval, -0.05 * xf[oval] * jaw_k[oval], JAW_CHIN * iod * jaw_k[oval]),
    )
    # mouthClose: the lips meet again over an open jaw (used as min(close, jaw)).
    put("mouthClose", lo, mouth_vec(lo, 0.0, -0.85 * JAW_LIP * iod * (0.15 + 0.85 * c[lo])))
    put("mouthClose", cn, mouth_vec(cn, 0.0, -0.085 * JAW_LIP * iod))
    put("mouthClose", up_, mouth_vec(up_, 0.0, 0.015 * iod * c[up_]))
    # mouthFunnel: corners in, both lips out and apart into a rounded opening.
    put("mouthFunnel", lips, mouth_vec(lips, -0.2 * xm[lips], 0.0))
    put("mouthFunnel", up_, mouth_vec(up_, 0.0, -0.035 * iod * c[up_]))
    put("mouthFunnel", lo, mouth_vec(lo, 0.0, 0.07 * iod * c[lo]))
    put("mouthFunnel", oval, face_vec(oval, 0.0, 0.03 * iod * jaw_k[oval]))
    # mouthPucker: lips narrow and fuller, the line between them stays.
    put("mouthPucker", lips, mouth_vec(lips, -0.3 * xm[lips], 0.0))
    put("mouthPucker", outer_up, mouth_vec(outer_up, 0.0, -0.03 * iod * c[outer_up]))
    put("mouthPucker", outer_low, mouth_vec(outer_low, 0.0, 0.03 * iod * c[outer_low]))
    for side, sfx, eye in ((1.0, "Left", "l"), (-1.0, "Right", "r")):
        ws = np.clip(side * u[lips] / 1.15, 0.0, 1.0) ** 1.5  # 0 mid-mouth, 1 at this corner
        put(f"mouthSmile{sfx}", lips, mouth_vec(lips, side * 0.1 * iod * ws, -0.09 * iod * ws))
        low_lid = ids[f"lid_low_{eye}"]
        put(f"mouthSmile{sfx}", low_lid, face_vec(low_lid, 0.0, -0.02 * iod * lid))
        cheek = oval[(side * xf[oval] > 0) & (jaw_k[oval] > 0) & (jaw_k[oval] < 0.9)]
        put(f"mouthSmile{sfx}", cheek, face_vec(cheek, side * 0.02 * iod, 0.0))
        put(f"mouthStretch{sfx}", lips, mouth_vec(lips, side * 0.1 * iod * ws, 0.03 * iod * ws))
        brow = ids[f"brow_{eye}"]
        inner = np.clip(1.3 - np.abs(xf[brow]) / (0.45 * iod), 0.4, 1.0)
        put(f"browDown{sfx}", brow, face_vec(brow, -side * 0.025 * iod * inner, 0.07 * iod * inner))
        lid_up = ids[f"lid_up_{eye}"]
        put(f"browDown{sfx}", lid_up, face_vec(lid_up, 0.0, 0.012 * iod * lid))
    brows = np.concatenate([ids["brow_r"], ids["brow_l"]])
    inner = np.clip(1.2 - np.abs(xf[brows]) / (0.5 * iod), 0.3, 1.0)
    put("browInnerUp", brows, face_vec(brows, 0.0, -0.1 * iod * inner))
    lids_up = np.concatenate([ids["lid_up_r"], ids["lid_up_l"]])
    put("browInnerUp", lids_up, face_vec(lids_up, 0.0, -0.01 * iod * np.tile(lid, 2)))

    flat = out.transpose(1, 0, 2).reshape(len(p), -1)  # (V, 13 * 2)
    filled = fill(flat).reshape(len(p), len(BLENDSHAPE_NAMES), 2).transpose(1, 0, 2)
    # The fill reaches every free vertex; a tenth of a pixel is nothing, and dropping it
    # keeps each channel's field (and its work per frame) near its feature.
    filled[np.linalg.norm(filled, axis=-1) < 0.1] = 0.0
    # The cut's rows move exactly with the inner lip next to them: on a closed mouth they are
    # a fraction of a pixel apart, and any difference would turn the strip between over.
    filled[:, mesh.seam_upper[1:-1]] = filled[:, list(UPPER_INNER[1:-1])]
    filled[:, mesh.seam_lower[1:-1]] = filled[:, list(LOWER_INNER[1:-1])]
    return filled


@dataclass(frozen=True)
class HeadRig:
    """How the head's pose moves the mesh: a rotation faded by ``weight``."""

    weight: np.ndarray  # (V,) 1 on the head, 0 on the background
    rel: np.ndarray  # (V, 3) x, y, depth relative to the pivot, pixels

    def displacement(
        self, angles: np.ndarray, ids: np.ndarray | None = None, offset: np.ndarray | None = None
    ) -> np.ndarray:
        """(..., 3) pitch, yaw, roll -> (..., V, 2) pixel displacement of every vertex (or
        of the vertices ``ids``), each first moved by ``offset`` (..., V, 2) if given (the
        expression, which the head then carries)."""
        rel, weight = (self.rel, self.weight) if ids is None else (self.rel[ids], self.weight[ids])
        r = rotation(angles)  # (..., 3, 3)
        if offset is None:
            moved = np.einsum("...ij,vj->...vi", r, rel)[..., :2]  # (..., V, 2)
            return (moved - rel[:, :2]) * weight[:, None]
        at = rel + np.concatenate([offset, np.zeros((*offset.shape[:-1], 1))], -1)
        moved = np.einsum("...ij,...vj->...vi", r, at)[..., :2]
        return (moved - at[..., :2]) * weight[:, None]


def rotation(angles: np.ndarray) -> np.ndarray:
    """(..., 3) pitch, yaw, roll (radians) -> (..., 3, 3) rotation of (x right, y down,
    z away): positive pitch takes the chin down, positive yaw turns the face to the
    viewer's left, positive roll is clockwise on screen."""
    a = np.asarray(angles, dtype=np.float64)
    cp, sp_ = np.cos(a[..., 0]), np.sin(a[..., 0])
    cy, sy = np.cos(a[..., 1]), np.sin(a[..., 1])
    cr, sr = np.cos(a[..., 2]), np.sin(a[..., 2])
    one, zero = np.ones_like(cp), np.zeros_like(cp)
    rx = np.stack([one, zero, zero, zero, cp, -sp_, zero, sp_, cp], -1).reshape(*a.shape[:-1], 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*a.shape[:-1], 3, 3)
    rz = np.stack([cr, -sr, zero, sr, cr, zero, zero, zero, one], -1).reshape(*a.shape[:-1], 3, 3)
    return rz @ ry @ rx


def smooth_depth(mesh: Mesh, sigma: float = 0.15) -> np.ndarray:
    """(V,) depth as a smooth function of image position: the landmarks' depths (the lips
    flattened to one) blurred over ``sigma`` face units, so that when the head turns no
    vertex shifts past its neighbours. Rings and border keep their own depths."""
    p = mesh.points
    ff = face_frame(p)
    lm_ids = np.flatnonzero(np.isin(mesh.kind, (KIND_LANDMARK, KIND_UNUSED, KIND_THINNED)))
    lm_ids = lm_ids[lm_ids < 468]
    depth = mesh.depth.copy()
    lips = np.array([*UPPER_OUTER, *LOWER_OUTER, *UPPER_INNER, *LOWER_INNER])
    lips = np.union1d(lips, np.flatnonzero(mesh.kind == KIND_UNUSED))
    src = depth.copy()
    src[lips] = src[lips].mean()
    face = np.flatnonzero(mesh.kind < 0)
    face = face[mesh.kind[face] != KIND_BORDER]
    d2 = ((p[face, None, :] - p[None, lm_ids, :]) ** 2).sum(-1)  # (F, L)
    k = np.exp(-d2 / (2 * (sigma * ff.iod) ** 2))
    depth[face] = (k @ src[lm_ids]) / k.sum(1)
    depth[mesh.seam_upper[1:-1]] = depth[list(UPPER_INNER[1:-1])]  # the cut's rows go with
    depth[mesh.seam_lower[1:-1]] = depth[list(LOWER_INNER[1:-1])]  # their lips, exactly
    return depth


def head_rig(mesh: Mesh, depth_scale: float = 1.0) -> HeadRig:
    """The head's weight (1 on the face and the first ring, 0 from the third ring out) and
    each vertex's position relative to the pivot (behind the face, at the mouth's height)."""
    p = mesh.points
    ff = face_frame(p)
    control = np.zeros(len(p), bool)
    value = np.zeros((len(p), 1))
    head = (mesh.kind < 0) & (mesh.kind != KIND_BORDER) | (mesh.kind == 0)
    control[head] = True
    value[head] = 1.0
    control[(mesh.kind == 2) | (mesh.kind == KIND_BORDER)] = True
    weight = np.clip(HarmonicFill(mesh, control)(value)[:, 0], 0.0, 1.0)
    depth = smooth_depth(mesh)
    oval_z = float(depth[list(FACE_OVAL)].mean())
    neck_y = 0.5 * (p[NOSE_TIP, 1] + p[CHIN, 1])  # the top of the neck: about mouth level
    pivot = np.array([ff.centre[0], neck_y, oval_z + 0.25 * ff.iod])
    rel = np.concatenate([p, depth[:, None]], 1) - pivot
    rel[:, 2] *= depth_scale
    return HeadRig(weight, rel)
