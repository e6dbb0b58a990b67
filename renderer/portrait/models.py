"""The face model files: their pinned sha256 and the install step that takes them out of
the ``mediapipe`` wheel.

MediaPipe's face detector and 468-point face-landmark models (Apache-2.0) ship inside the
``mediapipe==0.10.21`` wheel, which pins ``numpy<2`` and so cannot share our environment.
``visage models fetch-face`` (run by ``make install``) downloads that wheel with pip
(``--no-deps``, for a fixed platform, so any machine gets the same file), unzips the two
``.tflite`` files, checks their sha256 and stores them in :func:`models_dir`. Nothing is
ever fetched at run time: a missing or altered file is an error naming that command. The
download, extraction and checks are the generic ones of :mod:`agent.models`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.models import Carrier, ModelFile, ModelFileError, ModelSet, models_dir

__all__ = [
    "DETECTOR",
    "FACE_MODELS",
    "FACE_MODEL_SET",
    "FETCH_COMMAND",
    "LANDMARKER",
    "MEDIAPIPE_WHEEL",
    "ModelFile",
    "ModelFileError",
    "fetch_face_models",
    "model_path",
    "models_dir",
]

#: The wheel that carries the model files (used only as a carrier, never installed).
MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
#: The command that fetches the files; every "missing model" error names it.
FETCH_COMMAND = "visage models fetch-face"

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

FACE_MODEL_SET = ModelSet(
    label="face models",
    noun="face model",
    files=FACE_MODELS,
    carrier=Carrier(MEDIAPIPE_WHEEL, platform="manylinux_2_28_x86_64", download_mb=36),
    fetch_command=FETCH_COMMAND,
)


def model_path(model: ModelFile, folder: Path | None = None) -> Path:
    """The verified path of ``model`` in ``folder`` (default :func:`models_dir`).

    Raises :class:`ModelFileError`, naming the command that fetches it, when the file is
    missing or its sha256 is not the pinned one.
    """
    return FACE_MODEL_SET.path(model, folder)


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
    return FACE_MODEL_SET.fetch(folder, wheel=wheel, force=force, log=log)
