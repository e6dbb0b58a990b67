"""Session tokens over HTTP: minting them (``POST /api/session``) and the check a request
that starts a call passes when ``server.auth = "token"``.

The origin a token is bound to is the minting request's ``Origin`` (``""`` without one:
a client that is not a browser), or, when minted with ``server.api_key``, the origin the
customer's backend names in the body. The request that spends it must come from that
origin.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from collections.abc import Iterator

from fastapi.responses import JSONResponse
from loguru import logger
from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequest
from starlette.requests import Request

from agent.config import ServerSettings
from agent.server.access import (
    OriginPolicy,
    RateLimiter,
    SessionTokens,
    TokenError,
    normalise_origin,
    request_origin,
)
from agent.server.cors import own_origin
from agent.server.signalling import (
    SignallingError,
    check_json_content_type,
    parse_session_request,
    parse_start_token,
    read_body,
    token_in,
)

MISSING_TOKEN = (
    "this server needs a session token to start a call: get one from POST /api/session "
    "and send it as 'Authorization: Bearer TOKEN' or as request_data.token"
)


def open_server_warning(settings: ServerSettings) -> str | None:
    """A warning when the server listens beyond loopback and anyone may start calls."""
    if settings.auth != "none":
        return None
    try:
        if settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback:
            return None
    except ValueError:
        pass  # a host name: assume it is reachable from elsewhere
    return (
        f"listening on {settings.host} with server.auth = 'none': anyone who can reach "
        "this port can start calls (each costs CPU); set server.auth = 'token' (and "
        "server.api_key for a site's backend), or listen on 127.0.0.1 behind a proxy"
    )


class RateLimitedError(Exception):
    """Too many session tokens asked for from one address (a 429)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many sessions requested from your address; try again in {retry_after_s} s"
        )
        self.retry_after_s = retry_after_s


def bearer(request: Request) -> str | None:
    """The credential of an ``Authorization: Bearer ...`` header, if any."""
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def caller_address(request: Request) -> str:
    """The network address a request came from: a call's owner (proxies are not trusted)."""
    return request.client.host if request.client is not None else "unknown"


class Gate:
    """The server's origin policy, token minter and mint rate limit, as the routes use them."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.policy = OriginPolicy(settings.allowed_origins)
        secret = settings.token_secret
        self.tokens = SessionTokens(
            secret.get_secret_value().encode() if secret else None, settings.token_ttl_s
        )
        self.limiter = RateLimiter(settings.session_rate_per_minute)
        if settings.api_key is not None and settings.auth == "none":
            logger.warning(
                "server.api_key is set but server.auth is 'none': calls start without a "
                "token, so the key protects nothing; set server.auth = 'token'"
            )

    async def mint(self, request: Request) -> JSONResponse:
        """Answer ``POST /api/session``: ``{"token": ..., "expires_in": seconds}``."""
        origin = await self._minting_origin(request)
        ttl = self.tokens.ttl_s
        expires_in = int(ttl) if ttl.is_integer() else ttl
        body = {"token": self.tokens.mint(origin), "expires_in": expires_in}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def _minting_origin(self, request: Request) -> str:
        key = self.settings.api_key
        presented = bearer(request)
        if key is not None and presented is not None:
            if hmac.compare_digest(presented.encode(), key.get_secret_value().encode()):
                # The customer's backend: it limits its own users, so it is not limited here.
                return await self._named_origin(request)
        wait = self.limiter.hit(caller_address(request))
        if wait is not None:
            raise RateLimitedError(wait)
        if key is not None:
            raise TokenError(
                401,
                "session tokens on this server are minted by the site's backend with the "
                "server's API key (Authorization: Bearer API_KEY); ask the site for a token",
            )
        return request_origin(request.headers.get("origin"))

    async def _named_origin(self, request: Request) -> str:
        empty = request.headers.get("content-length", "0") == "0"
        if empty and "content-type" not in request.headers:
            named = None  # no body at all (curl -X POST)
        else:
            named = parse_session_request(await read_body(request))
        if named is None:
            return ""  # for a client that is not a browser
        try:
            origin = normalise_origin(named)
        except ValueError as exc:
            raise SignallingError(f"field 'origin': {exc}") from None
        if origin == "*" or not self.policy.allows(origin, own_origin(request.scope)):
            raise TokenError(403, f"origin {named} is not allowed to use this server")
        return origin

    @contextlib.contextmanager
    def spending_token(self, request: Request, offer: SmallWebRTCRequest) -> Iterator[None]:
        """With token auth, spend the token an offer for a new call must carry, for the
        block that starts the call; it is given back if the block fails (the call did not
        start: no capacity, an offer the WebRTC stack refused). An offer naming its call
        (``pc_id``) needs none: the call's ownership is checked instead."""
        nonce = None
        if self.settings.auth == "token" and offer.pc_id is None:
            nonce = self._check(request, bearer(request) or token_in(offer.request_data))
        try:
            yield
        except BaseException:
            if nonce is not None:
                self.tokens.give_back(nonce)
            raise

    async def admit_start(self, request: Request) -> None:
        """With token auth, check (without spending it) the token ``POST /start`` needs;
        the call's offer spends it."""
        if self.settings.auth != "token":
            return
        token = bearer(request)
        if token is None and request.headers.get("content-type"):
            check_json_content_type(request.headers.get("content-type"))
            token = parse_start_token(await read_body(request))
        self._check(request, token, spend=False)

    def admit_ice_servers(self, request: Request) -> None:
        """With token auth, check (without spending it) the bearer token that
        ``GET /api/ice-servers`` needs: TURN credentials are relay bandwidth."""
        if self.settings.auth == "token":
            self._check(request, bearer(request), spend=False)

    def _check(self, request: Request, token: str | None, *, spend: bool = True) -> str | None:
        """Check ``token`` for a call from this request's origin; spend it (and return its
        nonce) if ``spend``."""
        if token is None:
            raise TokenError(401, MISSING_TOKEN)
        origin = request_origin(request.headers.get("origin"))
        if spend:
            return self.tokens.redeem(token, origin)
        self.tokens.check(token, origin)
        return None
