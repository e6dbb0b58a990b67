"""A call without a network: a pipecat transport that plays scripted user audio in real
time and records what the avatar sends (audio, images, when). It stands in for
SmallWebRTC or LiveKit in ``build_conversation``, unchanged."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    StartFrame,
)
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipelines.frames import AvatarImageFrame

MIC_FRAME_S = 0.02


class MemoryInput(BaseInputTransport):
    """The user's microphone: queued speech, then silence, 20 ms at a time on the clock."""

    def __init__(self, params: TransportParams) -> None:
        super().__init__(params)
        self._pending = np.zeros(0, np.int16)
        self._mic: asyncio.Task | None = None

    def say(self, pcm: np.ndarray) -> float:
        """Queue int16 mono speech at the input rate; returns its length in seconds."""
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])
        return pcm.size / self._params.audio_in_sample_rate

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)
        if self._mic is None:
            self._mic = self.create_task(self._play_mic(), name="memory-mic")

    async def stop(self, frame: EndFrame) -> None:
        await self._stop_mic()
        await super().stop(frame)

    async def cancel(self, frame: CancelFrame) -> None:
        await self._stop_mic()
        await super().cancel(frame)

    async def _stop_mic(self) -> None:
        if self._mic is not None:
            task, self._mic = self._mic, None
            await self.cancel_task(task)

    async def _play_mic(self) -> None:
        rate = self._params.audio_in_sample_rate or 16000
        n = round(rate * MIC_FRAME_S)
        start, sent = time.monotonic(), 0
        while True:
            chunk, self._pending = self._pending[:n], self._pending[n:]
            chunk = np.pad(chunk, (0, n - chunk.size))
            await self.push_audio_frame(InputAudioRawFrame(chunk.tobytes(), rate, 1))
            sent += 1
            await asyncio.sleep(max(start + sent * MIC_FRAME_S - time.monotonic(), 0.0))


class MemoryOutput(BaseOutputTransport):
    """The caller's speaker and screen: notes each audio write and image with its time."""

    def __init__(self, params: TransportParams) -> None:
        super().__init__(params)
        self.audio: list[tuple[float, bytes]] = []
        self.images: list[tuple[float, OutputImageRawFrame]] = []
        #: Messages for the client (RTVI's, as the data channel would carry them).
        self.messages: list[tuple[float, object]] = []

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self.audio.append((time.monotonic(), frame.audio))
        return True

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        self.messages.append((time.monotonic(), frame.message))

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        self.images.append((time.monotonic(), frame))
        return True

    async def write_transport_frame(self, frame: Frame) -> None:
        if isinstance(frame, AvatarImageFrame):  # in line with its audio, as SmallWebRTC does
            await self.write_video_frame(frame.image)


class MemoryTransport(BaseTransport):
    """Scripted input, recorded output; ``connect`` plays the caller arriving."""

    def __init__(self, params: TransportParams) -> None:
        super().__init__()
        self._input = MemoryInput(params)
        self._output = MemoryOutput(params)
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> MemoryInput:
        return self._input

    def output(self) -> MemoryOutput:
        return self._output

    async def connect(self) -> None:
        """The caller is there: the conversation's greeting starts."""
        await self._call_event_handler("on_client_connected", self)
