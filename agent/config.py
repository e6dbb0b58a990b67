"""The one settings model: defaults, then a TOML file, then VISAGE_* environment, then CLI flags.

Environment variables use the ``VISAGE_`` prefix and ``__`` between section and key,
e.g. ``VISAGE_LLM__BASE_URL=http://localhost:11434/v1`` or ``VISAGE_AVATAR__WIDTH=256``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.config import LatencyBudgets, LLMSettings, STTSettings, TTSSettings, VADSettings
from renderer.config import AvatarSettings


class ServerSettings(BaseModel):
    """The HTTP and signalling server."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on.")
    max_sessions: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Concurrent calls; more get 503. Unset: the capacity `visage bench load "
        "--find-capacity` measured for this machine and avatar (face, size, fps, device), "
        "else 1 call per CPU core (agent/capacity.py).",
    )
    connect_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=120.0,
        description="A call whose peer has not connected this long after its offer was "
        "answered is torn down, so offers that never connect cannot hold call slots.",
    )
    vanished_peer_s: float = Field(
        6.0,
        ge=1.0,
        le=60.0,
        description="A connected peer that stops answering ICE consent checks for about "
        "this long (three missed checks) has vanished: its call ends and its slot is freed.",
    )
    ice_loopback: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Offer 127.0.0.1 ICE candidates: auto does so when listening on loopback.",
    )
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    thread_switch_ms: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description=(
            "How long one Python thread may run before another gets a turn "
            "(sys.setswitchinterval). Python's 5 ms default makes the avatar's render "
            "thread and the speech synthesis wait on the busy event loop, which delays "
            "a reply's first frame."
        ),
    )


class Settings(BaseModel):
    """Everything Visage can be told, with a documented default for each key."""

    model_config = ConfigDict(extra="forbid")

    server: ServerSettings = Field(default_factory=ServerSettings)
    stt: STTSettings = Field(default_factory=STTSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    tts: TTSSettings = Field(default_factory=TTSSettings)
    vad: VADSettings = Field(default_factory=VADSettings)
    avatar: AvatarSettings = Field(default_factory=AvatarSettings)
    budgets: LatencyBudgets = Field(default_factory=LatencyBudgets)


class ConfigError(ValueError):
    """A configuration file, variable or flag that cannot be used, with the reason."""


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _read_env(environ: dict[str, str]) -> dict[str, Any]:
    """Turn VISAGE_SECTION__KEY=value variables into nested dicts (values stay strings)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith("VISAGE_") or name == "VISAGE_CONFIG":
            continue
        path = name[len("VISAGE_") :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the effective settings: defaults < TOML file < VISAGE_* env < ``overrides``.

    ``config_file`` defaults to ``$VISAGE_CONFIG`` when set. ``overrides`` is nested like
    the file, e.g. ``{"server": {"port": 9000}}``.
    """
    environ = dict(os.environ if environ is None else environ)
    if config_file is None and environ.get("VISAGE_CONFIG"):
        config_file = Path(environ["VISAGE_CONFIG"])
    data: dict[str, Any] = _read_toml(config_file) if config_file else {}
    data = _deep_merge(data, _read_env(environ))
    data = _deep_merge(data, overrides or {})
    try:
        return Settings(**data)
    except ValidationError as exc:
        problems = "; ".join(_problem(err) for err in exc.errors())
        source = f" (file {config_file})" if config_file else ""
        raise ConfigError(f"invalid settings{source}: {problems}") from None


def _problem(err: Any) -> str:
    """One validation error as ``section.key: what is wrong``; an unknown key gets the
    known key it is closest to, if any."""
    loc = tuple(str(p) for p in err["loc"])
    where = ".".join(loc)
    if err["type"] != "extra_forbidden":
        return f"{where}: {err['msg']}"
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    known = list(model.model_fields)
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(known)}"
    return f"{where}: unknown key ({hint})"


def describe_settings(settings: Settings) -> str:
    """Render the effective settings as TOML-like text, secrets masked, with each key's doc."""
    lines: list[str] = []
    for section_name in Settings.model_fields:
        section = getattr(settings, section_name)
        lines.append(f"[{section_name}]")
        for key, field in type(section).model_fields.items():
            value = getattr(section, key)
            if hasattr(value, "get_secret_value"):
                value = "***" if value.get_secret_value() not in ("", "none") else "none"
            if isinstance(value, Path):
                value = str(value)
            rendered = "unset" if value is None else repr(value)
            doc = f"  # {field.description}" if field.description else ""
            lines.append(f"{key} = {rendered}{doc}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
