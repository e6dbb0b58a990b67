"""pipecat's SmallWebRTC transport, with the avatar's video sent in step with its voice.

It also shortens aiortc's audio receive delay (see
:func:`~pipelines.compat.shorten_audio_jitter_buffer`), keeps the outgoing audio track one
write ahead (see :meth:`AvatarWebRTCOutputTransport.write_audio_frame`), does not pad a
reply with silence when a write is a few milliseconds late (see :class:`ReplyAudioTrack`),
and hands the avatar back the reply audio it has not sent yet when the avatar pauses for
the user (see :func:`take_back_unsent_audio`).

pipecat's own output video track stamps frames on aiortc's fixed 30 fps clock and blocks
until a frame arrives, and its live-video task paces frames again, a frame period late.
Here each avatar image is an :class:`~pipelines.frames.AvatarImageFrame`, which pipecat's
output transport queues behind the audio pushed before it (its sync path) and hands to
``write_transport_frame`` as that audio goes out; :class:`AvatarVideoTrack` sends it at
once, stamped with its send time.

Only pipecat's own client exists: the tracks are swapped when the peer connects, before
any ``on_client_connected`` handler runs (see :class:`AvatarWebRTCTransport`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import time
from collections import deque

import numpy as np
from aiortc import VideoStreamTrack
from av import AudioFrame, VideoFrame
from pipecat.frames.frames import Frame, OutputAudioRawFrame, OutputImageRawFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import (
    RawAudioTrack,
    SmallWebRTCClient,
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)

from pipelines import compat
from pipelines.frames import AvatarImageFrame, ReplyAudioHoldFrame, ReplyAudioReturnedFrame

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
# The avatar sends a frame every period; a gap this long means it stalled, and the last
# frame goes out again so the stream stays alive (a shorter wait doubles late frames).
REPEAT_AFTER_S = 0.25
# Frames queued beyond this are stale: the producer ran ahead, so the oldest are dropped.
MAX_QUEUED_FRAMES = 3
# aiortc's audio receiver holds 4 packets (80 ms) before releasing one. The server does
# not play the user's audio out; it only feeds VAD, turn detection and STT, which want it
# as soon as it arrives. A packet that comes out of order is dropped instead.
SERVER_AUDIO_PREFETCH = 0
# In the middle of a reply, an empty audio queue waits this long for a late write before
# the track sends silence instead.
LATE_WRITE_GRACE_S = 0.06


class ReplyAudioTrack(RawAudioTrack):
    """pipecat's outgoing audio track, without the silence it puts into a late reply.

    ``RawAudioTrack`` sends 10 ms at a time on the wall clock and sends silence whenever
    its queue is empty. In the middle of a reply that happens each time the avatar's next
    slice is a little late (a slow frame), and every such gap delays the rest of the reply
    for good: the audio falls behind the face, and there is that much more queued audio to
    play out after a barge-in. Here, right after speech, an empty queue waits up to
    ``LATE_WRITE_GRACE_S`` for the late write and then sends it at once, so the track
    catches up with its clock; silence only fills real pauses.
    """

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate, auto_silence=True)
        self._written = asyncio.Event()
        self._in_speech = False  # the last frame sent came from the queue
        self.late_writes = 0  # writes waited for instead of covered with silence

    def add_audio_bytes(self, audio_bytes: bytes) -> asyncio.Future:
        """Queue whole 10 ms chunks; the future resolves when the last one is sent."""
        future = super().add_audio_bytes(audio_bytes)
        self._written.set()
        return future

    async def recv(self) -> AudioFrame:
        """The next 10 ms: queued audio, a late write waited for, or silence."""
        clock = compat.audio_track_clock(self)
        if clock.timestamp > 0:
            wait = clock.start + clock.timestamp / clock.sample_rate - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        pieces = compat.audio_track_pieces(self)
        if self._in_speech and not pieces:
            self._written.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._written.wait(), LATE_WRITE_GRACE_S)
            self.late_writes += bool(pieces)
        self._in_speech = bool(pieces)
        frame: AudioFrame = await super().recv()  # on time or late: it does not sleep again
        return frame


def take_back_unsent_audio(queue: asyncio.Queue, track: RawAudioTrack, frame_samples: int) -> int:
    """Remove the newest queued reply audio, in whole frames of ``frame_samples``.

    Unsent audio waits in two places: the output transport's queue of chunks (newest),
    where each frame's image follows its audio, and the track's queue of 10 ms pieces
    (oldest, about to be sent). Only a contiguous run of audio and images at the end is
    taken, so no other frame in the queue changes its place; the images of the frames taken
    go with them (they are drawn again when the reply resumes); the futures of removed
    track pieces resolve, so a writer waiting on them goes on. Returns the number of frames
    removed.
    """
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
        queue.task_done()
    pieces = compat.audio_track_pieces(track)  # (10 ms of PCM, future or None), oldest first
    tail = 0  # audio and avatar images at the end of the transport queue
    while tail < len(items) and isinstance(
        items[-1 - tail], (OutputAudioRawFrame, AvatarImageFrame)
    ):
        tail += 1
    run = items[len(items) - tail :]
    available = sum(len(item.audio) // 2 for item in run if isinstance(item, OutputAudioRawFrame))
    reaches_track = tail == len(items)  # nothing else is queued after the track's pieces
    if reaches_track:
        available += sum(len(piece) // 2 for piece, _ in pieces)
    wanted = available // frame_samples * frame_samples
    taken = 0
    while tail and taken < wanted:
        item = items[-1]
        if isinstance(item, OutputAudioRawFrame):
            if taken + len(item.audio) // 2 > wanted:
                break
            taken += len(item.audio) // 2
        items.pop()
        tail -= 1
    while reaches_track and not items and pieces and taken + len(pieces[-1][0]) // 2 <= wanted:
        piece, future = pieces.pop()
        taken += len(piece) // 2
        if future is not None and not future.done():
            future.set_result(True)
    for item in items:
        queue.put_nowait(item)
    return taken // frame_samples


class AvatarVideoTrack(VideoStreamTrack):
    """Sends avatar frames the moment they arrive, each stamped with the time it is sent.

    The avatar stage paces its frames at the fps already, so the track holds nothing
    back: a frame kept waiting for a slot of a grid of the track's own reaches the viewer
    behind the audio it was drawn for. The stamp is the send time on the 90 kHz video
    clock (strictly increasing), so the receiver, which maps stamps to the sender's clock
    through its reports, plays each frame in step with the audio sent with it. When no
    frame comes for ``REPEAT_AFTER_S``, the last one goes out again: the stream never
    stalls.
    """

    def __init__(self, width: int, height: int, fps: int) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._queue: deque[bytes] = deque()
        self._last = VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), "rgb24")
        self._clock_start: float | None = None
        self._arrived = asyncio.Event()  # a frame was queued
        self._last_sent = 0.0
        self._pts = -1
        self.frames_sent = 0
        self.frames_repeated = 0
        self.frames_dropped = 0

    def add_video_frame(self, frame: OutputImageRawFrame) -> None:
        """Queue one RGB frame of exactly width×height for sending."""
        if frame.size != (self.width, self.height):
            raise ValueError(
                f"video frame is {frame.size[0]}x{frame.size[1]}, "
                f"the track sends {self.width}x{self.height}"
            )
        self._queue.append(frame.image)
        self._arrived.set()
        while len(self._queue) > MAX_QUEUED_FRAMES:
            self._queue.popleft()
            self.frames_dropped += 1

    async def recv(self) -> VideoFrame:  # type: ignore[override]
        """Return the next frame as soon as it is queued; repeat the last one if none comes
        within ``REPEAT_AFTER_S``."""
        if self._clock_start is None:
            self._clock_start = time.monotonic()
        if not self._queue:
            self._arrived.clear()
            timeout = self._last_sent + REPEAT_AFTER_S - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(timeout, 0.0))
        if self._queue:
            rgb = np.frombuffer(self._queue.popleft(), np.uint8).reshape(self.height, self.width, 3)
            self._last = VideoFrame.from_ndarray(rgb, format="rgb24")
        else:
            self.frames_repeated += 1
        self._last_sent = time.monotonic()
        ticks = round((self._last_sent - self._clock_start) * VIDEO_CLOCK_RATE)
        self._pts = max(ticks, self._pts + 1)
        frame = self._last
        frame.pts = self._pts
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent += 1
        return frame


class AvatarWebRTCOutputTransport(SmallWebRTCOutputTransport):
    """pipecat's SmallWebRTC output with the avatar's tracks, gap-free audio writes, avatar
    images sent with their audio, and an answer to the avatar's ``ReplyAudioHoldFrame``."""

    def __init__(self, client: SmallWebRTCClient, params: TransportParams, **kwargs) -> None:
        super().__init__(client, params, **kwargs)
        self._video_format = (
            params.video_out_width,
            params.video_out_height,
            params.video_out_framerate,
        )
        self.reply_track: ReplyAudioTrack | None = None  # once a peer is connected
        self.video_track: AvatarVideoTrack | None = None
        self._previous_write: asyncio.Future | None = None

    def use_avatar_tracks(self, connection: SmallWebRTCConnection) -> None:
        """Put the avatar's tracks in place of those the client just made for the peer:
        :class:`ReplyAudioTrack` for pipecat's audio track, :class:`AvatarVideoTrack` for
        its video track."""
        client = compat.output_client(self)
        audio = compat.audio_output_track(client)
        if audio is not None:
            self.reply_track = ReplyAudioTrack(compat.audio_track_clock(audio).sample_rate)
            self._previous_write = None
            compat.set_audio_output_track(client, self.reply_track)
            connection.replace_audio_track(self.reply_track)
        if compat.video_output_track(client) is not None:
            self.video_track = AvatarVideoTrack(*self._video_format)
            compat.set_video_output_track(client, self.video_track)
            connection.replace_video_track(self.video_track)

    def _live_reply_track(self) -> ReplyAudioTrack | None:
        """The reply track while the client still sends through it (not after a hang-up)."""
        track = self.reply_track
        if track is None:
            return None
        client = compat.output_client(self)
        if not client.is_connected or client.is_closing:
            return None
        return track if compat.audio_output_track(client) is track else None

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Queue the audio in the track; wait only for the write before it to be sent.

        pipecat's client waits until the track has sent the last 10 ms of each write, so
        the next write must arrive within 10 ms; whenever the event loop is slower than
        that (a frame being rendered, a VAD pass), the track fills in 10 ms of silence.
        Those gaps stretch the reply and pile its audio up in the output queue: hundreds
        of milliseconds behind the video after a few seconds, and that much more to play
        out after a barge-in. Here one write is always queued in the track instead.
        """
        track = self._live_reply_track()
        if track is None:  # no peer yet, or it left: pipecat's own write
            return await super().write_audio_frame(frame)
        sent = track.add_audio_bytes(frame.audio)
        previous, self._previous_write = self._previous_write, sent
        if previous is not None and not previous.done():
            await previous
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Frames as pipecat handles them; a hold also takes back the unsent reply audio."""
        await super().process_frame(frame, direction)
        if isinstance(frame, ReplyAudioHoldFrame):
            frames = self._take_back(frame)
            returned = ReplyAudioReturnedFrame(frames=frames, epoch=frame.epoch)
            await self.push_frame(returned, FrameDirection.UPSTREAM)

    async def write_transport_frame(self, frame: Frame) -> None:
        """An avatar image whose audio has gone to the track: send it now."""
        if isinstance(frame, AvatarImageFrame):
            await self.write_video_frame(frame.image)
        else:
            await super().write_transport_frame(frame)

    def _take_back(self, hold: ReplyAudioHoldFrame) -> int:
        sender = compat.media_sender(self)
        track = self._live_reply_track()
        if (
            sender is None
            or track is None
            or self.sample_rate != hold.sample_rate  # chunks would not be whole frames
            or compat.sender_has_partial_chunk(sender)  # not aligned to the frames before
        ):
            return 0
        queue = compat.sender_audio_queue(sender)
        return take_back_unsent_audio(queue, track, hold.frame_samples)


