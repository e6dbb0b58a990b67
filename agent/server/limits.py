"""A call's idle timeout and maximum length: when one is reached, the page is told why
(an RTVI server message) and the call ends through the normal teardown.

The page receives ``{"label": "rtvi-ai", "type": "server-message", "data": {"type":
"session-ended", "reason": "idle" | "max-length", "message": "..."}}`` about
``NOTICE_S`` before the connection closes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from loguru import logger
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame

from pipelines.activity import UserActivityObserver

#: Seconds between telling the page the call ends and ending it, for the message to arrive.
NOTICE_S = 1.0


def _duration(seconds: float) -> str:
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} seconds"


@dataclass(frozen=True)
class SessionEnd:
    """Why a call is being ended by the server."""

    reason: Literal["idle", "max-length"]
    message: str

    def as_message(self) -> dict[str, str]:
        """The data of the RTVI server message that tells the page."""
        return {"type": "session-ended", "reason": self.reason, "message": self.message}


async def wait_for_limit(
    activity: UserActivityObserver,
    idle_timeout_s: float,
    max_session_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> SessionEnd:
    """Return once the call (starting now) has had no user activity for ``idle_timeout_s``
    or has lasted ``max_session_s`` (0 turns either off; both off: never returns)."""
    started = clock()
    while True:
        now = clock()
        deadlines: list[float] = []
        if max_session_s > 0:
            if now - started >= max_session_s:
                return SessionEnd(
                    "max-length",
                    f"The call reached its maximum length of {_duration(max_session_s)}.",
                )
            deadlines.append(started + max_session_s)
        if idle_timeout_s > 0:
            last = max(started, activity.last_activity or started)
            if now - last >= idle_timeout_s:
                return SessionEnd(
                    "idle",
                    f"The call ended after {_duration(idle_timeout_s)} without speech or "
                    "typed messages.",
                )
            deadlines.append(last + idle_timeout_s)
        if not deadlines:
            await asyncio.Event().wait()  # no limits: wait until cancelled
        await asyncio.sleep(max(min(deadlines) - now, 0.0))


async def end_at_limits(
    worker: PipelineWorker,
    activity: UserActivityObserver,
    idle_timeout_s: float,
    max_session_s: float,
    name: str,
) -> None:
    """Wait for a limit, tell the page why the call ends, then cancel the call's
    ``worker`` (its session then tears the connection down)."""
    end = await wait_for_limit(activity, idle_timeout_s, max_session_s)
    logger.info(f"session {name}: ending it ({end.reason}): {end.message}")
    await worker.queue_frame(RTVIServerMessageFrame(data=end.as_message()))
    await asyncio.sleep(NOTICE_S)
    await worker.cancel(reason=f"session ended ({end.reason})")
