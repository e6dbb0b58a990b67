"""A pass-through frame processor that notes when each downstream frame went by."""

from __future__ import annotations

import time

from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class Timestamps(FrameProcessor):
    """Passes everything on; ``seen`` holds (time.monotonic(), frame) for downstream frames."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, Frame]] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.seen.append((time.monotonic(), frame))
        await self.push_frame(frame, direction)