class AvatarWebRTCTransport(SmallWebRTCTransport):
    """SmallWebRTC transport (pipecat's signalling, client and data channel) with the
    avatar's output tracks.

    When the peer connects, pipecat's client makes its outgoing tracks and then reports
    the connection; in between, this transport shortens the server's audio receive
    delay and swaps in the avatar's tracks, so the ``on_client_connected`` handlers (the
    greeting) write to those from the start.
    """

    def __init__(self, connection: SmallWebRTCConnection, params: TransportParams) -> None:
        super().__init__(connection, params)
        self._avatar_params = params
        self._avatar_output: AvatarWebRTCOutputTransport | None = None
        compat.run_before_client_connected(self, self._use_avatar_tracks)

    async def _use_avatar_tracks(self, connection: SmallWebRTCConnection) -> None:
        compat.shorten_audio_jitter_buffer(connection.pc, SERVER_AUDIO_PREFETCH)
        self.output().use_avatar_tracks(connection)

    def output(self) -> AvatarWebRTCOutputTransport:
        """The output processor: pipecat's, plus the avatar's tracks and taking back
        unsent reply audio."""
        if self._avatar_output is None:
            client = compat.transport_client(self)
            self._avatar_output = AvatarWebRTCOutputTransport(client, self._avatar_params)
            compat.set_transport_output(self, self._avatar_output)
        return self._avatar_output

    @property
    def video_track(self) -> AvatarVideoTrack | None:
        """The outgoing video track, once a peer is connected."""
        return self._avatar_output.video_track if self._avatar_output else None
