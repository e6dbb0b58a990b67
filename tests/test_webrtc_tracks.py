"""The outgoing media tracks: audio that does not fall behind, video sent the moment it comes."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from aiortc.rtp import RtpPacket
from pipecat.frames.frames import OutputImageRawFrame, TTSAudioRawFrame, TTSStoppedFrame
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.base_transport import TransportParams
from pipecat.utils.frame_queue import FrameQueue

import pipelines.transports.smallwebrtc
from agent.client import MarkerJitterBuffer
from pipelines.compat import audio_track_pieces, queued_items, set_packet_payload
from pipelines.frames import AvatarImageFrame
from pipelines.transports.smallwebrtc import (
    AvatarVideoTrack,
    AvatarWebRTCOutputTransport,
    ReplyAudioTrack,
    take_back_unsent_audio,
)

RATE = 24_000
TEN_MS = RATE // 100


def _speech(chunks: int, value: int = 1000) -> bytes:
    return np.full(chunks * TEN_MS, value, np.int16).tobytes()


async def _samples(track: ReplyAudioTrack, frames: int) -> list[int]:
    """The first sample of each of the next ``frames`` 10 ms frames."""
    return [int((await track.recv()).to_ndarray()[0, 0]) for _ in range(frames)]


async def test_a_late_write_in_a_reply_is_waited_for_not_padded_with_silence(
    monkeypatch,
) -> None:
    # A generous grace, so a loaded machine cannot turn the late write into a timeout.
    monkeypatch.setattr(pipelines.transports.smallwebrtc, "LATE_WRITE_GRACE_S", 1.0)
    track = ReplyAudioTrack(RATE)
    track.add_audio_bytes(_speech(2, value=1000))
    assert await _samples(track, 2) == [1000, 1000]

    async def late_write() -> None:
        await asyncio.sleep(0.1)  # ten frames late
        track.add_audio_bytes(_speech(2, value=2000))

    writer = asyncio.create_task(late_write())
    assert await _samples(track, 2) == [2000, 2000], "no silence went out in between"
    await writer
    assert track.late_writes == 1


async def test_the_track_catches_up_with_its_clock_after_a_late_write(monkeypatch) -> None:
    monkeypatch.setattr(pipelines.transports.smallwebrtc, "LATE_WRITE_GRACE_S", 1.0)
    track = ReplyAudioTrack(RATE)
    track.add_audio_bytes(_speech(1))
    await track.recv()
    loop = asyncio.get_running_loop()
    loop.call_later(0.4, track.add_audio_bytes, _speech(31))
    await track.recv()  # waited 0.4 s for the write
    began = loop.time()
    await _samples(track, 30)  # 300 ms of audio, already due: sent without pacing
    assert loop.time() - began < 0.15


async def test_a_real_pause_is_filled_with_silence(monkeypatch) -> None:
    monkeypatch.setattr(pipelines.transports.smallwebrtc, "LATE_WRITE_GRACE_S", 0.02)
    track = ReplyAudioTrack(RATE)
    track.add_audio_bytes(_speech(1, value=1000))
    assert await _samples(track, 4) == [1000, 0, 0, 0]
    assert track.late_writes == 0


async def test_idle_track_sends_silence_without_waiting_for_writes(monkeypatch) -> None:
    monkeypatch.setattr(pipelines.transports.smallwebrtc, "LATE_WRITE_GRACE_S", 5.0)
    track = ReplyAudioTrack(RATE)
    assert await asyncio.wait_for(_samples(track, 3), 1.0) == [0, 0, 0]


FRAME = RATE // 25  # one avatar frame: 40 ms


def _chunk(value: int) -> TTSAudioRawFrame:
    """A 20 ms chunk, as the output transport queues them."""
    return TTSAudioRawFrame(_speech(2, value), RATE, 1)


async def test_take_back_removes_whole_frames_from_the_newest_end() -> None:
    queue, track = FrameQueue(), ReplyAudioTrack(RATE)
    sent = track.add_audio_bytes(_speech(1, value=1))  # 10 ms in the track, oldest
    for value in (2, 3, 4):
        queue.put_nowait(_chunk(value))
    # 70 ms unsent: one whole frame (40 ms) is taken, from the newest end.
    assert take_back_unsent_audio(queue, track, FRAME) == 1
    assert [int(np.frombuffer(f.audio, np.int16)[0]) for f in queued_items(queue)] == [2]
    assert len(audio_track_pieces(track)) == 1 and not sent.done()


async def test_take_back_reaches_into_the_track_and_frees_its_writer() -> None:
    queue, track = FrameQueue(), ReplyAudioTrack(RATE)
    written = track.add_audio_bytes(_speech(2, value=1))  # a writer waits on this future
    queue.put_nowait(_chunk(2))
    assert take_back_unsent_audio(queue, track, FRAME) == 1
    assert queue.empty() and not audio_track_pieces(track)
    assert written.done(), "the waiting writer goes on"


async def test_take_back_keeps_other_frames_in_their_place() -> None:
    queue, track = FrameQueue(), ReplyAudioTrack(RATE)
    track.add_audio_bytes(_speech(4, value=1))
    queue.put_nowait(_chunk(2))
    queue.put_nowait(TTSStoppedFrame())  # must still follow the audio before it
    queue.put_nowait(_chunk(3))
    queue.put_nowait(_chunk(4))
    assert take_back_unsent_audio(queue, track, FRAME) == 1
    kept = queued_items(queue)
    assert isinstance(kept[1], TTSStoppedFrame) and len(kept) == 2
    assert len(audio_track_pieces(track)) == 4, "nothing behind the other frame is taken"


def _image(value: int, size: int = 8) -> OutputImageRawFrame:
    pixels = np.full((size, size, 3), value, np.uint8).tobytes()
    return OutputImageRawFrame(pixels, (size, size), "RGB")


async def test_video_frames_go_out_at_once_stamped_with_their_send_time() -> None:
    track = AvatarVideoTrack(8, 8, fps=25)
    sent, stamps = [], []
    for i in range(10):
        track.add_video_frame(_image(i))
        if i == 5:
            track.add_video_frame(_image(50))  # two at once: the second is not held back
        while track._queue:
            began = time.monotonic()
            frame = await track.recv()
            assert time.monotonic() - began < 0.01
            sent.append(time.monotonic())
            stamps.append(frame.pts)
        await asyncio.sleep(0.04)
    assert track.frames_sent == 11 and track.frames_repeated == 0
    steps = np.diff(stamps)
    assert np.all(steps >= 1), "stamps strictly increase"
    # Each stamp is its send time on the 90 kHz clock, to within a millisecond.
    elapsed = (np.array(stamps) - stamps[0]) / 90_000
    assert np.allclose(elapsed, np.array(sent) - sent[0], atol=0.001)


async def test_video_track_repeats_the_last_frame_when_none_arrives() -> None:
    track = AvatarVideoTrack(8, 8, fps=25)
    track.add_video_frame(_image(7))
    first_pts = (await track.recv()).pts  # the track reuses its frame object
    second = await asyncio.wait_for(track.recv(), 1.0)
    assert second.pts > first_pts
    assert int(second.to_ndarray(format="rgb24")[0, 0, 0]) == 7
    assert track.frames_repeated == 1


def test_video_track_rejects_a_frame_of_the_wrong_size() -> None:
    track = AvatarVideoTrack(8, 8, fps=25)
    with pytest.raises(ValueError, match="video frame is 4x4, the track sends 8x8"):
        track.add_video_frame(_image(1, size=4))


class _RecordingClient:
    """Stands in for the WebRTC client: notes what is written; audio takes 20 ms to send."""

    def __init__(self) -> None:
        self.written: list[tuple[str, int]] = []

    async def setup(self, *_: object) -> None:
        pass

    async def connect(self) -> None:
        pass

    async def disconnect(self) -> None:
        pass

    async def write_audio_frame(self, frame: TTSAudioRawFrame) -> bool:
        self.written.append(("audio", int(np.frombuffer(frame.audio, np.int16)[0])))
        await asyncio.sleep(0.02)
        return True

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        self.written.append(("image", frame.image[0]))
        return True


async def test_an_avatar_image_goes_out_with_its_audio_not_through_pipecats_pacing() -> None:
    client = _RecordingClient()
    params = TransportParams(
        audio_out_enabled=True,
        audio_out_sample_rate=RATE,
        audio_out_10ms_chunks=2,
        video_out_enabled=True,
        video_out_is_live=True,
        video_out_width=8,
        video_out_height=8,
    )
    output = AvatarWebRTCOutputTransport(client, params)  # type: ignore[arg-type]
    frames = [
        TTSAudioRawFrame(_speech(4, value=1), RATE, 1),  # one avatar frame: 40 ms, then its image
        AvatarImageFrame(_image(5)),
        TTSAudioRawFrame(_speech(4, value=2), RATE, 1),
        AvatarImageFrame(_image(6)),
        SleepFrame(0.3),
    ]
    await run_test(output, frames_to_send=frames)
    ending = [item for item in client.written[6:] if item != ("audio", 0)]
    assert not ending, "only the closing silence follows"
    assert client.written[:6] == [
        ("audio", 1),
        ("audio", 1),
        ("image", 5),
        ("audio", 2),
        ("audio", 2),
        ("image", 6),
    ]


async def test_take_back_drops_the_images_of_the_frames_it_takes() -> None:
    queue, track = FrameQueue(), ReplyAudioTrack(RATE)
    older, newer = AvatarImageFrame(_image(1)), AvatarImageFrame(_image(2))
    for item in (_chunk(2), older, _chunk(3), _chunk(4), newer):
        queue.put_nowait(item)
    # 60 ms unsent: the newest frame (two chunks) goes, with its image; the older stays.
    assert take_back_unsent_audio(queue, track, FRAME) == 1
    kept = queued_items(queue)
    assert len(kept) == 2 and kept[1] is older


def _packet(seq: int, timestamp: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96, marker=int(marker), sequence_number=seq, timestamp=timestamp
    )
    set_packet_payload(packet, data)  # the depayloaded bytes, as aiortc's receiver sets
    return packet


def test_profiling_client_completes_a_video_frame_on_its_marker_packet() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(_packet(10, 3600, False, b"a"))[1] is None
    _, frame = buffer.add(_packet(11, 3600, True, b"b"))
    assert frame is not None and frame.data == b"ab", "released without waiting for the next"
    _, frame = buffer.add(_packet(12, 7200, True, b"c"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"c", 7200)


def test_a_frame_missing_its_marker_is_released_by_the_next_frame_as_before() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(_packet(20, 3600, False, b"a"))[1] is None
    _, frame = buffer.add(_packet(21, 7200, True, b"b"))
    assert frame is not None and frame.data == b"a"
