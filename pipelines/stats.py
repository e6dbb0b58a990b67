"""Per-session counters gathered by watching frames, for /api/calls/{pc_id} and tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InterruptionFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed

from pipelines.frames import AvatarImageFrame


@dataclass
class SessionStats:
    """What went through one session's pipeline so far."""

    audio_in_seconds: float = 0.0
    audio_in_peak_rms: float = 0.0
    user_transcripts: int = 0
    last_user_transcript: str = ""
    bot_audio_seconds: float = 0.0
    video_frames_out: int = 0
    interruptions: int = 0

    def as_dict(self) -> dict[str, float | int | str]:
        """The counters as a JSON-ready dict."""
        return asdict(self)


class SessionStatsObserver(BaseObserver):
    """Counts input audio (and its loudness), transcripts, reply audio and video frames."""

    def __init__(self, output_processor: object, input_processor: object, **kwargs) -> None:
        super().__init__(**kwargs)
        self.stats = SessionStats()
        self._output = output_processor
        self._input = input_processor

    async def on_push_frame(self, data: FramePushed) -> None:
        """Update the counters from one frame push."""
        frame = data.frame
        if isinstance(frame, InputAudioRawFrame):
            if data.source is self._input:
                self._count_input_audio(frame)
        elif not data.first_push:
            return
        elif isinstance(frame, TranscriptionFrame):
            self.stats.user_transcripts += 1
            self.stats.last_user_transcript = frame.text
        elif isinstance(frame, InterruptionFrame):
            self.stats.interruptions += 1
        elif data.destination is self._output and isinstance(frame, TTSAudioRawFrame):
            self.stats.bot_audio_seconds += len(frame.audio) / 2 / frame.sample_rate
        elif data.destination is self._output and isinstance(frame, AvatarImageFrame):
            self.stats.video_frames_out += 1

    def _count_input_audio(self, frame: InputAudioRawFrame) -> None:
        samples = np.frombuffer(frame.audio, np.int16).astype(np.float32) / 32768.0
        if samples.size:
            rms = float(np.sqrt(np.mean(samples**2)))
            self.stats.audio_in_peak_rms = max(self.stats.audio_in_peak_rms, rms)
            self.stats.audio_in_seconds += samples.size / frame.sample_rate / frame.num_channels
