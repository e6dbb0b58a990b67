"""Every private name of pipecat, aiortc and asyncio that Visage touches, in one place.

These libraries offer no public way to do a few things Visage needs: keep the outgoing
audio track one write ahead, take back reply audio the transport has queued but not sent,
shorten aiortc's receive delay, read the sender's RTCP reports. Each such access is a
small function here. When an upgrade renames or drops an attribute, the function raises
:class:`CompatError` naming the attribute and the installed version, and
``tests/test_compat.py``, which calls every one of them on the real objects, fails on it.
Nothing outside this module spells those private names (a test checks that too).
"""

from __future__ import annotations

import asyncio
import platform
from collections import deque
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NamedTuple

import aioice.ice
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from pipecat.services.llm_service import LLMService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import (
    RawAudioTrack,
    SmallWebRTCClient,
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)
from pipecat.turns.speculation_gate import SpeculationGate
from pipecat.utils.frame_queue import FrameQueue
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

PIPECAT = "pipecat-ai"
AIORTC = "aiortc"
AIOICE = "aioice"
PYTHON = "python"

#: A 10 ms piece of PCM queued in a RawAudioTrack, with the future of the write it ends.
AudioPiece = tuple[bytes, "asyncio.Future[bool] | None"]


class CompatError(RuntimeError):
    """A dependency no longer has a private attribute Visage relies on."""


def _version(package: str) -> str:
    if package == PYTHON:
        return f"Python {platform.python_version()}"
    try:
        return f"{package.removesuffix('-ai')} {version(package)}"
    except PackageNotFoundError:
        return f"{package} (version unknown)"


def _get(obj: Any, attr: str, package: str) -> Any:
    """``obj.attr``, or a CompatError naming the attribute and ``package``'s version."""
    try:
        return getattr(obj, attr)
    except AttributeError:
        owner = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        raise CompatError(
            f"{_version(package)}: {owner}.{attr} is gone; update pipelines/compat.py"
        ) from None


def _set(obj: Any, attr: str, value: Any, package: str) -> None:
    """Replace ``obj.attr``; only one that exists, so a renamed one is never set in vain."""
    _get(obj, attr, package)
    setattr(obj, attr, value)


# --- pipecat: SmallWebRTC transport and client -----------------------------------------


def transport_client(transport: SmallWebRTCTransport) -> SmallWebRTCClient:
    """The one client a SmallWebRTC transport builds in its constructor."""
    client: SmallWebRTCClient = _get(transport, "_client", PIPECAT)
    return client


def output_client(output: SmallWebRTCOutputTransport) -> SmallWebRTCClient:
    """The client a SmallWebRTC output transport writes to."""
    client: SmallWebRTCClient = _get(output, "_client", PIPECAT)
    return client


def set_transport_output(transport: SmallWebRTCTransport, output: BaseOutputTransport) -> None:
    """Make ``output`` the transport's output processor (what ``output()`` returns and
    ``send_image``/``send_audio`` queue to)."""
    _set(transport, "_output", output, PIPECAT)


def run_before_client_connected(
    transport: SmallWebRTCTransport,
    hook: Callable[[SmallWebRTCConnection], Awaitable[None]],
) -> None:
    """Run ``hook(connection)`` when the peer connects: after the client has made its
    outgoing tracks, before the transport's ``on_client_connected`` handlers run (and so
    before anything is written to those tracks)."""
    callbacks = _get(transport, "_callbacks", PIPECAT)
    connected = _get(callbacks, "on_client_connected", PIPECAT)

    async def hook_then_connected(connection: SmallWebRTCConnection) -> None:
        await hook(connection)
        await connected(connection)

    callbacks.on_client_connected = hook_then_connected


def audio_output_track(client: SmallWebRTCClient) -> RawAudioTrack | None:
    """The client's outgoing audio track (None until a peer connects and after it leaves)."""
    track: RawAudioTrack | None = _get(client, "_audio_output_track", PIPECAT)
    return track


def set_audio_output_track(client: SmallWebRTCClient, track: RawAudioTrack) -> None:
    """Make the client write its audio to ``track``."""
    _set(client, "_audio_output_track", track, PIPECAT)


def video_output_track(client: SmallWebRTCClient) -> Any:
    """The client's outgoing video track (None until a peer connects and after it leaves)."""
    return _get(client, "_video_output_track", PIPECAT)


def set_video_output_track(client: SmallWebRTCClient, track: Any) -> None:
    """Make the client write its images to ``track`` (anything with ``add_video_frame``)."""
    _set(client, "_video_output_track", track, PIPECAT)


