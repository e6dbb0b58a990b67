"""When the user's turn starts, and so when the avatar is interrupted.

While the avatar is silent, any speech VAD hears starts the user's turn at once. While
it talks, a cough, a click or an "uh-huh" must not throw its reply away: the avatar stage
pauses on VAD's speech start (audio halts, the mouth relaxes), and the turn only starts
— interrupting the reply for good — once the user has kept talking for
``min_speech_secs``. Shorter sounds end with VAD's stop, and the avatar resumes.

VAD reports a stop only after ``stop_secs`` of silence, so the check waits that much
longer: the turn starts if VAD has not reported a stop ``min_speech_secs - start_secs +
stop_secs`` after its start, which is exactly when the speech lasted ``min_speech_secs``.
(Waiting only ``min_speech_secs - start_secs`` would let any sound long enough to start
VAD also interrupt.) The avatar's audio is already halted meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start.base_user_turn_start_strategy import BaseUserTurnStartStrategy


class SustainedSpeechUserTurnStartStrategy(BaseUserTurnStartStrategy):
    """VAD starts the turn; over the avatar's speech only sustained speech does."""

    def __init__(
        self,
        *,
        min_speech_secs: float,
        vad_start_secs: float,
        vad_stop_secs: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # VAD reports speech after vad_start_secs of it, and its end vad_stop_secs late.
        self._extra_secs = (
            max(0.0, min_speech_secs - vad_start_secs) + vad_stop_secs if min_speech_secs else 0.0
        )
        self._bot_speaking = False
        self._pending: asyncio.Task | None = None

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Start the turn now, later, or not at all, depending on who is speaking."""
        await super().process_frame(frame)
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            if not self._bot_speaking or self._extra_secs == 0:
                await self.trigger_user_turn_started()
                return ProcessFrameResult.STOP
            await self._cancel_pending()
            self._pending = self.create_task(
                self._start_if_still_speaking(time.monotonic()), name="sustained-speech"
            )
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            await self._cancel_pending()
        return ProcessFrameResult.CONTINUE

    async def _start_if_still_speaking(self, since: float) -> None:
        await asyncio.sleep(max(0.0, since + self._extra_secs - time.monotonic()))
        self._pending = None
        await self.trigger_user_turn_started()

    async def _cancel_pending(self) -> None:
        if self._pending is not None:
            task, self._pending = self._pending, None
            await self.cancel_task(task)

    async def handle_user_turn_started(self) -> None:
        """A turn started (by this or another strategy): no delayed start is needed."""
        await super().handle_user_turn_started()
        await self._cancel_pending()

    async def cleanup(self) -> None:
        """Drop a delayed start; safe to call twice."""
        await self._cancel_pending()
        await super().cleanup()
