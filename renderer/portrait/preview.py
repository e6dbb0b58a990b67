"""A picture of an avatar's landmarks, to check by eye that they sit on the face."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from renderer.portrait.landmarks import (
    FACE_OVAL,
    LEFT_BROW,
    LEFT_EYE,
    LEFT_EYE_OUTER,
    LIPS_INNER,
    LIPS_OUTER,
    RIGHT_BROW,
    RIGHT_EYE,
    RIGHT_EYE_OUTER,
)

_CONTOURS = (
    (FACE_OVAL, True, (255, 214, 0)),
    (LIPS_OUTER, True, (255, 60, 90)),
    (LIPS_INNER, True, (255, 140, 200)),
    (RIGHT_EYE, True, (0, 220, 255)),
    (LEFT_EYE, True, (0, 220, 255)),
    *((line, False, (120, 255, 120)) for line in (*RIGHT_BROW, *LEFT_BROW)),
)


def draw_landmarks(image: np.ndarray, landmarks: np.ndarray, scale: int = 2) -> np.ndarray:
    """``image`` enlarged ``scale`` times with all 468 landmarks as dots and the face oval,
    lips, eyes and brows as lines; the eyes' outer corners (33, 263) are ringed."""
    h, w = image.shape[:2]
    canvas = Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(canvas)
    pts = landmarks[:, :2].astype(np.float64) * scale
    for loop, closed, colour in _CONTOURS:
        line = [tuple(pts[i]) for i in loop]
        draw.line([*line, line[0]] if closed else line, fill=colour, width=max(1, scale))
    r = max(1.0, scale * 0.75)
    for x, y in pts:
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 255, 255), outline=(0, 0, 0))
    for i in (RIGHT_EYE_OUTER, LEFT_EYE_OUTER):
        x, y = pts[i]
        draw.ellipse((x - 4 * r, y - 4 * r, x + 4 * r, y + 4 * r), outline=(255, 0, 0), width=2)
    return np.asarray(canvas)
