"""pipelines/compat.py on the real pipecat, aiortc and asyncio objects.

Each accessor is called here on the object it reaches into, so an upgrade that renames or
drops one of those private attributes fails this file, naming the attribute. A last test
keeps every such name inside pipelines/compat.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from aiortc import AudioStreamTrack, RTCPeerConnection, VideoStreamTrack
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtcpRrPacket, RtpPacket
from pipecat.frames.frames import TTSAudioRawFrame
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import (
    RawAudioTrack,
    SmallWebRTCClient,
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)
from pipecat.utils.frame_queue import FrameQueue

from pipelines import compat

ROOT = Path(__file__).resolve().parents[1]
RATE = 24_000
PARAMS = TransportParams(
    audio_in_enabled=True,
    audio_in_sample_rate=16_000,
    audio_out_enabled=True,
    audio_out_sample_rate=RATE,
    video_out_enabled=True,
    video_out_width=8,
    video_out_height=8,
)
#: Private names of the dependencies that only pipelines/compat.py may spell.
PRIVATE_NAMES = (
    "_RTCRtpReceiver__",
    "_audio_queue",
    "_chunk_queue",
    "_media_senders",
    "_client._",
    "_audio_runs",
    "_audio_output_track",
    "_video_output_track",
    "_handle_rtcp_packet",
    "_callbacks",
    "_text_aggregator",
)
#: One of them used as a name of its own (``obj._audio_queue``, ``"_RTCRtpReceiver__..."``),
#: not as the end of a longer one (``compat.sender_audio_queue``).
PRIVATE_NAME = re.compile(r"(?<![\w])(" + "|".join(re.escape(n) for n in PRIVATE_NAMES) + ")")


def test_a_missing_attribute_names_itself_and_the_version() -> None:
    expected = (
        f"pipecat {version('pipecat-ai')}: object._audio_output_track is gone; "
        "update pipelines/compat.py"
    )
    with pytest.raises(compat.CompatError, match=re.escape(expected)):
        compat.audio_output_track(object())  # type: ignore[arg-type]
    with pytest.raises(compat.CompatError, match=f"aiortc {version('aiortc')}: RtpPacket._data"):
        compat.packet_payload(RtpPacket())


async def test_smallwebrtc_transport_client_and_output() -> None:
    connection = SmallWebRTCConnection()
    try:
        transport = SmallWebRTCTransport(connection, PARAMS)
        client = compat.transport_client(transport)
        assert isinstance(client, SmallWebRTCClient)
        output = transport.output()
        assert compat.output_client(output) is client
        replacement = SmallWebRTCOutputTransport(client, PARAMS)
        compat.set_transport_output(transport, replacement)
        assert transport.output() is replacement

        assert compat.audio_output_track(client) is None
        assert compat.video_output_track(client) is None
        audio, video = RawAudioTrack(RATE), VideoStreamTrack()
        compat.set_audio_output_track(client, audio)
        compat.set_video_output_track(client, video)
        assert compat.audio_output_track(client) is audio
        assert compat.video_output_track(client) is video
    finally:
        await connection.pc.close()


async def test_the_connect_hook_runs_after_the_tracks_are_made_before_the_handlers() -> None:
    connection = SmallWebRTCConnection()
    try:
        transport = SmallWebRTCTransport(connection, PARAMS)
        client = compat.transport_client(transport)
        await client.setup(PARAMS, None)  # type: ignore[arg-type]  # the rates are in PARAMS
        seen: list[tuple[str, object]] = []
        handled = asyncio.Event()

        async def hook(peer: SmallWebRTCConnection) -> None:
            assert peer is connection
            seen.append(("hook", compat.audio_output_track(client)))
            compat.set_audio_output_track(client, RawAudioTrack(RATE))

        compat.run_before_client_connected(transport, hook)

        @transport.event_handler("on_client_connected")
        async def _connected(_transport: object, _peer: object) -> None:
            seen.append(("handler", compat.audio_output_track(client)))
            handled.set()

        await connection._call_event_handler("connected")
        await asyncio.wait_for(handled.wait(), 5)
        (hook_name, made), (handler_name, used) = seen
        assert (hook_name, handler_name) == ("hook", "handler")
        assert isinstance(made, RawAudioTrack), "pipecat's client made its track first"
        assert isinstance(used, RawAudioTrack) and used is not made, "the hook's track is used"
    finally:
        await connection.pc.close()


async def test_raw_audio_track_clock_and_pieces() -> None:
    track = RawAudioTrack(RATE)
    clock = compat.audio_track_clock(track)
    assert (clock.timestamp, clock.sample_rate) == (0, RATE)
    assert abs(clock.start - time.time()) < 5
    future = track.add_audio_bytes(bytes(2 * RATE // 50))  # 20 ms: two pieces
    pieces = compat.audio_track_pieces(track)
    assert len(pieces) == 2 and pieces[-1][1] is future
    pieces.pop()  # the live queue
    await track.recv()
    assert not compat.audio_track_pieces(track)
    assert compat.audio_track_clock(track).timestamp == RATE // 100


async def test_output_media_sender_queue_and_partial_chunk() -> None:
    connection = SmallWebRTCConnection()
    try:
        transport = SmallWebRTCTransport(connection, PARAMS)  # no peer: writes are refused
        output = transport.output()
        assert compat.media_sender(output) is None, "none before the pipeline starts"
        audio = np.zeros(RATE // 100, np.int16).tobytes()
        await run_test(output, frames_to_send=[TTSAudioRawFrame(audio, RATE, 1), SleepFrame(0.05)])
        sender = compat.media_sender(output)
        assert sender is not None
        assert isinstance(compat.sender_audio_queue(sender), FrameQueue)
        assert isinstance(compat.sender_has_partial_chunk(sender), bool)
    finally:
        await connection.pc.close()


def test_queued_items_of_a_frame_queue() -> None:
    queue = FrameQueue()
    queue.put_nowait("a")
    queue.put_nowait("b")
    assert compat.queued_items(queue) == ["a", "b"]
    assert queue.qsize() == 2, "a copy: nothing taken"


async def test_receiver_jitter_buffer_origin_and_rtcp() -> None:
    sender, receiver = RTCPeerConnection(), RTCPeerConnection()
    try:
        sender.addTrack(AudioStreamTrack())
        sender.addTrack(VideoStreamTrack())
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        audio = next(r for r in receiver.getReceivers() if r.track.kind == "audio")

        old = compat.receiver_jitter_buffer(audio)
        assert isinstance(old, JitterBuffer)
        assert compat.shorten_audio_jitter_buffer(receiver, 0) == 1
        new = compat.receiver_jitter_buffer(audio)
        assert new is not old and new.capacity == old.capacity
        made = compat.replace_jitter_buffers(
            receiver, "video", lambda old: compat.ReleasingJitterBuffer(old.capacity, is_video=True)
        )
        assert made == 1

        assert compat.receiver_rtp_origin(audio) is None, "no packet yet"
        noted: list[object] = []
        compat.intercept_rtcp_packets(audio, noted.append)
        report = RtcpRrPacket(ssrc=1)
        await audio._handle_rtcp_packet(report)
        assert noted == [report]
    finally:
        await sender.close()
        await receiver.close()


def _packet(seq: int, timestamp: int, data: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=96, sequence_number=seq, timestamp=timestamp)
    compat.set_packet_payload(packet, data)
    return packet


def test_packet_payload_is_what_aiortcs_jitter_buffer_joins() -> None:
    packet = _packet(1, 100, b"ab")
    assert compat.packet_payload(packet) == b"ab"
    buffer = JitterBuffer(capacity=4)
    buffer.add(packet)
    _, frame = buffer.add(_packet(2, 200, b"c"))  # the next frame completes the first
    assert frame is not None and frame.data == b"ab"


def test_jitter_window_and_the_release_hook() -> None:
    window = compat.jitter_window(JitterBuffer(capacity=4))
    assert window.packets == [None] * 4 and window.origin is None

    class Recording(compat.ReleasingJitterBuffer):
        def __init__(self) -> None:
            super().__init__(capacity=4)
            self.asked: list[int] = []

        def release_frame(self, sequence_number: int) -> JitterFrame | None:
            self.asked.append(sequence_number)
            return super().release_frame(sequence_number)

    buffer = Recording()
    buffer.add(_packet(7, 100, b"a"))
    assert buffer.asked == [7], "add() asks the hook"
    assert compat.jitter_window(buffer).origin == 7
    _, frame = buffer.add(_packet(8, 200, b"b"))
    assert frame is not None and frame.data == b"a", "by default, aiortc's rule"


async def test_the_tts_text_aggregator_and_its_buffer() -> None:
    from pipecat.frames.frames import LLMTextFrame
    from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

    from pipelines.config import TTSSettings
    from pipelines.stages.tts import EspeakTTSService

    aggregator = SimpleTextAggregator()
    chunks = [a async for a in aggregator.aggregate("Hello there, how")]
    assert not chunks and compat.aggregator_text(aggregator) == "Hello there, how"
    compat.set_aggregator_text(aggregator, "how")
    assert (await aggregator.flush()).text == "how"
    # The service's own aggregator is the one its LLM text goes through.
    seen: list[str] = []

    class Noting(SimpleTextAggregator):
        async def aggregate(self, text: str):  # type: ignore[override]
            seen.append(text)
            async for sentence in super().aggregate(text):
                yield sentence

    tts = EspeakTTSService(TTSSettings(engine="espeak"))
    compat.set_tts_text_aggregator(tts, Noting())
    await run_test(tts, frames_to_send=[LLMTextFrame("No sentence end yet")])
    assert seen == ["No sentence end yet"]


async def test_a_speculative_reply_passes_the_llm_once_its_gate_is_swapped() -> None:
    from pipecat.frames.frames import LLMContextFrame, LLMTextFrame
    from pipecat.processors.aggregators.llm_context import LLMContext

    from pipelines.config import LLMSettings
    from pipelines.stages.llm import create_llm_service

    def speculative() -> LLMContextFrame:
        context = LLMContext(messages=[{"role": "user", "content": "Who are you?"}])
        return LLMContextFrame(context=context, speculation=True)

    def words(frames: list) -> str:
        return "".join(f.text for f in frames if isinstance(f, LLMTextFrame))

    held, _ = create_llm_service(LLMSettings())
    down, _ = await run_test(held, frames_to_send=[speculative(), SleepFrame(0.2)])
    assert words(down) == ""  # pipecat holds it in the LLM until the turn ends
    through, _ = create_llm_service(LLMSettings())
    compat.let_speculative_replies_through(through)
    down, _ = await run_test(through, frames_to_send=[speculative(), SleepFrame(0.2)])
    assert "Ava" in words(down)


def test_private_names_of_dependencies_appear_only_in_compat() -> None:
    allowed = {ROOT / "pipelines" / "compat.py", Path(__file__).resolve()}
    found = []
    for folder in ("agent", "pipelines", "renderer", "speech", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path in allowed:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                hits = PRIVATE_NAME.findall(line)
                if hits:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {', '.join(hits)}")
    assert not found, "use pipelines/compat.py instead:\n" + "\n".join(found)


def test_the_pipecat_hooks_our_services_override_still_exist() -> None:
    hooks = compat.overridden_hooks()
    for cls, name in hooks:
        assert callable(getattr(cls, name, None)), f"pipecat {cls.__name__}.{name} is gone"
    # Every private pipecat method a stage overrides is in the list.
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.stt_service import STTService
    from pipecat.services.tts_service import TTSService

    bases = (OpenAILLMService, STTService, TTSService, FrameProcessor)
    pipecat_private = {name for cls in bases for name in dir(cls) if name.startswith("_")}
    overridden = set()
    for path in (ROOT / "pipelines" / "stages").glob("*.py"):
        overridden |= set(re.findall(r"def (_[a-z]\w*)\(self", path.read_text()))
    unlisted = (overridden & pipecat_private) - {name for _, name in hooks}
    assert not unlisted, f"add these to compat.overridden_hooks(): {sorted(unlisted)}"
