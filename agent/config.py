"""The one settings model: defaults, then a TOML file, then VISAGE_* environment, then CLI flags.

Environment variables use the ``VISAGE_`` prefix and ``__`` between section and key,
e.g. ``VISAGE_LLM__BASE_URL=http://localhost:11434/v1`` or ``VISAGE_AVATAR__WIDTH=256``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.server.access import normalise_origin
from pipelines.config import LatencyBudgets, LLMSettings, STTSettings, TTSSettings, VADSettings
from renderer.config import AvatarSettings

#: A STUN or TURN URL as RFC 7064 and RFC 7065 write it: scheme, host (an IPv6 address in
#: brackets), an optional port and, for TURN only, an optional transport.
ICE_URL = re.compile(
    r"(?P<scheme>stuns?|turns?):(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s?:/@\[\]]+)"
    r"(?::(?P<port>[0-9]{1,5}))?(?:\?transport=(?P<transport>[a-z]+))?"
)


def check_ice_url(url: str) -> str:
    """``url`` if it is a STUN/TURN URL a browser and aiortc both take, else a ValueError
    that says what is wrong with it."""
    match = ICE_URL.fullmatch(url)
    if match is None:
        raise ValueError(
            f"{url!r} is not a STUN/TURN URL; write stun:HOST[:PORT], "
            "turn:HOST[:PORT][?transport=udp|tcp] or turns:HOST[:PORT][?transport=tcp]"
        )
    scheme, port, transport = match["scheme"], match["port"], match["transport"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"{url!r}: port {port} is not between 1 and 65535")
    if transport is not None:
        if scheme.startswith("stun"):
            raise ValueError(f"{url!r}: a STUN URL takes no ?transport=")
        if transport not in ("udp", "tcp"):
            raise ValueError(f"{url!r}: transport must be udp or tcp, not {transport!r}")
    return url


class IceServer(BaseModel):
    """One STUN or TURN server, as the browser's ``RTCIceServer`` describes it."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(
        min_length=1,
        description="Its URLs: stun:HOST[:PORT], turn:HOST[:PORT][?transport=udp|tcp], "
        "turns:HOST[:PORT] (one string is taken as a list of one).",
    )
    username: str | None = Field(
        None,
        description="A static TURN username (a long-term user of the TURN server). Unset: "
        "one is derived for each request from server.turn_secret.",
    )
    credential: SecretStr | None = Field(
        None, description="The static TURN password that goes with username."
    )

    @field_validator("urls", mode="before")
    @classmethod
    def _one_url_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("urls")
    @classmethod
    def _valid_urls(cls, urls: list[str]) -> list[str]:
        return [check_ice_url(url) for url in urls]

    @model_validator(mode="after")
    def _credentials_come_in_pairs(self) -> IceServer:
        if (self.username is None) != (self.credential is None):
            raise ValueError("give both username and credential, or neither")
        return self

    @property
    def is_turn(self) -> bool:
        """Whether any of its URLs is a TURN URL (those need credentials)."""
        return any(url.startswith("turn") for url in self.urls)


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
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins (scheme://host[:port], no path) whose pages may use the "
        "API and frame the call page, e.g. ['https://www.example.com']. Empty: the server's "
        "own origin only. '*' alone allows every origin (no other wildcards). Clients that "
        "send no Origin (not browsers) pass this check.",
    )
    auth: Literal["none", "token"] = Field(
        "none",
        description="token: every new call needs a single-use session token from POST "
        "/api/session (Authorization: Bearer TOKEN, or request_data.token in the offer).",
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, only callers presenting Authorization: Bearer API_KEY (your "
        "site's backend) may mint session tokens, naming the origin each is for; browsers "
        "cannot mint their own.",
    )
    token_secret: SecretStr | None = Field(
        None,
        description="HMAC key that signs session tokens. Unset: a random key per process; "
        "set the same one on every node behind a load balancer.",
    )
    token_ttl_s: float = Field(
        60.0, gt=0.0, le=3600.0, description="Seconds a session token stays valid for its call."
    )
    session_rate_per_minute: int = Field(
        10,
        ge=0,
        le=10_000,
        description="Session tokens (POST /api/session) one client address may mint per minute; "
        "more get 429 with Retry-After. 0: no limit. Callers with the api_key are not limited.",
    )
    idle_timeout_s: float = Field(
        300.0,
        ge=0.0,
        description="A call with no user speech and no typed text for this long ends (the page "
        "is told why). 0: never.",
    )
    max_session_s: float = Field(
        1800.0,
        ge=0.0,
        description="Longest a call may last; it then ends (the page is told why). 0: no limit.",
    )
    ice_loopback: Literal["auto", "always", "never"] = Field(
        "auto",
        description="Offer 127.0.0.1 ICE candidates: auto does so when listening on loopback.",
    )
    log_level: Literal["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO",
        description="Log level. DEBUG and TRACE log what is said and typed in calls; INFO "
        "and above log no conversation text, tokens or keys.",
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
    ice_servers: list[IceServer] = Field(
        default_factory=list,
        description="STUN/TURN servers for the browser (GET /api/ice-servers) and for the "
        "server's own peer connections, e.g. [{urls = ['turn:turn.example.com:3478']}]. A "
        "TURN server without username/credential gets short-lived ones from turn_secret.",
    )
    turn_secret: SecretStr | None = Field(
        None,
        description="The TURN server's shared secret (coturn: use-auth-secret, "
        "static-auth-secret): TURN credentials are derived from it for each request.",
    )
    turn_ttl_s: int = Field(
        600,
        ge=60,
        le=86_400,
        description="How long a derived TURN credential can open a relay, in seconds (a "
        "relay opened in time lasts the whole call).",
    )
    caller_avatar: bool = Field(
        True,
        description="Callers may choose the face of their call (request_data.avatar, the "
        'widget\'s avatar attribute): "stylised" or the name of a portrait avatar in '
        "avatar.dir. Off: every call gets avatar.face.",
    )

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins_from_text(cls, value: Any) -> Any:
        # VISAGE_SERVER__ALLOWED_ORIGINS / --set: "https://a.example,https://b.example"
        if isinstance(value, str):
            return [part for part in re.split(r"[,\s]+", value) if part]
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _valid_origins(cls, origins: list[str]) -> list[str]:
        return [normalise_origin(origin) for origin in origins]

    @model_validator(mode="after")
    def _turn_has_credentials(self) -> ServerSettings:
        for i, server in enumerate(self.ice_servers):
            if server.is_turn and server.username is None and self.turn_secret is None:
                raise ValueError(
                    f"ice_servers[{i}] is a TURN server without username and credential: "
                    "set them, or set server.turn_secret to derive short-lived ones"
                )
        return self


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


def _takes_structure(annotation: Any) -> bool:
    """Whether a key of this type holds a list, a table or a section (not one scalar)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_structure(arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset, dict):
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _decode_structured(
    data: dict[str, Any], model: type[BaseModel], where: str = ""
) -> dict[str, Any]:
    """Parse the strings that VISAGE_* variables and ``--set`` flags give for list and table
    keys: a value starting with ``[`` or ``{`` is JSON (``[{"urls": ["turn:h"]}]``) or a
    TOML value (``[{urls = ["turn:h"]}]``). Any other string is left to the key's type."""
    out = dict(data)
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            continue  # reported as an unknown key by validation
        annotation, path = field.annotation, f"{where}{key}"
        if isinstance(value, dict) and isinstance(annotation, type):
            if issubclass(annotation, BaseModel):
                out[key] = _decode_structured(value, annotation, f"{path}.")
        elif isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            if _takes_structure(annotation):
                out[key] = _parse_structure(value, path)
    return out


def _parse_structure(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{where}: {text!r} is neither JSON nor a TOML value ({exc}); write e.g. "
            '[{"urls": ["turn:host:3478"]}] or [{urls = ["turn:host:3478"]}]'
        ) from None


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
    data = _deep_merge(data, _decode_structured(_read_env(environ), Settings))
    data = _deep_merge(data, _decode_structured(overrides or {}, Settings))
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
