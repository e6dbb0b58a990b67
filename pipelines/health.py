"""The state of the services a call depends on (LLM, TTS, STT), shared by every call.

Stages report each success and failure here; ``/health`` shows the result, so a load
balancer can see that the avatar would fall silent before a caller does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class _State:
    failing_since: float | None = None
    last_error: str | None = None


class DependencyHealth:
    """Per-dependency state: ``ok``, or failing since a time, with the last error."""

    def __init__(self) -> None:
        self._states: dict[str, _State] = {}

    def ok(self, name: str) -> None:
        """``name`` just worked."""
        self._states[name] = _State()

    def failed(self, name: str, why: str) -> None:
        """``name`` just failed with ``why`` (a short, log-safe reason)."""
        state = self._states.setdefault(name, _State())
        if state.failing_since is None:
            state.failing_since = time.time()
        state.last_error = why

    @property
    def degraded(self) -> bool:
        """Whether any dependency is failing now."""
        return any(state.failing_since is not None for state in self._states.values())

    def describe(self) -> dict[str, str]:
        """Each dependency's state as text, e.g. ``{"llm": "unreachable since ..."}``."""
        out: dict[str, str] = {}
        for name, state in sorted(self._states.items()):
            if state.failing_since is None:
                out[name] = "ok"
            else:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(state.failing_since))
                out[name] = f"{state.last_error} since {since}"
        return out
