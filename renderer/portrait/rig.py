"""Everything a portrait needs per frame, derived once from (photo, landmarks) at one size.

A frame is then: a handful of coefficients from the motion vector, a small linear
combination of precomputed backward displacement fields (one per channel group), one
``grid_sample`` of the photo, the eyelids (a remap of the sampling grid) and the mouth's
inside (painted where the lips part). See :mod:`renderer.portrait.drawer`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.path import Path as PolyPath
from torch import Tensor

from renderer.motion.space import BLENDSHAPE_NAMES, HEAD_ANGLE_MAX, IDX
from renderer.portrait.landmarks import (
    LEFT_BROW,
    LEFT_EYE,
    LEFT_EYE_OUTER,
    MOUTH_LEFT,
    MOUTH_RIGHT,
    RIGHT_BROW,
    RIGHT_EYE,
    RIGHT_EYE_OUTER,
)
from renderer.portrait.mesh import (
    LOWER_INNER,
    LOWER_OUTER,
    UPPER_INNER,
    UPPER_OUTER,
    Mesh,
    build_mesh,
    signed_areas,
)
from renderer.portrait.raster import Box, backward_field, support
from renderer.portrait.shapes import (
    MESH_CHANNELS,
    HeadRig,
    blendshape_displacements,
    face_frame,
    head_rig,
)

NB = len(BLENDSHAPE_NAMES)
N_POSE = 6  # sin and 1 - cos of pitch, yaw, roll
FIT_ANGLE = 0.35  # pose fields are fitted exactly at +-this angle
SMOOTH = 1.0  # pixels (at 512): blur of the expression fields
MIN_AREA_RATIO = 0.1  # a triangle may shrink to a tenth of its area, never fold
TABLE = 64  # samples of the lip and lid curves across the mouth / an eye
COUPLED = (
    ("mouthFunnel", "mouthPucker"),
    ("mouthSmileLeft", "mouthStretchLeft"),
    ("mouthSmileRight", "mouthStretchRight"),
)
COUPLING = 0.6
JAW = (IDX["jawOpen"], IDX["mouthClose"])
LIPS = tuple(IDX[n] for n in BLENDSHAPE_NAMES if n.startswith("mouth") and IDX[n] not in JAW)
BROWS = tuple(IDX[n] for n in BLENDSHAPE_NAMES if n.startswith("brow"))
#: Expression stages, applied one after the other (each read where the warp so far takes a
#: pixel): smooth shapes first, the jaw last, since its field squeezes the whole opening
#: into the lips' cut and anything added after it would fold there.
STAGES = ((LIPS, BROWS), (JAW,))


def pose_coefficients(angles: np.ndarray) -> np.ndarray:
    """(..., 3) pitch, yaw, roll -> (..., 6) sin and 1 - cos of each (the fields' weights)."""
    a = np.asarray(angles, np.float64)
    return np.stack([f(a[..., k]) for k in range(3) for f in (np.sin, _one_minus_cos)], -1)


def _one_minus_cos(a: np.ndarray) -> np.ndarray:
    return 2.0 * np.sin(a / 2.0) ** 2


@dataclass
class FieldGroup:
    """Backward fields of some coefficients over one box of the window."""

    coefs: tuple[int, ...]  # indices into the (NB + N_POSE) coefficient vector
    box: Box  # relative to the rig's window
    fields: Tensor  # (k, h * w * 2) float32, normalised grid units


@dataclass
class Stage:
    """Expression fields applied together: read where the warp so far takes each pixel."""

    groups: list[FieldGroup]  # boxes relative to ``box``
    box: Box  # relative to the rig's window
    affine: Tensor  # (2, 2): frame-normalised -> box-normalised coordinates (scale, shift)
    spread: float  # pixels: how far its fields move a point at most


@dataclass
class Curves:
    """Two curves across a feature, sampled on TABLE points of u in [-1, 1], in its frame."""

    origin: Tensor  # (2,) pixels
    ex: Tensor  # (2,) unit
    ey: Tensor  # (2,) unit, down
    half_width: float  # pixels
    top: Tensor  # (TABLE,) v of the upper curve, pixels below the origin
    bottom: Tensor  # (TABLE,)
    box: Box  # where in the window the feature can be


@dataclass
class Lid(Curves):
    """An eye: ``top`` is the upper lid's edge, ``bottom`` the lower's, ``skin`` the top of
    the band of lid skin that is stretched down over the eye."""

    skin: Tensor  # (TABLE,)
    curves: Tensor  # (3, TABLE): top, bottom and skin together
    ids: np.ndarray  # vertices that bound it (eye contour and brow), for its box per frame
    lash: float  # pixels: the lid's edge (lashes) slides down whole, unstretched
    channel: int  # its blink channel


@dataclass
class Mouth(Curves):
    """The lips' cut: ``top``/``bottom`` its two sides at rest; ``opening`` how much each
    mesh channel widens the gap (pixels, at most); the cut's vertices, whose forward
    positions give the opening's outline in each frame."""

    opening: np.ndarray  # (NB,)
    upper_ids: np.ndarray  # (11,) vertex ids, corner to corner
    lower_ids: np.ndarray  # (11,)
    row_ids: np.ndarray  # (22,) both
    cavity: Tensor  # (3,) colours, 0-255
    deep: Tensor
    tongue: Tensor
    teeth: Tensor
    paint_teeth: bool  # False when the photo's own teeth show (they move with the lips)
    mouth_width: float  # pixels, outer corner to corner
    xs: Tensor  # (w,) frame x of the window's columns
    ys: Tensor  # (h,) frame y of its rows


@dataclass
class PortraitRig:
    """One avatar at one frame size on one device: photo, fields, eyelids, mouth."""

    name: str
    width: int
    height: int
    device: torch.device
    photo: Tensor  # (1, 3, H, W) float32, 0-255
    photo_u8: Tensor  # (H, W, 3) uint8
    window: Box  # the only part of the frame that ever changes
    base: Tensor  # (1, h * w * 2) identity grid of the window, normalised
    pose: FieldGroup
    stages: list[Stage]  # expression fields
    expr_box: Box  # where any expression field lives (relative to the window)
    face_ids: np.ndarray  # the landmarks' vertex ids (how far the pose moves the face)
    mark_ids: np.ndarray  # vertices followed every frame: each eye's outline, the lips' cut
    mark_slices: list[slice]  # which of mark_ids are each eye's (in ``lids`` order), the cut's
    lids: list[Lid]
    mouth: Mouth
    pose_limit: np.ndarray  # (3,) radians: pitch, yaw, roll are clamped to +-these
    mesh: Mesh
    displacements: np.ndarray  # (NB, V, 2) forward vertex displacements, pixels
    head: HeadRig

    def coefficients(self, motion: np.ndarray) -> np.ndarray:
        """(n, MOTION_DIM) motion -> (n, NB + N_POSE) field weights (clamped; mouthClose
        acts only as far as the jaw is open; coupled shapes share their pull)."""
        m = np.asarray(motion, np.float64)
        out = np.empty((len(m), NB + N_POSE))
        out[:, :NB] = np.clip(m[:, :NB], 0.0, 1.0)
        close, jaw = IDX["mouthClose"], IDX["jawOpen"]
        out[:, close] = np.minimum(out[:, close], out[:, jaw])
        # Shapes that pull the same corners the same way share the pull: at full strength
        # together their sum would fold the lips' corners.
        for first, second in COUPLED:
            out[:, IDX[second]] *= 1.0 - COUPLING * out[:, IDX[first]]
        angles = np.clip(m[:, NB : NB + 3], -self.pose_limit, self.pose_limit)
        out[:, NB:] = pose_coefficients(angles)
        return out

    def vertices(self, motion: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """(n, MOTION_DIM) motion -> (n, V, 2) the mesh as this motion deforms it (forward),
        or only its vertices ``ids``."""
        m = np.atleast_2d(motion)
        coef = self.coefficients(m)
        angles = np.clip(m[:, NB : NB + 3], -self.pose_limit, self.pose_limit)
        sel = slice(None) if ids is None else ids
        shapes = np.einsum("nc,cvk->nvk", coef[:, :NB], self.displacements[:, sel])
        # The expression first, then the head carries it (what the warp inverts).
        return self.mesh.points[sel] + shapes + self.head.displacement(angles, ids, shapes)


# --- building ------------------------------------------------------------------------------


def frame_photo(
    image: np.ndarray, landmarks: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crop the photo to the frame's aspect around the face and resize it: (H, W, 3) float32
    0-255, and (468, 3) landmarks in frame pixel indices (pixel centres at integers)."""
    h0, w0 = image.shape[:2]
    scale = max(width / w0, height / h0)
    cw, ch = width / scale, height / scale  # crop size in photo pixels
    cx, cy = landmarks[:, 0].mean(), landmarks[:, 1].mean()
    x0 = float(np.clip(round(cx - cw / 2), 0, w0 - cw))
    y0 = float(np.clip(round(cy - ch / 2), 0, h0 - ch))
    lm = landmarks.astype(np.float64).copy()
    lm[:, 0] = (lm[:, 0] - x0) * scale - 0.5
    lm[:, 1] = (lm[:, 1] - y0) * scale - 0.5
    lm[:, 2] *= scale
    src = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    if scale == 1.0 and float(x0).is_integer() and float(y0).is_integer():
        out = src[:, :, int(y0) : int(y0) + height, int(x0) : int(x0) + width]
    else:
        crop = src[:, :, int(y0) : math.ceil(y0 + ch), int(x0) : math.ceil(x0 + cw)]
        out = F.interpolate(crop, size=(height, width), mode="bilinear", antialias=True)
    return out[0].permute(1, 2, 0).clamp(0, 255).numpy(), lm


def _guard(mesh: Mesh, disp: np.ndarray, head: HeadRig) -> tuple[np.ndarray, np.ndarray]:
    """Scale down any channel whose full strength folds a triangle, and find how far the
    head may turn on each axis without a fold: (NB,) channel scales, (3,) angle limits."""
    rest = signed_areas(mesh.points, mesh.triangles)

    def ok(points: np.ndarray) -> bool:
        return bool((signed_areas(points, mesh.triangles) >= MIN_AREA_RATIO * rest).all())

    scales = np.ones(NB)
    jaw = disp[IDX["jawOpen"]]
    for c in MESH_CHANNELS:
        extra = jaw if c == IDX["mouthClose"] else 0.0  # close acts only over an open jaw
        while scales[c] > 0.2 and not ok(mesh.points + extra + scales[c] * disp[c]):
            scales[c] *= 0.85
    limits = np.zeros(3)
    for axis in range(3):
        for angle in np.arange(HEAD_ANGLE_MAX, 0.0, -0.025):
            a = np.zeros((2, 3))
            a[:, axis] = (angle, -angle)
            moved = mesh.points + head.displacement(a)
            if ok(moved[0]) and ok(moved[1]):
                limits[axis] = angle
                break
    return scales, limits


def _pose_fields(
    mesh: Mesh, head: HeadRig, width: int, height: int, limits: np.ndarray
) -> np.ndarray:
    """(6, H, W, 2) pixel fields: each axis's sin and (1 - cos) part, fitted at +-angle.

    The head's fields are smooth, so they are rasterised at half size and upsampled."""
    hh, hw = (height + 1) // 2, (width + 1) // 2
    half = mesh.points / 2.0
    out = []
    for axis in range(3):
        angle = min(FIT_ANGLE, float(limits[axis])) or FIT_ANGLE
        fields = []
        for sign in (1.0, -1.0):
            a = np.zeros(3)
            a[axis] = sign * angle
            moved = half + head.displacement(a) / 2.0
            fields.append(backward_field(half, moved, mesh.triangles, (0, hh, 0, hw)))
        plus, minus = fields
        out.append((plus - minus) / (2 * math.sin(angle)))
        out.append((plus + minus) / (2 * float(_one_minus_cos(np.array(angle)))))
    small = torch.from_numpy(np.stack(out).astype(np.float32)).permute(0, 3, 1, 2)  # (6, 2, h, w)
    # Pixel y of the full frame is 2 * (y of the half frame): sample the half grid there.
    gy = torch.arange(height, dtype=torch.float32) / 2.0 / max(hh - 1, 1) * 2.0 - 1.0
    gx = torch.arange(width, dtype=torch.float32) / 2.0 / max(hw - 1, 1) * 2.0 - 1.0
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)[None].expand(6, -1, -1, -1)
    full = F.grid_sample(small, grid, align_corners=True, padding_mode="border") * 2.0
    return full.permute(0, 2, 3, 1).numpy()


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, 2) field blurred by a Gaussian of ``sigma`` pixels (separable): no kinks at the
    triangles' edges."""
    r = max(1, math.ceil(3 * sigma))
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, -1)
    x = torch.from_numpy(np.ascontiguousarray(field.transpose(2, 0, 1)))[:, None]  # (2, 1, H, W)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k[:, :, None, :])
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k[:, :, :, None])
    return x[:, 0].permute(1, 2, 0).numpy()


