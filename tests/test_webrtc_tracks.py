"""The outgoing media tracks: audio that does not fall behind, video on a drift-free clock."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc.rtp import RtpPacket
from pipecat.frames.frames import OutputImageRawFrame, TTSAudioRawFrame, TTSStoppedFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_transport import TransportParams
from pipecat.utils.frame_queue import FrameQueue

import pipelines.webrtc
from agent.client import MarkerJitterBuffer
from pipelines.webrtc import (
    AvatarWebRTCOutputTransport,
    PacedVideoTrack,
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
    monkeypatch.setattr(pipelines.webrtc, "LATE_WRITE_GRACE_S", 1.0)
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
    monkeypatch.setattr(pipelines.webrtc, "LATE_WRITE_GRACE_S", 1.0)
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
    monkeypatch.setattr(pipelines.webrtc, "LATE_WRITE_GRACE_S", 0.02)
    track = ReplyAudioTrack(RATE)
    track.add_audio_bytes(_speech(1, value=1000))
    assert await _samples(track, 4) == [1000, 0, 0, 0]
    assert track.late_writes == 0


async def test_idle_track_sends_silence_without_waiting_for_writes(monkeypatch) -> None:
    monkeypatch.setattr(pipelines.webrtc, "LATE_WRITE_GRACE_S", 5.0)
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
    assert [int(np.frombuffer(f.audio, np.int16)[0]) for f in queue._queue] == [2]
    assert len(track._chunk_queue) == 1 and not sent.done()


async def test_take_back_reaches_into_the_track_and_frees_its_writer() -> None:
    queue, track = FrameQueue(), ReplyAudioTrack(RATE)
    written = track.add_audio_bytes(_speech(2, value=1))  # a writer waits on this future
    queue.put_nowait(_chunk(2))
    assert take_back_unsent_audio(queue, track, FRAME) == 1
    assert queue.empty() and not track._chunk_queue
    assert written.done(), "the waiting writer goes on"


async def test_take_back_keeps_other_frames_in_their_place() -> None:
    queue, track = FrameQueue(), ReplyAudioTrack(RATE)
    track.add_audio_bytes(_speech(4, value=1))
    queue.put_nowait(_chunk(2))
    queue.put_nowait(TTSStoppedFrame())  # must still follow the audio before it
    queue.put_nowait(_chunk(3))
    queue.put_nowait(_chunk(4))
    assert take_back_unsent_audio(queue, track, FRAME) == 1
    kept = list(queue._queue)
    assert isinstance(kept[1], TTSStoppedFrame) and len(kept) == 2
    assert len(track._chunk_queue) == 4, "nothing behind the other frame is taken"


def _image(value: int, size: int = 8) -> OutputImageRawFrame:
    pixels = np.full((size, size, 3), value, np.uint8).tobytes()
    return OutputImageRawFrame(pixels, (size, size), "RGB")


async def test_video_frames_are_stamped_on_consecutive_slots_of_the_fps_clock() -> None:
    track = PacedVideoTrack(8, 8, fps=25)
    stamps = []
    for i in range(10):
        track.add_video_frame(_image(i))
        frame = await track.recv()
        stamps.append(frame.pts)
        await asyncio.sleep(0.04)
    steps = np.diff(stamps)
    # 3600 ticks of the 90 kHz clock per frame; a slot may be skipped when the loop is slow.
    assert np.all(steps % 3600 == 0) and np.all(steps >= 3600)
    assert track.frames_sent == 10


async def test_video_track_repeats_the_last_frame_when_none_arrives() -> None:
    track = PacedVideoTrack(8, 8, fps=25)
    track.add_video_frame(_image(7))
    first_pts = (await track.recv()).pts  # the track reuses its frame object
    second = await asyncio.wait_for(track.recv(), 1.0)
    assert second.pts > first_pts
    assert int(second.to_ndarray(format="rgb24")[0, 0, 0]) == 7
    assert track.frames_repeated == 1


def test_video_track_rejects_a_frame_of_the_wrong_size() -> None:
    track = PacedVideoTrack(8, 8, fps=25)
    with pytest.raises(ValueError, match="video frame is 4x4, the track sends 8x8"):
        track.add_video_frame(_image(1, size=4))


class _RecordingClient:
    def __init__(self) -> None:
        self.frames: list[OutputImageRawFrame] = []

    async def write_video_frame(self, frame: OutputImageRawFrame) -> bool:
        self.frames.append(frame)
        return True


async def test_avatar_frames_go_to_the_track_at_once_not_through_pipecats_pacing() -> None:
    client = _RecordingClient()
    params = TransportParams(video_out_enabled=True, video_out_is_live=True)
    output = AvatarWebRTCOutputTransport(client, params)  # type: ignore[arg-type]
    frame = _image(5)
    await output.process_frame(frame, FrameDirection.DOWNSTREAM)
    assert client.frames == [frame], "written by the time process_frame returns"
    synced = _image(6)
    synced.sync_with_audio = True  # must wait behind its audio: pipecat's path
    await output.process_frame(synced, FrameDirection.DOWNSTREAM)
    assert client.frames == [frame]


def _packet(seq: int, timestamp: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(
        payload_type=96, marker=int(marker), sequence_number=seq, timestamp=timestamp
    )
    packet._data = data  # type: ignore[attr-defined]  # the depayloaded bytes, as aiortc sets
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
