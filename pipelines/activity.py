"""When the user last did something in a call: spoke (VAD or a transcript) or typed."""

from __future__ import annotations

import time
from collections.abc import Callable

from pipecat.frames.frames import (
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.frameworks.rtvi.frames import RTVISendTextFrame

#: Frames that show the user is there: their speech, its transcript, or a typed message
#: (RTVI's ``send-text``).
USER_ACTIVITY_FRAMES = (
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserSpeakingFrame,
    UserStoppedSpeakingFrame,
    TranscriptionFrame,
    InterimTranscriptionFrame,
    RTVISendTextFrame,
)


class UserActivityObserver(BaseObserver):
    """Notes the time (``clock``) of the user's last speech or typed message."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(observe_every_push=False)
        self._clock = clock
        #: When the user last spoke or typed; None until they do.
        self.last_activity: float | None = None

    async def on_push_frame(self, data: FramePushed) -> None:
        """Note the user's activity."""
        if isinstance(data.frame, USER_ACTIVITY_FRAMES):
            self.last_activity = self._clock()
