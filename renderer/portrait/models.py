"""The face model files: where they live, their pinned sha256, and the install step that
takes them out of the ``mediapipe`` wheel.

MediaPipe's face detector and 468-point face-landmark models (Apache-2.0) ship inside the
``mediapipe==0.10.21`` wheel, which pins ``numpy<2`` and so cannot share our environment.
``visage models fetch-face`` (run by ``make install``) downloads that wheel with pip
(``--no-deps``, for a fixed platform, so any machine gets the same file), unzips the two
``.tflite`` files, checks their sha256 and stores them in :func:`models_dir`. Nothing is
ever fetched at run time: a missing or altered file is an error naming that command.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: The wheel that carries the model files (used only as a carrier, never installed).
MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
#: The command that fetches the files; every "missing model" error names it.
FETCH_COMMAND = "visage models fetch-face"


@dataclass(frozen=True)
class ModelFile:
    """One model file: its path inside the wheel and its pinned sha256."""

    name: str
    member: str
    sha256: str
    size: int


DETECTOR = ModelFile(
    name="face_detection_short_range.tflite",
    member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    sha256="bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    size=229_714,
)
LANDMARKER = ModelFile(
    name="face_landmark.tflite",
    member="mediapipe/modules/face_landmark/face_landmark.tflite",
    sha256="1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    size=1_242_398,
)
FACE_MODELS = (DETECTOR, LANDMARKER)


class ModelFileError(RuntimeError):
    """A model file is missing or is not the pinned one; the message says how to fix it."""


def models_dir() -> Path:
    """``$XDG_CACHE_HOME/visage/models`` (by default ``~/.cache/visage/models``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "visage" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_hint(folder: Path) -> str:
    extra = "" if folder == models_dir() else f" --dir {folder}"
    return f"run `{FETCH_COMMAND}{extra}` (`make install` does it)"


def model_path(model: ModelFile, folder: Path | None = None) -> Path:
    """The verified path of ``model`` in ``folder`` (default :func:`models_dir`).

    Raises :class:`ModelFileError`, naming the command that fetches it, when the file is
    missing or its sha256 is not the pinned one.
    """
    folder = folder if folder is not None else models_dir()
    path = folder / model.name
    if not path.is_file():
        raise ModelFileError(
            f"face model {model.name} is missing from {folder}: {_fetch_hint(folder)}"
        )
    digest = _sha256(path)
    if digest != model.sha256:
        raise ModelFileError(
            f"face model {path} is not the pinned file (sha256 {digest[:12]}..., expected "
            f"{model.sha256[:12]}...; corrupt or replaced): {_fetch_hint(folder)} to fetch it again"
        )
    return path


def _download_wheel(dest: Path, log: Callable[[str], None]) -> Path:
    """``pip download --no-deps`` the carrier wheel into ``dest``; its path."""
    log(f"downloading {MEDIAPIPE_WHEEL} with pip (about 36 MB, only two files are kept)...")
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
        "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
        "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
        "--dest", str(dest), MEDIAPIPE_WHEEL,
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("mediapipe-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ModelFileError(
            f"pip could not download {MEDIAPIPE_WHEEL} (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-600:]}"
        )
    return wheels[0]


def fetch_face_models(
    folder: Path | None = None,
    *,
    wheel: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Put the verified face model files in ``folder`` (default :func:`models_dir`).

    Idempotent: files already there with the pinned sha256 are kept, and nothing is
    downloaded (unless ``force``). ``wheel`` is a ``mediapipe-0.10.21`` wheel already on
    disk (offline installs); without it pip downloads one. Each file is written to a
    temporary name and renamed, so an interrupted fetch leaves no partial file.
    """
    folder = folder if folder is not None else models_dir()
    wanted = list(FACE_MODELS)
    if not force:
        wanted = [m for m in FACE_MODELS if not _is_good(folder / m.name, m)]
    if not wanted:
        log(f"face models: up to date in {folder}")
        return [folder / m.name for m in FACE_MODELS]
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="visage-models-") as tmp:
        carrier = wheel if wheel is not None else _download_wheel(Path(tmp), log)
        try:
            archive = zipfile.ZipFile(carrier)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelFileError(f"{carrier} is not a readable wheel: {exc}") from exc
        with archive:
            for model in wanted:
                try:
                    data = archive.read(model.member)
                except KeyError:
                    raise ModelFileError(f"{carrier} has no {model.member}") from None
                digest = hashlib.sha256(data).hexdigest()
                if digest != model.sha256:
                    raise ModelFileError(
                        f"{model.member} in {carrier} has sha256 {digest}, expected "
                        f"{model.sha256}; refusing it"
                    )
                part = folder / f".{model.name}.part"
                part.write_bytes(data)
                os.replace(part, folder / model.name)
                log(f"face models: {model.name} ({len(data) / 1e6:.1f} MB, sha256 ok) -> {folder}")
    return [folder / m.name for m in FACE_MODELS]


def _is_good(path: Path, model: ModelFile) -> bool:
    return path.is_file() and _sha256(path) == model.sha256