class AudioTrackClock(NamedTuple):
    """Where a RawAudioTrack's wall clock stands."""

    start: float  # time.time() the track was created
    timestamp: int  # samples sent so far
    sample_rate: int


def audio_track_clock(track: RawAudioTrack) -> AudioTrackClock:
    """The track's clock: its next 10 ms is due at ``start + timestamp / sample_rate``."""
    return AudioTrackClock(
        _get(track, "_start", PIPECAT),
        _get(track, "_timestamp", PIPECAT),
        _get(track, "_sample_rate", PIPECAT),
    )


def audio_track_pieces(track: RawAudioTrack) -> deque[AudioPiece]:
    """The track's queue of unsent 10 ms pieces, oldest first (the live deque: changing it
    changes what the track sends)."""
    pieces: deque[AudioPiece] = _get(track, "_chunk_queue", PIPECAT)
    return pieces


# --- pipecat: the output transport's media sender --------------------------------------


def media_sender(
    output: BaseOutputTransport, destination: str | None = None
) -> BaseOutputTransport.MediaSender | None:
    """The output's sender for ``destination`` (None: the default one), once it started."""
    senders: dict[str | None, BaseOutputTransport.MediaSender] = _get(
        output, "_media_senders", PIPECAT
    )
    return senders.get(destination)


def sender_audio_queue(sender: BaseOutputTransport.MediaSender) -> FrameQueue:
    """The sender's queue of audio chunks and the frames synced with them, in send order."""
    queue: FrameQueue = _get(sender, "_audio_queue", PIPECAT)
    return queue


def sender_has_partial_chunk(sender: BaseOutputTransport.MediaSender) -> bool:
    """Whether the sender holds audio waiting to fill a whole chunk (what is queued is then
    not aligned to the writes before it)."""
    return bool(_get(sender, "_audio_runs", PIPECAT))


# --- asyncio ----------------------------------------------------------------------------


def queued_items(queue: asyncio.Queue) -> list[Any]:
    """A copy of what waits in ``queue`` (a pipecat FrameQueue too), oldest first."""
    return list(_get(queue, "_queue", PYTHON))


# --- aiortc -----------------------------------------------------------------------------


def receiver_jitter_buffer(receiver: RTCRtpReceiver) -> JitterBuffer:
    """The receiver's jitter buffer (aiortc has no setting for it)."""
    buffer: JitterBuffer = _get(receiver, "_RTCRtpReceiver__jitter_buffer", AIORTC)
    return buffer


def set_receiver_jitter_buffer(receiver: RTCRtpReceiver, buffer: JitterBuffer) -> None:
    """Give the receiver another jitter buffer."""
    _set(receiver, "_RTCRtpReceiver__jitter_buffer", buffer, AIORTC)


def replace_jitter_buffers(
    pc: RTCPeerConnection, kind: str, make: Callable[[JitterBuffer], JitterBuffer]
) -> int:
    """Give each ``kind`` ("audio" or "video") receiver of ``pc`` the jitter buffer
    ``make(old)`` returns. Returns how many receivers were changed."""
    changed = 0
    for receiver in pc.getReceivers():
        if receiver.track is None or receiver.track.kind != kind:
            continue
        set_receiver_jitter_buffer(receiver, make(receiver_jitter_buffer(receiver)))
        changed += 1
    return changed


def shorten_audio_jitter_buffer(pc: RTCPeerConnection, prefetch: int) -> int:
    """Make the audio receivers of ``pc`` release packets after ``prefetch`` newer ones
    (aiortc holds 4, 80 ms)."""
    return replace_jitter_buffers(
        pc, "audio", lambda old: JitterBuffer(capacity=old.capacity, prefetch=prefetch)
    )


def receiver_rtp_origin(receiver: RTCRtpReceiver) -> int | None:
    """The RTP timestamp aiortc counts a received stream's pts from (its first packet's);
    None before the first frame."""
    mapper = _get(receiver, "_RTCRtpReceiver__timestamp_mapper", AIORTC)
    origin: int | None = _get(mapper, "_origin", AIORTC)
    return origin


def intercept_rtcp_packets(receiver: RTCRtpReceiver, note: Callable[[Any], None]) -> None:
    """Call ``note(packet)`` on each RTCP packet the receiver gets, before it handles it."""
    handle = _get(receiver, "_handle_rtcp_packet", AIORTC)

    async def note_then_handle(packet: Any) -> None:
        note(packet)
        await handle(packet)

    receiver._handle_rtcp_packet = note_then_handle  # type: ignore[method-assign]


def packet_payload(packet: RtpPacket) -> bytes:
    """The depayloaded bytes aiortc's receiver stores on a packet before buffering it."""
    data: bytes = _get(packet, "_data", AIORTC)
    return data


