"""Settings that belong to the whole process, applied in one place at server start.

Calls share one interpreter: its thread switch interval, torch's CPU thread pool and
aioice's host addresses and consent checks are set once here, not by whichever call
happens to start first.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import aioice.ice
import torch

from agent.config import Settings
from pipelines import compat

#: Unanswered ICE consent checks in a row that end a call (see server.vanished_peer_s).
CONSENT_FAILURES = 3

LOOPBACK = "127.0.0.1"


def configure_process(settings: Settings) -> None:
    """Apply the process-wide settings. Idempotent."""
    # The calls' render and synthesis threads must not queue behind the event loop for
    # the interpreter lock (see ServerSettings.thread_switch_ms).
    sys.setswitchinterval(settings.server.thread_switch_ms / 1000)
    if should_offer_loopback(settings.server.ice_loopback, settings.server.host):
        offer_loopback_candidates()
    compat.set_ice_consent_checks(
        settings.server.vanished_peer_s / CONSENT_FAILURES, CONSENT_FAILURES
    )
    if avatar_runs_on_cpu(settings.avatar.device):
        # The renderer is tuned for a small fixed thread count.
        torch.set_num_threads(settings.avatar.torch_threads)


def avatar_runs_on_cpu(device: str) -> bool:
    """Whether the ``avatar.device`` setting ("auto", "cpu", "cuda") resolves to the CPU."""
    if device == "auto":
        return not torch.cuda.is_available()
    return device == "cpu"


def should_offer_loopback(mode: str, host: str) -> bool:
    """Decide from the ``server.ice_loopback`` setting and the listening address."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return host in ("127.0.0.1", "localhost", "::1") or not aioice.ice.get_host_addresses(
        True, False
    )


def offer_loopback_candidates() -> None:
    """Let aiortc offer 127.0.0.1 ICE candidates. Idempotent.

    aioice leaves loopback out of its host candidates. On a machine whose only usable
    interface is loopback (CI, a kiosk talking to itself, tests) a browser on the same
    machine could then never connect. This wraps aioice's address lookup, process-wide.
    """
    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses
    if getattr(original, "offers_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and LOOPBACK not in addresses:
            addresses.append(LOOPBACK)
        return addresses

    with_loopback.offers_loopback = True  # type: ignore[attr-defined]
    # Replacing a library function on purpose; see the docstring.
    aioice.ice.get_host_addresses = with_loopback
