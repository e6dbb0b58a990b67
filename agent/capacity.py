"""How many calls this server admits, and where that number comes from.

The rule (:func:`resolve_max_sessions`):

1. ``server.max_sessions``, when set, wins.
2. Otherwise the capacity ``visage bench load --find-capacity`` measured and saved for
   this machine and configuration: the largest number of calls that all kept 24 fps,
   real-time audio and their latency budgets. A measurement is keyed by what decides it
   (:class:`CapacityKey`: CPU model, usable cores, GPU, face drawer, video size, fps,
   motion source), so one made for another machine or another avatar is not used.
3. Otherwise a conservative :data:`CALLS_PER_CORE` calls per usable CPU core, at least
   one. (A 2-core machine held 25 fps and real-time audio for 2 calls with the stylised
   face at 512x512, and not for 3.)

Measurements live in one small JSON file, by default ``$XDG_CACHE_HOME/visage/capacity.json``
(``~/.cache/visage/capacity.json``); ``visage bench load --capacity-file`` writes another.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.config import Settings

#: Calls admitted per usable CPU core until a capacity has been measured: measured on a
#: 2-core machine, one call holds every budget and two do not (README, "Admission").
CALLS_PER_CORE = 0.5
#: The most calls ``server.max_sessions`` allows.
MAX_CALLS = 256
FILE_VERSION = 1


def default_capacity_file() -> Path:
    """``$XDG_CACHE_HOME/visage/capacity.json``, or ``~/.cache/visage/capacity.json``."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "visage" / "capacity.json"


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def avatar_device(settings: Settings) -> str:
    """Where the avatar is drawn: "cpu", or "cuda:<GPU name>"."""
    import torch

    from agent.process import avatar_runs_on_cpu

    if avatar_runs_on_cpu(settings.avatar.device) or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{torch.cuda.get_device_name(0)}"


@dataclass(frozen=True)
class CapacityKey:
    """What a measured capacity depends on; a saved one is used only where all match."""

    cpu: str
    cores: int
    device: str
    face: str
    width: int
    height: int
    fps: int
    motion: str

    @classmethod
    def current(cls, settings: Settings) -> CapacityKey:
        """This machine with these settings."""
        avatar = settings.avatar
        return cls(
            cpu=cpu_model(),
            cores=usable_cores(),
            device=avatar_device(settings),
            face=avatar.face,
            width=avatar.width,
            height=avatar.height,
            fps=avatar.fps,
            motion=avatar.motion,
        )

    def describe(self) -> str:
        """One line: machine, then avatar."""
        return (
            f"{self.cpu}, {self.cores} cores, {self.device}; face {self.face} "
            f"{self.width}x{self.height} at {self.fps} fps, {self.motion} motion"
        )


@dataclass
class CapacityRecord:
    """A saved measurement: the key, the capacity, when and how it was measured."""

    key: CapacityKey
    capacity: int
    measured_at: str
    command: str = ""
    summary: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "key": asdict(self.key)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CapacityRecord:
        """From :meth:`as_dict`'s shape; ``ValueError``/``TypeError``/``KeyError`` if not."""
        capacity = data["capacity"]
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
            raise ValueError(f"capacity must be a whole number >= 0, got {capacity!r}")
        return cls(
            key=CapacityKey(**data["key"]),
            capacity=capacity,
            measured_at=str(data.get("measured_at", "")),
            command=str(data.get("command", "")),
            summary=data.get("summary"),
        )


class CapacityFileError(ValueError):
    """The capacity file exists but cannot be read as one."""


def load_records(path: Path) -> list[CapacityRecord]:
    """Every measurement in ``path``; none if it does not exist."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise CapacityFileError(f"capacity file {path} cannot be read: {exc}") from None
    try:
        return [CapacityRecord.from_dict(item) for item in data["records"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise CapacityFileError(
            f"capacity file {path} is not one `visage bench load --find-capacity` wrote "
            f"({exc!r}); delete it or measure again"
        ) from None


def find_record(key: CapacityKey, path: Path) -> CapacityRecord | None:
    """The measurement saved in ``path`` for ``key``, if any."""
    return next((r for r in load_records(path) if r.key == key), None)


def save_record(record: CapacityRecord, path: Path) -> None:
    """Store ``record`` in ``path``, replacing one with the same key (atomic write)."""
    try:
        records = [r for r in load_records(path) if r.key != record.key]
    except CapacityFileError:
        records = []  # a broken file is replaced by a good one
    records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"version": FILE_VERSION, "records": [r.as_dict() for r in records]}
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(data, indent=2) + "\n")
    scratch.replace(path)


def new_record(
    settings: Settings, capacity: int, command: str = "", summary: dict[str, Any] | None = None
) -> CapacityRecord:
    """A measurement made now on this machine with ``settings``."""
    return CapacityRecord(
        key=CapacityKey.current(settings),
        capacity=capacity,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        command=command,
        summary=summary,
    )


def per_core_default(cores: int) -> int:
    """The conservative call limit for ``cores`` usable cores: at least 1."""
    return max(1, min(MAX_CALLS, math.floor(cores * CALLS_PER_CORE)))


def resolve_max_sessions(settings: Settings, path: Path | None = None) -> tuple[int, str]:
    """The server's call limit, and a sentence saying where it came from.

    ``path`` is the capacity file (default :func:`default_capacity_file`). A file that
    cannot be read is reported in the sentence and the per-core figure is used.
    """
    explicit = settings.server.max_sessions
    if explicit is not None:
        return explicit, f"{explicit} calls: server.max_sessions is set"
    path = path or default_capacity_file()
    key = CapacityKey.current(settings)
    problem = ""
    try:
        record = find_record(key, path)
    except CapacityFileError as exc:
        record, problem = None, f" ({exc})"
    if record is not None:
        limit = max(1, min(MAX_CALLS, record.capacity))
        floor = "" if record.capacity >= 1 else " (not even 1 call kept its budgets; 1 admitted)"
        return limit, (
            f"{limit} calls: the capacity measured for this machine and avatar "
            f"({key.describe()}) on {record.measured_at}, saved in {path}{floor}"
        )
    limit = per_core_default(key.cores)
    return limit, (
        f"{limit} call(s): {CALLS_PER_CORE:g} per CPU core ({key.cores} usable), since no "
        f"capacity is measured for this machine and avatar in {path}{problem}; run "
        "`visage bench load --find-capacity` to measure it, or set server.max_sessions"
    )