def _union(boxes: list[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        max(b[1] for b in boxes),
        min(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _bbox(points: np.ndarray, margin: float, width: int, height: int) -> Box:
    lo, hi = points.reshape(-1, 2).min(0) - margin, points.reshape(-1, 2).max(0) + margin
    return (
        max(0, int(lo[1])),
        min(height, math.ceil(hi[1]) + 1),
        max(0, int(lo[0])),
        min(width, math.ceil(hi[0]) + 1),
    )


def _sweep(
    rig_disp: np.ndarray, head: HeadRig, points: np.ndarray, limits: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """Positions of vertices ``ids`` over extreme motions: (S, len(ids), 2)."""
    sets = (
        (),
        ("jawOpen",),
        ("jawOpen", "mouthFunnel"),
        ("mouthPucker",),
        ("browInnerUp",),
        ("mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight"),
        ("browDownLeft", "browDownRight"),
    )
    out = []
    for names in sets:
        shape = sum((rig_disp[IDX[n], ids] for n in names), np.zeros((len(ids), 2)))
        for signs in itertools.product((-1.0, 0.0, 1.0), repeat=3):
            angles = np.array(signs) * limits
            out.append(points[ids] + shape + head.displacement(angles)[ids])
    return np.stack(out).astype(np.float32)


def _local(
    points: np.ndarray, origin: np.ndarray, ex: np.ndarray, ey: np.ndarray, hw: float
) -> tuple[np.ndarray, np.ndarray]:
    d = points - origin
    return d @ ex / hw, d @ ey


def _curve(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """v sampled at TABLE points of u in [-1, 1] (linear between, flat beyond)."""
    order = np.argsort(u)
    return np.interp(np.linspace(-1.0, 1.0, TABLE), u[order], v[order])


def _pixels_in(
    photo: np.ndarray, polygon: np.ndarray, minus: np.ndarray | None = None
) -> np.ndarray:
    """(N, 3) the photo's pixels inside ``polygon`` (and not in ``minus``)."""
    lo = np.maximum(np.floor(polygon.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(polygon.max(0)).astype(int) + 1, [photo.shape[1], photo.shape[0]])
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]]
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    inside = PolyPath(polygon).contains_points(pts)
    if minus is not None:
        inside &= ~PolyPath(minus).contains_points(pts)
    if not inside.any():
        return photo[int(polygon[:, 1].mean()), int(polygon[:, 0].mean())][None]
    return photo[pts[inside, 1], pts[inside, 0]]


def _median_in(
    photo: np.ndarray, polygon: np.ndarray, minus: np.ndarray | None = None
) -> np.ndarray:
    """Median colour (3,) of the photo's pixels inside ``polygon`` (and not in ``minus``)."""
    return np.median(_pixels_in(photo, polygon, minus), axis=0)


def _mouth(
    mesh: Mesh, disp: np.ndarray, photo: np.ndarray, box: Box, dev: torch.device, window: Box
) -> Mouth:
    mf = mesh.mouth
    p = mesh.points
    su, sl = mesh.seam_upper, mesh.seam_lower
    u_up, v_up = _local(p[su], mf.origin, mf.ex, mf.ey, mf.half_width)
    u_low, v_low = _local(p[sl], mf.origin, mf.ex, mf.ey, mf.half_width)
    top, bottom = _curve(u_up, v_up), _curve(u_low, v_low)
    opening = np.abs((disp[:, sl] - disp[:, su]) @ mf.ey).max(1)  # (NB,)
    outer = p[[*UPPER_OUTER, *LOWER_OUTER[-2:0:-1]]]
    inner = p[[*UPPER_INNER, *LOWER_INNER[-2:0:-1]]]
    lip = _median_in(photo, outer, inner)
    ff = face_frame(p)
    cheeks = [
        0.5 * (p[RIGHT_EYE_OUTER] + p[MOUTH_RIGHT]),
        0.5 * (p[LEFT_EYE_OUTER] + p[MOUTH_LEFT]),
    ]
    r = 0.06 * ff.iod
    disc = np.array([[math.cos(t) * r, math.sin(t) * r] for t in np.linspace(0, 2 * math.pi, 12)])
    skin = np.mean([_median_in(photo, c + disc) for c in cheeks], axis=0)
    gap = (p[list(LOWER_INNER[1:-1])] - p[list(UPPER_INNER[1:-1])]) @ mf.ey
    shows_teeth = bool(gap.max() > 0.05 * ff.iod)
    if shows_teeth:  # teeth: pale (unsaturated) and bright pixels between the lips
        gap_px = _pixels_in(photo, inner)
        hi, lo = gap_px.max(1), gap_px.min(1)
        pale = ((hi - lo) < 0.3 * hi) & (hi > 0.6 * skin.max())
        shows_teeth = bool(pale.mean() > 0.3)
    light = float(np.clip(skin.mean() / 170.0, 0.55, 1.1))
    teeth = np.array([226.0, 216.0, 196.0]) * light
    cavity = lip * np.array([0.30, 0.16, 0.17])
    width = float(np.linalg.norm(p[MOUTH_LEFT] - p[MOUTH_RIGHT]))

    def t(x: np.ndarray | list[float]) -> Tensor:
        return torch.tensor(np.asarray(x), dtype=torch.float32, device=dev)

    return Mouth(
        origin=t(mf.origin),
        ex=t(mf.ex),
        ey=t(mf.ey),
        half_width=mf.half_width,
        top=t(top),
        bottom=t(bottom),
        box=_relative(box, window),
        opening=opening,
        upper_ids=su,
        lower_ids=sl,
        row_ids=np.concatenate([su, sl]),
        cavity=t(cavity),
        deep=t(cavity * 0.45),
        tongue=t(lip * np.array([0.62, 0.36, 0.38])),
        teeth=t(teeth),
        paint_teeth=not shows_teeth,
        mouth_width=width,
        xs=torch.arange(window[2], window[3], dtype=torch.float32, device=dev),
        ys=torch.arange(window[0], window[1], dtype=torch.float32, device=dev),
    )


def _lid(
    mesh: Mesh,
    contour: tuple[int, ...],
    brow: tuple[int, ...],
    channel: int,
    box: Box,
    dev: torch.device,
    window: Box,
) -> Lid:
    p = mesh.points
    corner_a, corner_b = p[contour[0]], p[contour[8]]
    if corner_a[0] > corner_b[0]:
        corner_a, corner_b = corner_b, corner_a
    origin = (corner_a + corner_b) / 2
    ex = (corner_b - corner_a) / np.linalg.norm(corner_b - corner_a)
    ey = np.array([-ex[1], ex[0]])
    hw = float(np.linalg.norm(corner_b - corner_a)) / 2
    upper = np.array([contour[0], *contour[9:], contour[8]])
    lower = np.array(contour[:9])
    top = _curve(*_local(p[upper], origin, ex, ey, hw))
    bottom = _curve(*_local(p[lower], origin, ex, ey, hw))
    bottom = np.maximum(bottom, top)
    brow_v = _curve(*_local(p[list(brow)], origin, ex, ey, hw))
    opening = bottom - top
    lash = max(1.0, 0.12 * hw)
    band = np.minimum(1.3 * opening + 0.08 * hw, 0.6 * np.clip(top - brow_v, 1.0, None))
    skin = top - np.maximum(band, lash + 1.5)

    def t(x: np.ndarray) -> Tensor:
        return torch.tensor(x, dtype=torch.float32, device=dev)

    return Lid(
        t(origin),
        t(ex),
        t(ey),
        hw,
        t(top),
        t(bottom),
        _relative(box, window),
        t(skin),
        torch.stack([t(top), t(bottom), t(skin)]),
        np.array([*contour, *brow]),
        lash,
        channel,
    )


def _relative(box: Box, window: Box) -> Box:
    return (box[0] - window[0], box[1] - window[0], box[2] - window[2], box[3] - window[2])


def _normalised(field: np.ndarray, width: int, height: int) -> np.ndarray:
    return (field * np.array([2.0 / (width - 1), 2.0 / (height - 1)])).astype(np.float32)


def build_rig(
    image: np.ndarray,
    landmarks: np.ndarray,
    width: int,
    height: int,
    device: torch.device,
    name: str = "",
) -> PortraitRig:
    """Derive everything the drawer needs from the avatar's photo and its 468 landmarks
    (x, y in photo pixels with (0, 0) the top-left pixel's corner, z depth)."""
    photo, lm = frame_photo(image, landmarks, width, height)
    mesh = build_mesh(lm, width, height)
    disp = blendshape_displacements(mesh)
    head = head_rig(mesh)
    scales, limits = _guard(mesh, disp, head)
    disp = disp * scales[:, None, None]
    full: Box = (0, height, 0, width)

    # Fields: each channel's backward field at strength 1, in its own box.
    fields: dict[int, np.ndarray] = {}
    for c in MESH_CHANNELS:
        raw = backward_field(mesh.points, mesh.points + disp[c], mesh.triangles, full)
        if c == IDX["mouthClose"]:  # only ever acts over an open jaw: its field is the change
            jaw = mesh.points + disp[IDX["jawOpen"]]
            raw = backward_field(mesh.points, jaw + disp[c], mesh.triangles, full) - backward_field(
                mesh.points, jaw, mesh.triangles, full
            )
        fields[c] = _smooth(raw, SMOOTH * max(width, height) / 512)
    pose = _pose_fields(mesh, head, width, height, limits)  # (6, H, W, 2)
    boxes = {c: support(f) for c, f in fields.items()}
    pose_box = support(pose.transpose(1, 2, 0, 3).reshape(height, width, -1)) or (0, 1, 0, 1)

    # Where the eyes and the mouth can be, over extreme motions.
    margin = 0.04 * face_frame(mesh.points).iod + 2.0
    gap_ids = np.array([*mesh.seam_upper, *mesh.seam_lower[1:-1], *UPPER_INNER, *LOWER_INNER])
    mouth_box = _bbox(_sweep(disp, head, mesh.points, limits, gap_ids), margin, width, height)
    lid_boxes = []
    for contour, brow in ((RIGHT_EYE, RIGHT_BROW[0]), (LEFT_EYE, LEFT_BROW[0])):
        ids = np.array([*contour, *brow])
        lid_boxes.append(_bbox(_sweep(disp, head, mesh.points, limits, ids), margin, width, height))
    expr_box = _union([b for b in boxes.values() if b] or [(0, 1, 0, 1)])
    corners = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=3))) * limits
    reach = float(np.linalg.norm(head.displacement(corners), axis=-1).max()) + 2.0
    ey0, ey1, ex0, ex1 = expr_box
    reach_box = (
        max(0, int(ey0 - reach)),
        min(height, int(ey1 + reach) + 1),
        max(0, int(ex0 - reach)),
        min(width, int(ex1 + reach) + 1),
    )
    window = _union([pose_box, mouth_box, reach_box, *lid_boxes])
    y0, y1, x0, x1 = window

    def crop(f: np.ndarray, box: Box) -> np.ndarray:
        return f[..., box[0] : box[1], box[2] : box[3], :]

    dev = device
    stages = []
    for stage in STAGES:
        chan_sets = [tuple(c for c in chans if boxes.get(c)) for chans in stage]
        chan_sets = [c for c in chan_sets if c]
        if not chan_sets:
            continue
        sbox = _union([boxes[c] for chans in chan_sets for c in chans])  # type: ignore[misc]
        groups = []
        spread = 0.0
        for chans in chan_sets:
            box = _union([boxes[c] for c in chans])  # type: ignore[misc]
            raw = np.stack([crop(fields[c], box) for c in chans])
            spread += float(np.abs(raw).max())
            stack = _normalised(raw, width, height)
            groups.append(
                FieldGroup(
                    chans,
                    _relative(box, sbox),
                    torch.tensor(stack.reshape(len(chans), -1), device=dev),
                )
            )
        sy0, sy1, sx0, sx1 = sbox
        affine = torch.tensor(
            [
                [(width - 1) / (sx1 - sx0 - 1), (height - 1) / (sy1 - sy0 - 1)],
                [
                    (width - 1 - 2 * sx0) / (sx1 - sx0 - 1) - 1.0,
                    (height - 1 - 2 * sy0) / (sy1 - sy0 - 1) - 1.0,
                ],
            ],
            device=dev,
        )
        stages.append(Stage(groups, _relative(sbox, window), affine, spread))
    pose_t = torch.tensor(
        _normalised(crop(pose, window), width, height).reshape(N_POSE, -1), device=dev
    )
    ys = torch.arange(y0, y1, dtype=torch.float32) * (2.0 / (height - 1)) - 1.0
    xs = torch.arange(x0, x1, dtype=torch.float32) * (2.0 / (width - 1)) - 1.0
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h, w, 2) x then y
    lids = [
        _lid(mesh, RIGHT_EYE, RIGHT_BROW[0], IDX["eyeBlinkRight"], lid_boxes[0], dev, window),
        _lid(mesh, LEFT_EYE, LEFT_BROW[0], IDX["eyeBlinkLeft"], lid_boxes[1], dev, window),
    ]
    mouth = _mouth(mesh, disp, photo, mouth_box, dev, window)
    marks = [lid.ids for lid in lids] + [mouth.row_ids]
    ends = np.cumsum([len(m) for m in marks])
    return PortraitRig(
        name=name,
        width=width,
        height=height,
        device=dev,
        photo=torch.from_numpy(photo).permute(2, 0, 1)[None].contiguous().to(dev),
        photo_u8=torch.from_numpy(np.rint(photo).astype(np.uint8)).to(dev),
        window=window,
        base=base.reshape(1, -1).to(dev),
        pose=FieldGroup(tuple(range(NB, NB + N_POSE)), (0, y1 - y0, 0, x1 - x0), pose_t),
        stages=stages,
        expr_box=_relative(expr_box, window),
        face_ids=np.arange(468),
        lids=lids,
        mouth=mouth,
        mark_ids=np.concatenate(marks),
        mark_slices=[slice(int(e - len(m)), int(e)) for m, e in zip(marks, ends, strict=True)],
        pose_limit=limits,
        mesh=mesh,
        displacements=disp,
        head=head,
    )
