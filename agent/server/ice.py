"""ICE servers for a call: the list the browser gets and the one the server's peers use.

A TURN server configured without static credentials gets short-lived ones derived from
``server.turn_secret``, as coturn's ``use-auth-secret`` (the "TURN REST API") expects:
the username is ``"<unix expiry>:<label>"`` and the credential is
``base64(HMAC-SHA1(secret, username))``. coturn recomputes the credential from the
username, so nothing is shared but the secret, and refuses a username whose expiry has
passed. It checks the credential when a relay is opened; a relay opened in time stays
open for the whole call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiortc import RTCIceServer

from agent.config import ServerSettings


@dataclass(frozen=True)
class TurnCredential:
    """A TURN username and password that open a relay until ``expires_at``."""

    username: str
    credential: str
    expires_at: int  # unix time


def turn_credential(
    secret: str, ttl_s: int, label: str = "visage", now: float | None = None
) -> TurnCredential:
    """Derive a credential from the TURN server's shared secret, valid ``ttl_s`` from
    ``now`` (default: the current time). ``label`` names its user in the TURN server's
    logs."""
    expires_at = int(now if now is not None else time.time()) + ttl_s
    username = f"{expires_at}:{label}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return TurnCredential(username, base64.b64encode(digest).decode("ascii"), expires_at)


@dataclass(frozen=True)
class ResolvedIceServer:
    """One ICE server with the credentials to use now (None for a STUN server)."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None

    def as_browser_dict(self) -> dict[str, Any]:
        """An ``RTCIceServer`` dictionary for ``new RTCPeerConnection({iceServers})``."""
        out: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            out |= {"username": self.username, "credential": self.credential}
        return out

    def as_aiortc(self) -> RTCIceServer:
        """The same server for aiortc (which uses the first STUN and TURN URL it can)."""
        return RTCIceServer(
            urls=list(self.urls), username=self.username, credential=self.credential
        )


def resolve_ice_servers(
    settings: ServerSettings, label: str = "visage", now: float | None = None
) -> list[ResolvedIceServer]:
    """The configured ICE servers, each TURN server without static credentials given one
    credential freshly derived from ``turn_secret`` (shared by all of them)."""
    derived: TurnCredential | None = None
    out: list[ResolvedIceServer] = []
    for server in settings.ice_servers:
        if server.username is not None and server.credential is not None:
            secret = server.credential.get_secret_value()
            out.append(ResolvedIceServer(list(server.urls), server.username, secret))
        elif server.is_turn and settings.turn_secret is not None:
            if derived is None:
                derived = turn_credential(
                    settings.turn_secret.get_secret_value(), settings.turn_ttl_s, label, now
                )
            out.append(ResolvedIceServer(list(server.urls), derived.username, derived.credential))
        else:
            out.append(ResolvedIceServer(list(server.urls)))
    return out


def browser_ice_servers(settings: ServerSettings, now: float | None = None) -> dict[str, Any]:
    """The body of ``GET /api/ice-servers``: ``{"ice_servers": [...], "expires_in": s}``,
    with credentials minted for this request (``expires_in``: fetch again after that)."""
    label = f"visage-web-{secrets.token_hex(4)}"  # tells one browser's relay from another
    servers = resolve_ice_servers(settings, label, now)
    return {
        "ice_servers": [server.as_browser_dict() for server in servers],
        "expires_in": settings.turn_ttl_s,
    }


def server_ice_servers(settings: ServerSettings, now: float | None = None) -> list[RTCIceServer]:
    """The ICE servers for a new server-side peer connection, with fresh credentials."""
    return [server.as_aiortc() for server in resolve_ice_servers(settings, "visage-server", now)]
