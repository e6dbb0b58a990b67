"""A strip of portrait frames to look at: rows of avatars, columns of expressions and poses.

``python -m renderer.portrait.strip OUT.png PHOTO [PHOTO ...]`` prepares each photo as an
avatar (in memory), draws the columns of :data:`COLUMNS` at 512x512 and saves the strip
(the README's ``docs/portrait-strip.png`` is made this way from the astronaut and Grace
Hopper photos).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from renderer.motion.space import IDX, MOTION_DIM
from renderer.portrait.drawer import PortraitDrawer, portrait_drawer

COLUMNS: tuple[tuple[str, dict[str, float]], ...] = (
    ("neutral", {}),
    ("jawOpen 0.6", {"jawOpen": 0.6}),
    ("smile", {"mouthSmileLeft": 1.0, "mouthSmileRight": 1.0}),
    ("blink", {"eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0}),
    ("head left", {"headYaw": 0.3}),
    ("head right", {"headYaw": -0.3}),
    ("pucker", {"mouthPucker": 1.0, "mouthFunnel": 0.4}),
    ("brows up", {"browInnerUp": 1.0}),
)


def motion(channels: dict[str, float]) -> np.ndarray:
    m = np.zeros(MOTION_DIM, np.float32)
    for name, value in channels.items():
        m[IDX[name]] = value
    return m


def strip_row(drawer: PortraitDrawer, tile: int = 256) -> np.ndarray:
    """(tile + label, len(COLUMNS) * tile, 3) uint8: the face's square around its landmarks."""
    rig = drawer.rig
    pts = rig.mesh.points[:468]
    centre = (pts.min(0) + pts.max(0)) / 2
    side = float((pts.max(0) - pts.min(0)).max()) * 1.45
    x0 = int(np.clip(centre[0] - side / 2, 0, rig.width - side))
    y0 = int(np.clip(centre[1] - side / 2, 0, rig.height - side))
    box = (x0, y0, x0 + int(side), y0 + int(side))
    frames = drawer.render_batch(np.stack([motion(c) for _, c in COLUMNS]))
    tiles = []
    for (label, _), frame in zip(COLUMNS, frames, strict=True):
        img = Image.fromarray(frame).crop(box).resize((tile, tile), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (tile, tile + 16), (255, 255, 255))
        canvas.paste(img, (0, 16))
        ImageDraw.Draw(canvas).text((4, 2), label, fill=(0, 0, 0))
        tiles.append(np.asarray(canvas))
    return np.concatenate(tiles, 1)


def main(argv: list[str]) -> int:
    from renderer.portrait.avatar import prepare_avatar

    if len(argv) < 2:
        print(__doc__)
        return 2
    out, photos = Path(argv[0]), [Path(p) for p in argv[1:]]
    rows = []
    for i, photo in enumerate(photos):
        avatar = prepare_avatar(photo, f"strip{i}")
        rows.append(strip_row(portrait_drawer(avatar.image, avatar.landmarks, 512, 512, "cpu")))
    Image.fromarray(np.concatenate(rows, 0)).save(out, optimize=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
