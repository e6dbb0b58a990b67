"""Let aiortc offer 127.0.0.1 ICE candidates.

aioice leaves loopback out of its host candidates. On a machine whose only usable
interface is loopback (CI, a kiosk talking to itself, tests) a browser on the same machine
could then never connect. This wraps aioice's address lookup once, process-wide.
"""

from __future__ import annotations

from collections.abc import Callable

import aioice.ice

LOOPBACK = "127.0.0.1"
_original: Callable[[bool, bool], list[str]] | None = None


def offer_loopback_candidates(enabled: bool = True) -> None:
    """Add (or, with ``enabled=False``, stop adding) 127.0.0.1 to aioice's host addresses."""
    global _original
    if enabled and _original is None:
        _original = aioice.ice.get_host_addresses

        def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            assert _original is not None
            addresses = _original(use_ipv4, use_ipv6)
            if use_ipv4 and LOOPBACK not in addresses:
                addresses.append(LOOPBACK)
            return addresses

        # Replacing a library function on purpose; see the module docstring.
        aioice.ice.get_host_addresses = with_loopback  # type: ignore[assignment]
    elif not enabled and _original is not None:
        aioice.ice.get_host_addresses = _original  # type: ignore[assignment]
        _original = None


def should_offer_loopback(mode: str, host: str) -> bool:
    """Decide from the ``server.ice_loopback`` setting and the listening address."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return host in ("127.0.0.1", "localhost", "::1") or not aioice.ice.get_host_addresses(
        True, False
    )
