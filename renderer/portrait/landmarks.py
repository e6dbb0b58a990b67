"""Face boxes and 468 face landmarks of a still photo, offline.

MediaPipe's BlazeFace short-range detector and its FaceMesh landmark model, run with LiteRT
(``ai-edge-litert``, numpy 2). The detector's anchors and box decoding, and the crop the
landmark model expects, follow MediaPipe's graphs (``face_detection_short_range.pbtxt``,
``face_landmark_front_cpu.pbtxt``): a square 1.5 times the face, turned so that the eyes
are level, resized to 192x192. The landmarks are then refined once from a crop around
themselves, as MediaPipe's tracking does.

Coordinates are image pixels with (0, 0) at the top-left corner of the top-left pixel;
``z`` is depth in the same pixel scale, relative to the face's centre (smaller is nearer).
Landmark indices are MediaPipe's (``RIGHT_EYE_OUTER = 33`` is the subject's right eye,
on the left of the picture).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from renderer.portrait.models import DETECTOR, LANDMARKER, ModelFile, model_path

NUM_LANDMARKS = 468
RIGHT_EYE_OUTER = 33  # subject's right eye, outer corner (left side of the picture)
LEFT_EYE_OUTER = 263
NOSE_TIP = 1
UPPER_LIP = 13  # inner edge of the upper lip, centre
LOWER_LIP = 14
MOUTH_RIGHT = 61
MOUTH_LEFT = 291
CHIN = 152
FOREHEAD = 10

# Closed contours (ordered loops of landmark indices), from MediaPipe's
# ``face_mesh_connections.py``; "right" is the subject's right.
FACE_OVAL = (
    10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148,
    152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338,
)  # fmt: skip
LIPS_OUTER = (
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
)  # fmt: skip
LIPS_INNER = (
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191,
)  # fmt: skip
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
# Brows are open lines: lower edge, then upper edge.
RIGHT_BROW = ((46, 53, 52, 65, 55), (70, 63, 105, 66, 107))
LEFT_BROW = ((276, 283, 282, 295, 285), (300, 293, 334, 296, 336))

_DET_SIZE = 128  # detector input, pixels
_LM_SIZE = 192  # landmark model input, pixels
_ROI_SCALE = 1.5  # the landmark crop is this many times the face box (MediaPipe's value)
_NMS_IOU = 0.3


@dataclass(frozen=True)
class FaceBox:
    """A detected face: its box in image pixels and the detector's score (0-1).

    ``keypoints`` (6, 2) are the detector's points in image pixels, when known: the
    subject's right eye, left eye, nose tip, mouth centre, right ear and left ear.
    """

    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    keypoints: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


def eye_distance(landmarks: np.ndarray) -> float:
    """Pixels between the outer corners of the eyes (landmarks 33 and 263)."""
    d = landmarks[LEFT_EYE_OUTER, :2] - landmarks[RIGHT_EYE_OUTER, :2]
    return float(np.hypot(d[0], d[1]))


# --- LiteRT interpreters (loaded once per process; one call at a time each) --------------

_lock = threading.Lock()
_interpreters: dict[Path, Any] = {}


def _run(model: ModelFile, folder: Path | None, tensor: np.ndarray) -> list[np.ndarray]:
    """Run ``model`` on one input tensor; its outputs in the model's order."""
    with _lock:
        path = model_path(model, folder)  # sha256 checked at every call (about 2 ms)
        interp = _interpreters.get(path)
        if interp is None:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType

            # Without the XNNPACK delegate: same results, a few ms slower per call (the
            # photo is still, so this runs a few times per avatar), and no log line on
            # stderr at every start.
            interp = Interpreter(
                model_path=str(path),
                num_threads=1,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            interp.allocate_tensors()
            _interpreters[path] = interp
        interp.set_tensor(interp.get_input_details()[0]["index"], tensor)
        interp.invoke()
        return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def _check_image(image: np.ndarray) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}")
    return image


# --- detection ---------------------------------------------------------------------------


