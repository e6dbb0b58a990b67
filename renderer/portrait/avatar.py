"""Portrait avatars on disk: made once from one photo, then loaded by the drawer.

An avatar is a folder ``AVATARS_DIR/NAME/`` holding:

- ``photo.png``: the working photo, a square crop of the source around the face, resized
  to ``PHOTO_SIZE`` (512) pixels, with the face (its landmarks' bounding box) filling
  ``FACE_FRACTION`` (45%) of the side and its centre a little above the middle (where a
  head sits in a talking-head shot). The crop is moved, then shrunk, to stay inside the
  source, so no border is invented; the face then fills more of it.
- ``avatar.json``: ``version``, the 468 landmarks (x, y in ``photo.png`` pixels, z depth),
  ``photo.sha256``, the source file's name, size and sha256, the face index chosen and
  how many faces were found, the crop in source pixels, and the model files' sha256.

Every write is atomic: the folder is built under a hidden temporary name next to it and
renamed into place, so an error at any point leaves nothing half-written; hidden names are
never listed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from PIL import Image, ImageOps

from renderer.portrait.landmarks import (
    CHIN,
    LEFT_EYE_OUTER,
    LOWER_LIP,
    NOSE_TIP,
    NUM_LANDMARKS,
    RIGHT_EYE_OUTER,
    UPPER_LIP,
    FaceBox,
    detect_faces,
    eye_distance,
    face_landmarks_scored,
)
from renderer.portrait.models import DETECTOR, LANDMARKER

AVATAR_VERSION = 1
PHOTO_FILE = "photo.png"
META_FILE = "avatar.json"
PHOTO_SIZE = 512  # working photo side, pixels
FACE_FRACTION = 0.45  # the face's share of the working photo's side
FACE_CENTRE_Y = 0.45  # the face's centre, as a fraction of the height from the top
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # checked from the header, before decoding (decompression bombs)
#: Fewest pixels between the eyes' outer corners (landmarks 33 and 263) in the source.
#: The scikit-image astronaut, a 512x512 head-and-shoulders portrait, has 63.
MIN_EYE_DISTANCE = 48.0
MIN_FACE_SCORE = 0.5  # the landmark model's face-presence score
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")  # never EPS & co (external tools)
NAME_RULE = (
    "1-64 characters: lowercase letters, digits, '-' and '_', starting with a letter or digit"
)
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class AvatarError(ValueError):
    """Something the user can fix: the message says what was wrong and how."""


class AvatarNotFoundError(AvatarError):
    """No avatar of that name; the message lists the known ones."""


@dataclass
class PortraitAvatar:
    """One prepared portrait: the working photo and its landmarks."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB, the working photo
    landmarks: np.ndarray  # (468, 3) float32: x, y in image pixels, z relative depth
    created: str  # ISO 8601, UTC
    source: str = ""  # the photo's file name
    face_index: int = 0  # which face of the source (0: the largest)
    meta: dict[str, Any] = field(default_factory=dict)  # the rest of avatar.json


@dataclass(frozen=True)
class AvatarInfo:
    """One entry of :func:`list_avatars`; ``problem`` is set when it cannot be loaded."""

    name: str
    path: Path
    created: str = ""
    source: str = ""
    face_index: int = 0
    eye_distance: float = 0.0  # pixels between the eyes' outer corners in the source
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "created": self.created,
            "source": self.source,
            "face_index": self.face_index,
            "eye_distance": round(self.eye_distance, 1),
            "problem": self.problem,
        }


def check_name(name: str) -> str:
    """``name`` when it is a safe avatar name (no path tricks), else :class:`AvatarError`."""
    if not _NAME.fullmatch(name):
        raise AvatarError(f"bad avatar name {name!r}: use {NAME_RULE}")
    return name


# --- reading the photo -------------------------------------------------------------------


