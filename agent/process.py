"""Settings that belong to the whole process, applied in one place at server start.

Calls share one interpreter: its thread switch interval, torch's CPU thread pool and
aioice's host addresses and consent checks are set once here, not by whichever call
happens to start first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Callable

import aioice.ice
import torch

from agent.config import Settings
from agent.log_privacy import install_log_redaction
from pipelines import compat

#: Unanswered ICE consent checks in a row that end a call (see server.vanished_peer_s).
CONSENT_FAILURES = 3

LOOPBACK = "127.0.0.1"


def configure_process(settings: Settings) -> None:
    """Apply the process-wide settings. Idempotent."""
    install_log_redaction()  # conversation text stays out of pipecat's log lines
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


def release_call_memory(calls_running: int, *, freeze_when_idle: bool = False) -> None:
    """Give back what a finished call held: run the cycle collector, and return freed heap
    to the system.

    A call's peer connection, transports and FFmpeg resamplers sit in reference cycles
    (aiortc's event handlers hold their owners), each with FFmpeg worker threads. Python's
    collector frees them only when a full collection happens to run, which under a steady
    load is rarely: 100 calls left RSS 900 MB higher and 40 idle threads. In a server
    (``freeze_when_idle``), what survives with no call running lives as long as the process
    (models, caches), so it is frozen out of later collections, which then cost
    milliseconds rather than 300 ms. (Not in tests: there servers come and go.)
    """
    gc.collect()
    if freeze_when_idle and calls_running == 0:
        gc.freeze()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()  # glibc's malloc_trim; None elsewhere (musl, macOS)
