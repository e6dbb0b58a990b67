"""Who may use the server: the origin policy, single-use session tokens, a per-address
rate limit. Plain Python, no web framework: the app applies them (agent/server/app.py,
agent/server/cors.py).

A token is ``PAYLOAD.SIGNATURE``, both base64url without padding: the payload is the JSON
``{"origin": ..., "exp": ..., "nonce": ...}`` and the signature its HMAC-SHA256 under the
server's token secret. It is bound to the origin it was minted for (``""`` for a client
that is not a browser), expires ``exp`` (Unix seconds), and is used once: its nonce is
remembered until it expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import json
import math
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from urllib.parse import urlsplit

#: The one origin entry that allows every origin.
ANY_ORIGIN = "*"

#: Used tokens remembered at once (until each expires); past it new calls are refused
#: rather than a token made usable twice.
MAX_USED_TOKENS = 100_000

#: Client addresses the rate limiter tracks at once; the least recently seen is dropped.
MAX_TRACKED_ADDRESSES = 10_000

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(text: str) -> str:
    """An origin as browsers send it (``scheme://host[:port]``, lower case, no default
    port), or a ValueError that says what is wrong. A trailing ``/`` is allowed."""
    value = text.strip()
    if value == ANY_ORIGIN:
        return value
    if "*" in value:
        raise ValueError(
            f"{text!r}: wildcards are not supported; list each origin, or use '*' alone "
            "to allow every origin"
        )
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an origin ({exc})") from None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin; write it as https://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(
            f"{text!r} has more than an origin; write scheme://host[:port] only, e.g. "
            f"{parts.scheme}://{parts.hostname}"
        )
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def request_origin(header: str | None) -> str:
    """The normalised ``Origin`` header of a request; ``""`` when there is none (a client
    that is not a browser). An unparsable or ``null`` origin is kept as sent, so it
    matches no allowed origin."""
    if not header:
        return ""
    try:
        return normalise_origin(header)
    except ValueError:
        return header


class OriginPolicy:
    """Which browser origins may use the API, and may frame the call page."""

    def __init__(self, allowed: list[str]) -> None:
        self._allowed = {normalise_origin(origin) for origin in allowed}
        self._any = ANY_ORIGIN in self._allowed

    def allows(self, origin: str, own_origin: str) -> bool:
        """Whether a request from ``origin`` (normalised; ``""`` for none) may use a server
        whose own origin is ``own_origin``. Requests without an origin are not from a
        browser page, so CORS does not concern them."""
        if not origin or origin == own_origin:
            return True
        return self._any or origin in self._allowed

    def frame_ancestors(self) -> str:
        """The value of the ``frame-ancestors`` directive for the call page(s)."""
        if self._any:
            return "*"
        return " ".join(["'self'", *sorted(self._allowed)])


class TokenError(Exception):
    """A session token that cannot start a call; ``status`` is 401, 403 or 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _describe_origin(origin: str) -> str:
    return origin or "a client without an origin (not a browser)"


class SessionTokens:
    """Mints and checks signed, expiring, single-use session tokens."""

    def __init__(
        self,
        secret: bytes | None,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        max_used: int = MAX_USED_TOKENS,
    ) -> None:
        """``secret`` unset: a random one, so tokens are valid in this process only."""
        self._secret = secret or secrets.token_bytes(32)
        self.ttl_s = ttl_s
        self._clock = clock
        self._max_used = max_used
        self._used: set[str] = set()
        self._expiries: list[tuple[float, str]] = []  # a heap of (exp, nonce) of used tokens

    def mint(self, origin: str) -> str:
        """A new token for ``origin`` (normalised; ``""`` for a non-browser client)."""
        payload = {
            "origin": origin,
            "exp": round(self._clock() + self.ttl_s, 3),
            "nonce": secrets.token_urlsafe(16),
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def check(self, token: str, origin: str) -> None:
        """Whether ``token`` could start a call from ``origin`` now, without using it; a
        TokenError says why it could not."""
        self._verify(token, origin)

    def redeem(self, token: str, origin: str) -> str:
        """Use ``token`` for a call from ``origin`` and return its nonce; a TokenError says
        why it cannot be used."""
        expires, nonce = self._verify(token, origin)
        if len(self._used) >= self._max_used:
            raise TokenError(503, "too many calls are being started; try again shortly")
        self._used.add(nonce)
        heapq.heappush(self._expiries, (expires, nonce))
        return nonce

    def give_back(self, nonce: str) -> None:
        """Make a redeemed token usable again (the call it was for did not start)."""
        self._used.discard(nonce)

    def _verify(self, token: str, origin: str) -> tuple[float, str]:
        """(expiry, nonce) of a valid, unused ``token`` for ``origin``; else TokenError."""
        body, dot, signature = token.partition(".")
        if not dot or not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise TokenError(
                401,
                "the session token is not valid (altered, truncated, or minted by another "
                "server); get a new one from POST /api/session",
            )
        try:
            payload = json.loads(_b64decode(body))
            bound, expires, nonce = payload["origin"], float(payload["exp"]), payload["nonce"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            # Signed by us, so this is our bug or a changed format, not the caller's.
            raise TokenError(401, "the session token cannot be read; get a new one") from None
        now = self._clock()
        if now >= expires:
            raise TokenError(
                401,
                f"the session token expired {now - expires:.0f} s ago (tokens last "
                f"{self.ttl_s:g} s); get a new one from POST /api/session",
            )
        if bound != origin:
            raise TokenError(
                403,
                f"the session token was minted for {_describe_origin(bound)}, not for "
                f"{_describe_origin(origin)}",
            )
        self._forget_expired(now)
        if nonce in self._used:
            raise TokenError(401, "the session token was already used; each token starts one call")
        return expires, str(nonce)

    @property
    def remembered(self) -> int:
        """Used tokens still remembered (until they expire)."""
        return len(self._used)

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, nonce = heapq.heappop(self._expiries)
            self._used.discard(nonce)

    def _sign(self, body: str) -> str:
        return _b64encode(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())


class RateLimiter:
    """At most ``limit`` events per ``window_s`` for each key (a client address), over a
    sliding window. Memory is bounded: ``limit`` stamps per key, ``max_keys`` keys."""

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.limit = limit
        self._window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str) -> int | None:
        """Count an event for ``key``: None if allowed, else the whole seconds to wait
        before the next one is (the event is then not counted). A limit of 0: no limit."""
        if self.limit <= 0:
            return None
        now = self._clock()
        stamps = self._events.get(key)
        if stamps is None:
            self._drop_old_keys(now)
            stamps = self._events[key] = deque(maxlen=self.limit)
        else:
            self._events.move_to_end(key)
        while stamps and stamps[0] <= now - self._window_s:
            stamps.popleft()
        if len(stamps) >= self.limit:
            return max(1, math.ceil(stamps[0] + self._window_s - now))
        stamps.append(now)
        return None

    @property
    def tracked(self) -> int:
        """Keys tracked now."""
        return len(self._events)

    def _drop_old_keys(self, now: float) -> None:
        """Before a new key is added: forget the keys seen least recently while their
        events are all out of the window, or while there is no room for one more."""
        while self._events:
            key, stamps = next(iter(self._events.items()))
            full = len(self._events) >= self._max_keys
            if not full and stamps and stamps[-1] > now - self._window_s:
                break
            del self._events[key]