def read_photo(path: Path) -> np.ndarray:
    """Decode a photo to (H, W, 3) uint8 RGB, upright (EXIF orientation applied).

    Refuses, with :class:`AvatarError`: a missing file, one over ``MAX_FILE_BYTES``, one
    that is not an image of ``FORMATS``, one over ``MAX_PIXELS`` (from its header, before
    decoding), and a corrupt or truncated one.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise AvatarError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not path.is_file():
        raise AvatarError(f"{path} is not a file")
    if size > MAX_FILE_BYTES:
        raise AvatarError(
            f"{path} is {size / 2**20:.1f} MB; photos up to {MAX_FILE_BYTES // 2**20} MB "
            "are accepted (save it as a JPEG, or scale it down)"
        )
    data = path.read_bytes()
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise AvatarError(
            f"{path} claims to be huge; photos up to {MAX_PIXELS / 1e6:.0f} megapixels are accepted"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise AvatarError(
            f"{path} is not an image Visage reads ({', '.join(FORMATS)}): {exc}"
        ) from None
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise AvatarError(
                f"{path} is {w}x{h} ({w * h / 1e6:.0f} megapixels); photos up to "
                f"{MAX_PIXELS / 1e6:.0f} megapixels are accepted (scale it down)"
            )
        if w < 1 or h < 1:
            raise AvatarError(f"{path} is an empty image ({w}x{h})")
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = upright.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise AvatarError(f"{path} is a corrupt or truncated image: {exc}") from None
    return np.asarray(rgb, dtype=np.uint8).copy()


# --- preparing ---------------------------------------------------------------------------


def _face_keypoints(pts: np.ndarray) -> np.ndarray:
    """Detector-style keypoints (right eye, left eye, nose, mouth, ears) from landmarks."""
    mouth = (pts[UPPER_LIP, :2] + pts[LOWER_LIP, :2]) / 2
    return np.stack(
        [pts[RIGHT_EYE_OUTER, :2], pts[LEFT_EYE_OUTER, :2], pts[NOSE_TIP, :2], mouth,
         pts[234, :2], pts[454, :2]]
    ).astype(np.float32)  # fmt: skip


def _box_of(pts: np.ndarray, score: float = 1.0) -> FaceBox:
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    return FaceBox(
        float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]), score,
        keypoints=_face_keypoints(pts),
    )  # fmt: skip


def _crop_square(pts: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """The working crop (x0, y0, side) in source pixels, inside the source."""
    lo, hi = pts[:, :2].min(0), pts[:, :2].max(0)
    face = float(max(hi - lo))
    side = min(face / FACE_FRACTION, float(width), float(height))
    cx, cy = float(lo[0] + hi[0]) / 2, float(lo[1] + hi[1]) / 2
    x0 = min(max(cx - side / 2, 0.0), width - side)
    y0 = min(max(cy - FACE_CENTRE_Y * side, 0.0), height - side)
    return x0, y0, side


def _describe(faces: list[FaceBox]) -> str:
    return "; ".join(
        f"{i}: {f.width:.0f} px wide at ({f.center[0]:.0f}, {f.center[1]:.0f})"
        for i, f in enumerate(faces)
    )


def prepare_avatar(
    photo: Path,
    name: str,
    *,
    face: int | None = None,
    warn: Callable[[str], None] = logger.warning,
    model_folder: Path | None = None,
) -> PortraitAvatar:
    """Make an avatar from one photo (in memory; :func:`save_avatar` stores it).

    ``face`` picks one of several faces (0 is the largest); without it the largest is
    taken, and ``warn`` says so when there are several. Raises :class:`AvatarError` for a
    bad photo, no face, a face index out of range, or a face too small to animate.
    """
    check_name(name)
    image = read_photo(photo)
    height, width = image.shape[:2]
    faces = detect_faces(image, model_folder=model_folder)
    if not faces:
        raise AvatarError(
            f"no face found in {photo}; use a photo with one face looking at the camera, "
            "the head at least a fifth of the picture"
        )
    if face is not None and not 0 <= face < len(faces):
        raise AvatarError(
            f"--face {face} is out of range: {photo} has {len(faces)} "
            f"face{'s' * (len(faces) > 1)} (0 is the largest; {_describe(faces)})"
        )
    index = 0 if face is None else face
    if face is None and len(faces) > 1:
        warn(
            f"{photo} has {len(faces)} faces; using face 0, the largest ({_describe(faces)}). "
            "--face N picks another"
        )
    pts, score = face_landmarks_scored(image, faces[index], model_folder=model_folder)
    if score < MIN_FACE_SCORE:
        raise AvatarError(
            f"no face found in {photo}: the landmark model does not see a face in the box "
            f"the detector found ({score:.2f}); use a clearer, frontal photo"
        )
    eyes = eye_distance(pts)
    if eyes < MIN_EYE_DISTANCE:
        raise AvatarError(
            f"the face in {photo} is too small to animate: {eyes:.0f} px between the outer "
            f"corners of the eyes, at least {MIN_EYE_DISTANCE:.0f} needed; use a larger or "
            "closer photo"
        )
    x0, y0, side = _crop_square(pts, width, height)
    scale = PHOTO_SIZE / side
    working = Image.fromarray(image).resize(
        (PHOTO_SIZE, PHOTO_SIZE), Image.Resampling.LANCZOS, box=(x0, y0, x0 + side, y0 + side)
    )
    work = np.asarray(working, dtype=np.uint8).copy()
    # Landmarks again, on the working photo itself, so that they match its pixels.
    moved = pts.copy()
    moved[:, :2] = (pts[:, :2] - [x0, y0]) * scale
    moved[:, 2] *= scale
    final, score = face_landmarks_scored(work, _box_of(moved, score), model_folder=model_folder)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source_sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    meta = {
        "source": {
            "file": photo.name,
            "sha256": source_sha,
            "width": width,
            "height": height,
            "faces_found": len(faces),
            "face_index": index,
            "crop": [round(x0, 2), round(y0, 2), round(side, 2)],
            "eye_distance": round(eyes, 2),
        },
        "face": {
            "score": round(float(score), 4),
            "eye_distance": round(eye_distance(final), 2),
            "chin": [round(float(v), 2) for v in final[CHIN, :2]],
        },
        "models": {DETECTOR.name: DETECTOR.sha256, LANDMARKER.name: LANDMARKER.sha256},
    }
    return PortraitAvatar(name, work, final, created, photo.name, index, meta)


# --- storing -----------------------------------------------------------------------------


def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def _known(avatars_dir: Path) -> list[str]:
    if not avatars_dir.is_dir():
        return []
    return sorted(p.name for p in avatars_dir.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def save_avatar(folder: Path, avatar: PortraitAvatar, *, force: bool = False) -> Path:
    """Store ``avatar`` as ``folder/NAME/`` atomically; its path.

    A name already taken is refused unless ``force``, which replaces it (also atomically).
    """
    check_name(avatar.name)
    if avatar.image.ndim != 3 or avatar.image.shape[2] != 3 or avatar.image.dtype != np.uint8:
        raise ValueError(f"avatar image must be H x W x 3 uint8, got {avatar.image.shape}")
    if avatar.landmarks.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"avatar landmarks must be (468, 3), got {avatar.landmarks.shape}")
    target = folder / avatar.name
    if target.exists() and not force:
        raise AvatarError(
            f"an avatar named {avatar.name!r} already exists in {folder}; choose another "
            "--name, add --force to replace it, or `visage avatar remove` it first"
        )
    png = _png_bytes(avatar.image)
    h, w = avatar.image.shape[:2]
    meta = {
        "version": AVATAR_VERSION,
        "name": avatar.name,
        "created": avatar.created,
        **avatar.meta,
        "photo": {
            "file": PHOTO_FILE,
            "sha256": hashlib.sha256(png).hexdigest(),
            "width": w,
            "height": h,
        },
        "landmarks": [[round(float(v), 3) for v in row] for row in avatar.landmarks],
    }
    meta["source"] = {
        **avatar.meta.get("source", {}),
        "file": avatar.source,
        "face_index": avatar.face_index,
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".new-{avatar.name}-", dir=folder))
    old: Path | None = None
    try:
        (tmp / PHOTO_FILE).write_bytes(png)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".old-{avatar.name}-", dir=folder))
            os.replace(target, old / "avatar")
        try:
            os.replace(tmp, target)
        except OSError:
            if old is not None:  # put the replaced avatar back
                os.replace(old / "avatar", target)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def _not_found(avatars_dir: Path, name: str) -> AvatarNotFoundError:
    known = _known(avatars_dir)
    have = f"known: {', '.join(known)}" if known else "there are none yet"
    return AvatarNotFoundError(
        f"no avatar named {name!r} in {avatars_dir} ({have}); make one with "
        f"`visage avatar create PHOTO --name {name}`"
    )


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise AvatarError(f"avatar {path} has no readable {META_FILE}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != AVATAR_VERSION:
        version = meta.get("version") if isinstance(meta, dict) else None
        raise AvatarError(
            f"avatar {path} is version {version!r}, this Visage reads version "
            f"{AVATAR_VERSION}; make it again with `visage avatar create --force`"
        )
    return meta


def load_avatar(avatars_dir: Path, name: str) -> PortraitAvatar:
    """Load ``avatars_dir/NAME``; :class:`AvatarNotFoundError` lists the known names."""
    check_name(name)
    path = avatars_dir / name
    if not path.is_dir():
        raise _not_found(avatars_dir, name)
    meta = _read_meta(path)
    try:
        png = (path / PHOTO_FILE).read_bytes()
    except OSError as exc:
        raise AvatarError(f"avatar {path} has no readable {PHOTO_FILE}: {exc}") from None
    if hashlib.sha256(png).hexdigest() != meta.get("photo", {}).get("sha256"):
        raise AvatarError(
            f"avatar {path}: {PHOTO_FILE} does not match {META_FILE} (changed or corrupt); "
            f"make it again with `visage avatar create PHOTO --name {name} --force`"
        )
    with Image.open(io.BytesIO(png), formats=["PNG"]) as img:
        image = np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    landmarks = np.asarray(meta.get("landmarks"), dtype=np.float32)
    if landmarks.shape != (NUM_LANDMARKS, 3):
        raise AvatarError(f"avatar {path}: landmarks are {landmarks.shape}, not (468, 3)")
    source = meta.get("source", {})
    rest = {k: v for k, v in meta.items() if k not in ("landmarks", "name", "created")}
    return PortraitAvatar(
        name=name,
        image=image,
        landmarks=landmarks,
        created=str(meta.get("created", "")),
        source=str(source.get("file", "")),
        face_index=int(source.get("face_index", 0)),
        meta=rest,
    )


def list_avatars(avatars_dir: Path) -> list[AvatarInfo]:
    """The avatars in ``avatars_dir``, by name; one that cannot be read has ``problem``."""
    out = []
    for name in _known(avatars_dir):
        path = avatars_dir / name
        try:
            meta = _read_meta(path)
        except AvatarError as exc:
            out.append(AvatarInfo(name, path, problem=str(exc)))
            continue
        source = meta.get("source", {})
        problem = None if (path / PHOTO_FILE).is_file() else f"{PHOTO_FILE} is missing"
        out.append(
            AvatarInfo(
                name=name,
                path=path,
                created=str(meta.get("created", "")),
                source=str(source.get("file", "")),
                face_index=int(source.get("face_index", 0)),
                eye_distance=float(source.get("eye_distance", 0.0)),
                problem=problem,
            )
        )
    return out


def remove_avatar(avatars_dir: Path, name: str) -> Path:
    """Delete ``avatars_dir/NAME`` (renamed away first, so it vanishes at once); its path."""
    check_name(name)
    path = avatars_dir / name
    if not path.is_dir():
        raise _not_found(avatars_dir, name)
    trash = Path(tempfile.mkdtemp(prefix=f".del-{name}-", dir=avatars_dir))
    os.replace(path, trash / name)
    shutil.rmtree(trash, ignore_errors=True)
    return path