def set_packet_payload(packet: RtpPacket, data: bytes) -> None:
    """Store depayloaded bytes on a packet, as aiortc's receiver does (a new attribute)."""
    packet._data = data  # type: ignore[attr-defined]


class JitterWindow(NamedTuple):
    """The packets a jitter buffer holds: a ring of ``capacity`` slots from ``origin``."""

    packets: list[RtpPacket | None]
    origin: int | None  # sequence number of the oldest slot; None before the first packet


def jitter_window(buffer: JitterBuffer) -> JitterWindow:
    """The buffer's ring of packets and its origin (the live list)."""
    return JitterWindow(_get(buffer, "_packets", AIORTC), _get(buffer, "_origin", AIORTC))


class ReleasingJitterBuffer(JitterBuffer):
    """aiortc's JitterBuffer with a public hook deciding which frame an added packet
    releases: override :meth:`release_frame`."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)
        _get(JitterBuffer, "_remove_frame", AIORTC)  # add() must still call the hook below

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        return self.release_frame(sequence_number)

    def release_frame(self, sequence_number: int) -> JitterFrame | None:
        """The frame to release after a packet was added, or None: by default aiortc's
        rule (a frame is complete once the next frame's first packet is in)."""
        return super()._remove_frame(sequence_number)


def set_ice_consent_checks(interval_s: float, failures: int) -> None:
    """Make every ICE connection check its peer's consent (RFC 7675) every ``interval_s``
    seconds and give up after ``failures`` unanswered checks in a row, process-wide.

    aioice hard-codes 5 s and 6 failures, so a peer that vanishes without a word (a
    closed laptop, a killed tab) keeps its call running for 30 s or more.
    """
    _set(aioice.ice, "CONSENT_INTERVAL", interval_s, AIOICE)
    _set(aioice.ice, "CONSENT_FAILURES", failures, AIOICE)


# --- pipecat: the TTS service's text aggregator -----------------------------------------


def set_tts_text_aggregator(service: TTSService, aggregator: SimpleTextAggregator) -> None:
    """Make ``aggregator`` cut the LLM's text for ``service`` (pipecat 1.14 builds its own
    and takes none as an argument)."""
    _set(service, "_text_aggregator", aggregator, PIPECAT)


def aggregator_text(aggregator: SimpleTextAggregator) -> str:
    """The text a sentence aggregator holds, not yet emitted (with its spacing)."""
    text: str = _get(aggregator, "_text", PIPECAT)
    return text


def set_aggregator_text(aggregator: SimpleTextAggregator, text: str) -> None:
    """Replace what a sentence aggregator holds (after part of it was emitted early)."""
    _set(aggregator, "_text", text, PIPECAT)


# --- pipecat: where a speculative reply is held ---------------------------------------


class PassingSpeculationGate(SpeculationGate):
    """A speculation gate that never holds: the reply goes on to TTS, and the avatar stage
    holds its audio until the turn ends (``pipelines/turn_end.py``).

    The LLM then does not know its inference is speculative: it neither stops on a
    withdrawal (``SpeculationWithdrawal`` interrupts it instead) nor refuses tool calls
    before the turn ends. Visage's LLM stage registers no tools.
    """

    def begin_speculation(self, speculation: bool) -> None:
        """Note an inference; never as one to hold."""
        super().begin_speculation(False)


def let_speculative_replies_through(llm: LLMService) -> None:
    """Replace the gate in which pipecat 1.14's LLM service holds a speculative reply
    (pipecat takes no gate as an argument)."""
    gate = _get(llm, "_speculation_gate", PIPECAT)
    if not isinstance(gate, SpeculationGate):
        raise CompatError(f"{_version(PIPECAT)}: LLMService._speculation_gate is {gate!r}")
    _set(llm, "_speculation_gate", PassingSpeculationGate(name=str(gate)), PIPECAT)


# --- pipecat: private hooks our services override ------------------------------------
#: (class, method): pipecat's own private hooks that Visage's services override. An
#: upgrade that renames one would silently bypass our override, so tests/test_compat.py
#: checks each still exists, and is still called where we rely on it.
def overridden_hooks() -> list[tuple[type, str]]:
    """The pipecat hooks overridden in pipelines/stages/ (kept in step with them)."""
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.stt_service import STTService

    return [
        (OpenAILLMService, "_process_context"),
        (LLMService, "_push_llm_text"),
        (STTService, "_handle_vad_user_started_speaking"),
        (STTService, "_handle_vad_user_stopped_speaking"),
        (TTSService, "_handle_interruption"),
    ]
