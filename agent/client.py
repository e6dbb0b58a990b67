"""A Python WebRTC client for a Visage server (aiortc): talks, listens, watches.

It signals the way pipecat's clients do (``POST /api/offer``), speaks RTVI on the data
channel, sends audio you queue as its microphone, and records what arrives — audio and
video frames with their arrival times. Tests use it; so will ``visage profile``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import soxr
from aiortc import (
    AudioStreamTrack,
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpSrPacket, RtpPacket
from av import AudioFrame, VideoFrame

from pipelines import compat

MIC_RATE = 48_000
CLIENT_AUDIO_PREFETCH = 2  # 40 ms of received audio held, as a browser holds on a LAN
MIC_FRAME = 960  # 20 ms


class MarkerJitterBuffer(compat.ReleasingJitterBuffer):
    """aiortc's video jitter buffer, releasing a frame once its last packet is in.

    aiortc only knows a frame is complete when the next frame's first packet arrives,
    which holds every received frame for a frame period (40 ms at 25 fps). A browser
    completes a frame on the RTP marker bit its last packet carries; so does this.
    """

    def release_frame(self, sequence_number: int) -> JitterFrame | None:
        """The oldest frame once its marker packet is in; else aiortc's rule."""
        ring, origin = compat.jitter_window(self)
        assert origin is not None  # add() sets it before releasing
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = ring[(origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                break  # a gap, or a frame that never saw its marker: aiortc's rules apply
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                data = b"".join(compat.packet_payload(p) for p in packets)
                return JitterFrame(data=data, timestamp=packets[0].timestamp)
        return super().release_frame(sequence_number)


def complete_video_frames_on_marker(pc: RTCPeerConnection) -> int:
    """Give the video receivers of ``pc`` a :class:`MarkerJitterBuffer` (same capacity)."""
    return compat.replace_jitter_buffers(
        pc, "video", lambda old: MarkerJitterBuffer(capacity=old.capacity, is_video=True)
    )


class SenderClock:
    """Maps one received stream's frame stamps to the sender's wall clock.

    The sender's RTCP reports pair an RTP timestamp with the wall-clock time it was sent.
    That is how a browser plays audio and video in step (lip sync): each frame is shown
    with the audio sent at the same moment. aiortc's player does not do it, so the client
    notes the reports here and the profiler places the frames itself.
    """

    def __init__(self, receiver: RTCRtpReceiver) -> None:
        self._receiver = receiver
        self._report: tuple[float, int] | None = None  # (sender seconds, RTP timestamp)
        compat.intercept_rtcp_packets(receiver, self._note)

    def _note(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            self._report = (info.ntp_timestamp / 2**32, info.rtp_timestamp)

    def sender_time(self, pts: int, clock_rate: int) -> float | None:
        """Sender wall-clock seconds (NTP) of a decoded frame's ``pts``; None before the
        first report."""
        first = compat.receiver_rtp_origin(self._receiver)  # pts count from the first packet
        if self._report is None or first is None:
            return None
        sent_s, rtp = self._report
        ticks = (pts + first - rtp + 2**31) % 2**32 - 2**31  # signed, across a wrap
        return sent_s + ticks / clock_rate


class MicrophoneTrack(AudioStreamTrack):
    """Sends queued PCM in real time, and silence when nothing is queued."""

    def __init__(self) -> None:
        super().__init__()
        self._pending = np.zeros(0, np.int16)
        self._t0: float | None = None
        self._sent = 0

    def say(self, pcm: np.ndarray, sample_rate: int) -> float:
        """Queue int16 mono audio; returns when (time.monotonic()) it starts being sent."""
        if sample_rate != MIC_RATE:
            pcm = soxr.resample(np.asarray(pcm, np.int16), sample_rate, MIC_RATE)
        queued = len(self._pending)
        self._pending = np.concatenate([self._pending, pcm.astype(np.int16)])
        if self._t0 is None:
            return time.monotonic() + queued / MIC_RATE
        return self._t0 + (self._sent + queued) / MIC_RATE

    @property
    def busy(self) -> bool:
        """Whether queued speech is still being sent."""
        return len(self._pending) > 0

    async def recv(self) -> AudioFrame:  # type: ignore[override]
        """The next 20 ms, paced on the wall clock."""
        if self._t0 is None:
            self._t0 = time.monotonic()
        wait = self._t0 + self._sent / MIC_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._pending[:MIC_FRAME]
        self._pending = self._pending[MIC_FRAME:]
        if len(chunk) < MIC_FRAME:
            chunk = np.pad(chunk, (0, MIC_FRAME - len(chunk)))
        frame = AudioFrame.from_ndarray(chunk[None, :], format="s16", layout="mono")
        frame.sample_rate = MIC_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, MIC_RATE)
        self._sent += MIC_FRAME
        return frame


@dataclass
class Received:
    """Media that arrived, each item with its arrival time (time.monotonic()) and the
    sender's wall-clock time it was sent at (NTP seconds, see SenderClock; None until the
    sender's first report)."""

    # (t, pcm, rate, sent)
    audio: list[tuple[float, np.ndarray, int, float | None]] = field(default_factory=list)
    # (t, pts in seconds, rgb kept only with keep_video, video_probe's value or None, sent)
    video: list[tuple[float, float, np.ndarray | None, float | None, float | None]] = field(
        default_factory=list
    )
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def audio_seconds(self) -> float:
        """Total seconds of audio received."""
        return sum(len(pcm) / rate for _, pcm, rate, _ in self.audio)


class AvatarClient:
    """One call to a Visage server from Python."""

    def __init__(
        self,
        base_url: str,
        *,
        keep_video: bool = False,
        video_probe: Callable[[np.ndarray], float] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.keep_video = keep_video
        # Called on each received frame's RGB pixels; its value is stored, not the frame.
        self.video_probe = video_probe
        self.mic = MicrophoneTrack()
        self.received = Received()
        self.pc_id: str | None = None
        self._pc = RTCPeerConnection()
        self._tasks: set[asyncio.Task] = set()
        self._channel = self._pc.createDataChannel("visage", ordered=True)
        self._connected = asyncio.Event()
        self._closed = False

        @self._channel.on("open")
        def _on_open() -> None:
            self.send_rtvi("client-ready", {"version": "2.2.0", "about": {"library": "py"}})
            self._spawn(self._ping())

        @self._channel.on("message")
        def _on_message(raw: str) -> None:
            with contextlib.suppress(ValueError):
                self.received.messages.append((time.monotonic(), json.loads(raw)))

        @self._pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                # aiortc holds 4 packets (80 ms) before playing one; a browser's adaptive
                # buffer on a quiet network holds about 40 ms, so measure like one.
                compat.shorten_audio_jitter_buffer(self._pc, CLIENT_AUDIO_PREFETCH)
            else:
                complete_video_frames_on_marker(self._pc)
            receiver = next(r for r in self._pc.getReceivers() if r.track is track)
            self._spawn(self._read(track, SenderClock(receiver)))

        @self._pc.on("connectionstatechange")
        def _on_state() -> None:
            if self._pc.connectionState == "connected":
                self._connected.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send_rtvi(self, kind: str, data: dict[str, Any], message_id: str | None = None) -> None:
        """Send an RTVI message on the data channel (its id defaults to its type)."""
        message = {"label": "rtvi-ai", "type": kind, "id": message_id or kind, "data": data}
        self._channel.send(json.dumps(message))

    async def _ping(self) -> None:
        while self._channel.readyState == "open":
            self._channel.send("ping")
            await asyncio.sleep(1.0)

    async def _read(self, track: MediaStreamTrack, clock: SenderClock) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                sent = None
                if frame.pts is not None and frame.time_base is not None:
                    rate = frame.time_base.denominator // frame.time_base.numerator
                    sent = clock.sender_time(frame.pts, rate)
                if isinstance(frame, AudioFrame):
                    pcm = frame.to_ndarray().reshape(-1)
                    if frame.layout.name == "stereo":
                        pcm = pcm.reshape(-1, 2).mean(axis=1).astype(np.int16)
                    self.received.audio.append((now, pcm, frame.sample_rate, sent))
                elif isinstance(frame, VideoFrame):
                    rgb = None
                    if self.keep_video or self.video_probe is not None:
                        rgb = frame.to_ndarray(format="rgb24")
                    probe = self.video_probe(rgb) if self.video_probe and rgb is not None else None
                    pts = now
                    if frame.pts is not None and frame.time_base is not None:
                        pts = float(frame.pts * frame.time_base)
                    kept = rgb if self.keep_video else None
                    self.received.video.append((now, pts, kept, probe, sent))

    async def connect(
        self, timeout_s: float = 15.0, *, token: str | None = None, origin: str | None = None
    ) -> None:
        """Offer, apply the answer, and wait until media flows. ``token``: a session token
        (POST /api/session), sent as ``request_data.token``; ``origin``: an Origin header,
        as a browser page on that origin would send."""
        self._pc.addTrack(self.mic)
        self._pc.addTransceiver("video", direction="recvonly")
        await self._pc.setLocalDescription(await self._pc.createOffer())
        offer: dict[str, Any] = {
            "sdp": self._pc.localDescription.sdp,
            "type": self._pc.localDescription.type,
        }
        if token is not None:
            offer["request_data"] = {"token": token}
        headers = {"Origin": origin} if origin else None
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.post(f"{self.base_url}/api/offer", json=offer, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(f"offer refused ({response.status_code}): {response.text}")
        answer = response.json()
        self.pc_id = answer["pc_id"]
        await self._pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def close(self) -> None:
        """Hang up and stop every background task. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._pc.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
