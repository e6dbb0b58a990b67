"""Session ids for pipecat's ``POST /start`` flow, checked without keeping any state.

An id is a random part, an expiry time and an HMAC of both under a secret that lives as
long as the app. Any id the app issued and that has not expired checks out; nothing is
stored, so nothing needs pruning and a flood of ``/start`` calls costs no memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

#: An id must be used for its offer within this time.
START_SESSION_TTL_S = 300.0


class StartSessionIds:
    """Issues and checks signed, expiring session ids."""

    def __init__(
        self, ttl_s: float = START_SESSION_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._secret = secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._clock = clock

    def issue(self) -> str:
        """A new id, valid for the app's lifetime or ``ttl_s``, whichever ends first."""
        expires_ms = int((self._clock() + self._ttl_s) * 1000)
        body = f"{secrets.token_hex(8)}-{expires_ms}"
        return f"{body}-{self._sign(body)}"

    def valid(self, session_id: str) -> bool:
        """Whether this app issued ``session_id`` and it has not expired."""
        body, _, signature = session_id.rpartition("-")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return False
        expires_ms = int(body.rpartition("-")[2])  # ours, as the signature shows
        return self._clock() * 1000 < expires_ms

    def _sign(self, body: str) -> str:
        return hmac.new(self._secret, body.encode(), hashlib.sha256).hexdigest()