def _anchors() -> np.ndarray:
    """BlazeFace short-range SSD anchor centres, (896, 2), in detector pixels.

    Strides 8 (2 anchors per cell) and 16 (6 per cell: three layers of two); every anchor
    is 1x1 (``fixed_anchor_size``), so only its centre matters.
    """
    out = []
    for stride, per_cell in ((8, 2), (16, 6)):
        n = _DET_SIZE // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centres = np.stack([(xs + 0.5) * stride, (ys + 0.5) * stride], -1).reshape(-1, 1, 2)
        out.append(np.repeat(centres, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(out).astype(np.float32)


_ANCHORS = _anchors()


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-max suppression: each kept face is the score-weighted mean
    of the candidates overlapping it (IoU > 0.3), with the best candidate's score."""
    order = np.argsort(-scores)
    kept: list[tuple[np.ndarray, np.ndarray, float]] = []
    while order.size:
        overlap = _iou(boxes[order[0]], boxes[order]) > _NMS_IOU
        group = order[overlap]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        pts = (points[group] * w[:, :, None]).sum(0) / w.sum()
        kept.append((box, pts, float(scores[order[0]])))
        order = order[~overlap]
    return kept


def detect_faces(
    image: np.ndarray, *, min_score: float = 0.5, model_folder: Path | None = None
) -> list[FaceBox]:
    """The faces in an H x W x 3 uint8 RGB image, largest first.

    Runs the short-range BlazeFace model (faces within about 2 m of the camera, i.e.
    portraits) on the image letterboxed to 128x128. ``model_folder`` defaults to
    :func:`renderer.portrait.models.models_dir`.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    scale = _DET_SIZE / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    ox, oy = (_DET_SIZE - nw) // 2, (_DET_SIZE - nh) // 2
    tensor = np.full((1, _DET_SIZE, _DET_SIZE, 3), -1.0, np.float32)
    tensor[0, oy : oy + nh, ox : ox + nw] = small.astype(np.float32) / 127.5 - 1.0
    outputs = _run(DETECTOR, model_folder, tensor)
    regs = next(o for o in outputs if o.shape[-1] == 16)[0]  # (896, 16)
    logits = next(o for o in outputs if o.shape[-1] == 1)[0, :, 0]  # (896,)
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
    keep = scores >= min_score
    if not keep.any():
        return []
    regs, scores, anchors = regs[keep], scores[keep], _ANCHORS[keep]
    centre = regs[:, 0:2] + anchors  # detector pixels
    half = regs[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], 1)  # (N, 4) x0 y0 x1 y1
    points = regs[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]  # (N, 6, 2)
    faces = []
    for box, pts, score in _weighted_nms(boxes, points, scores):
        # Undo the letterbox: detector pixels -> image pixels.
        b = (box - [ox, oy, ox, oy]) / scale
        kp = ((pts - [ox, oy]) / scale).astype(np.float32)
        x0, y0 = max(0.0, float(b[0])), max(0.0, float(b[1]))
        x1, y1 = min(float(w), float(b[2])), min(float(h), float(b[3]))
        if x1 > x0 and y1 > y0:
            faces.append(FaceBox(x0, y0, x1, y1, score, keypoints=kp))
    faces.sort(key=lambda f: f.area, reverse=True)
    return faces


# --- landmarks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Roi:
    """A square crop of the image: centre, side (pixels), rotation (radians, clockwise)."""

    cx: float
    cy: float
    size: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(self.angle), math.sin(self.angle)
        return np.array([c, s]), np.array([-s, c])

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Crop coordinates (0-192) -> image pixels, for (N, 2) points."""
        ax_u, ax_v = self.axes()
        rel = (pts / _LM_SIZE - 0.5) * self.size
        return np.array([self.cx, self.cy]) + rel[:, :1] * ax_u + rel[:, 1:2] * ax_v


def _roi(x0: float, y0: float, x1: float, y1: float, eye_r: np.ndarray, eye_l: np.ndarray) -> _Roi:
    """MediaPipe's face ROI: the box's centre, 1.5 times its longer side, eyes level."""
    angle = math.atan2(float(eye_l[1] - eye_r[1]), float(eye_l[0] - eye_r[0]))
    size = max(x1 - x0, y1 - y0) * _ROI_SCALE
    return _Roi((x0 + x1) / 2, (y0 + y1) / 2, size, angle)


def _crop(image: np.ndarray, roi: _Roi) -> np.ndarray:
    """The ROI resampled to 192x192 (bilinear, edge pixels repeated outside the image)."""
    step = roi.size / _LM_SIZE  # image pixels per crop pixel
    factor = int(step) if step >= 2 else 1
    src = image
    if factor > 1:  # box-filter first, so that a large face does not alias
        src = np.asarray(Image.fromarray(image).reduce(factor))
    grid = (np.arange(_LM_SIZE, dtype=np.float64) + 0.5)[None, :].repeat(_LM_SIZE, 0)
    uv = np.stack([grid, grid.T], -1).reshape(-1, 2)  # (192*192, 2) pixel centres, x then y
    xy = roi.to_image(uv) / factor - 0.5  # continuous -> index coordinates of src
    h, w = src.shape[:2]
    x = np.clip(xy[:, 0], 0, w - 1)
    y = np.clip(xy[:, 1], 0, h - 1)
    xi, yi = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    xj, yj = np.minimum(xi + 1, w - 1), np.minimum(yi + 1, h - 1)
    fx, fy = (x - xi)[:, None], (y - yi)[:, None]
    top = src[yi, xi] * (1 - fx) + src[yi, xj] * fx
    bottom = src[yj, xi] * (1 - fx) + src[yj, xj] * fx
    return (top * (1 - fy) + bottom * fy).reshape(_LM_SIZE, _LM_SIZE, 3).astype(np.float32)


def _landmarks_in(image: np.ndarray, roi: _Roi, folder: Path | None) -> tuple[np.ndarray, float]:
    """Run the landmark model on one ROI: (468, 3) image-pixel landmarks, face score."""
    crop = _crop(image, roi)[None] / 255.0  # (1, 192, 192, 3) in [0, 1]
    outputs = _run(LANDMARKER, folder, crop.astype(np.float32))
    raw = next(o for o in outputs if o.size == NUM_LANDMARKS * 3).reshape(NUM_LANDMARKS, 3)
    logit = float(next(o for o in outputs if o.size == 1).reshape(()))
    out = np.empty((NUM_LANDMARKS, 3), np.float32)
    out[:, :2] = roi.to_image(raw[:, :2].astype(np.float64))
    out[:, 2] = raw[:, 2] * roi.size / _LM_SIZE
    return out, 1.0 / (1.0 + math.exp(-max(-100.0, min(100.0, logit))))


def _roi_from_landmarks(pts: np.ndarray) -> _Roi:
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    return _roi(
        float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]),
        pts[RIGHT_EYE_OUTER, :2], pts[LEFT_EYE_OUTER, :2],
    )  # fmt: skip


def face_landmarks_scored(
    image: np.ndarray, box: FaceBox, *, model_folder: Path | None = None
) -> tuple[np.ndarray, float]:
    """:func:`face_landmarks` and the model's face-presence score (0-1)."""
    image = _check_image(image)
    if box.keypoints is not None:
        eye_r, eye_l = box.keypoints[0], box.keypoints[1]
    else:  # no eye points: assume the face is upright
        eye_r, eye_l = np.array([0.0, 0.0]), np.array([1.0, 0.0])
    pts = _landmarks_in(image, _roi(box.x0, box.y0, box.x1, box.y1, eye_r, eye_l), model_folder)[0]
    # Refine from a crop around the landmarks themselves (what MediaPipe's tracking feeds
    # the model on the next frame); the detector's box is looser than the mesh.
    return _landmarks_in(image, _roi_from_landmarks(pts), model_folder)


def face_landmarks(
    image: np.ndarray, box: FaceBox, *, model_folder: Path | None = None
) -> np.ndarray:
    """The 468 MediaPipe face landmarks of the face in ``box``: (468, 3) float32, x and y
    in image pixels, z relative depth in pixels."""
    return face_landmarks_scored(image, box, model_folder=model_folder)[0]
