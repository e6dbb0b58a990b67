"""The avatar stage in real pipecat pipelines: pacing, order, idle video, interruption."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.tests.utils import SleepFrame, run_test

from pipelines.config import TTSSettings
from pipelines.frames import AvatarImageFrame, ReplyAudioHoldFrame, ReplyAudioReturnedFrame
from pipelines.stages.avatar import REPLY_WAIT_STILL_S, AvatarStage
from pipelines.stages.tts import EspeakTTSService
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.frames import DrawCancelled
from renderer.frames.stylised.face import StylisedFace
from renderer.motion.space import IDX
from renderer.player import AvatarPlayer
from speech.phonemes import PhonemeMark
from tests.helpers.frames import Timestamps

SIZE = 128
SAMPLE_RATE = 24_000
LONG_REPLY = " ".join(["This sentence only makes the reply last for a good while."] * 5)


def make_avatar() -> AvatarStage:
    settings = AvatarSettings(width=SIZE, height=SIZE, device="cpu")
    return AvatarStage(AvatarPlayer(AvatarCore(settings, sample_rate=SAMPLE_RATE)))


def short_reply_with_a_noise() -> list[Frame]:
    """Timeline: a 2 s reply; a 0.2 s noise at 0.8 s; no turn follows."""
    return [
        TTSSpeakFrame("Hello there, it is very nice to meet you today."),
        SleepFrame(0.8),
        VADUserStartedSpeakingFrame(),
        SleepFrame(0.2),
        VADUserStoppedSpeakingFrame(stop_secs=0.2),
        SleepFrame(3.5),
    ]


def audio_seconds(frames: list[Frame]) -> float:
    return sum(len(f.audio) / 2 / f.sample_rate for f in frames if isinstance(f, TTSAudioRawFrame))


async def test_idle_avatar_streams_video_without_audio() -> None:
    down, _ = await run_test(make_avatar(), frames_to_send=[SleepFrame(1.0)])
    images = [f.image for f in down if isinstance(f, AvatarImageFrame)]
    assert 20 <= len(images) <= 30, len(images)  # 25 fps for one second
    assert all(f.size == (SIZE, SIZE) and len(f.image) == SIZE * SIZE * 3 for f in images)
    assert audio_seconds(down) == 0


async def test_reply_audio_is_paced_with_frames_and_keeps_order() -> None:
    watch = Timestamps()
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), make_avatar(), watch])
    await run_test(
        pipeline, frames_to_send=[TTSSpeakFrame("Hello there, nice to meet you."), SleepFrame(3.5)]
    )
    frames = [f for _, f in watch.seen]
    audio = [(t, f) for t, f in watch.seen if isinstance(f, TTSAudioRawFrame)]
    assert audio, "the reply's audio came out of the avatar"
    # Every audio slice is one video frame period, and leaves next to its frame.
    assert {len(f.audio) // 2 for _, f in audio} == {SAMPLE_RATE // 25}
    for i, frame in enumerate(frames):
        if isinstance(frame, TTSAudioRawFrame):
            assert isinstance(frames[i + 1], AvatarImageFrame)
    # Released in real time, not as fast as espeak synthesises.
    span = audio[-1][0] - audio[0][0]
    assert span >= 0.8 * (len(audio) - 1) / 25, span
    # Words and the end of speech leave after the audio that precedes them.
    stopped = next(i for i, f in enumerate(frames) if isinstance(f, TTSStoppedFrame))
    last_audio = max(i for i, f in enumerate(frames) if isinstance(f, TTSAudioRawFrame))
    assert stopped > last_audio
    assert next(f.text for f in frames if isinstance(f, TTSTextFrame)).startswith("Hello")


async def test_interruption_stops_reply_audio_at_once() -> None:
    """Scripted timeline: a long reply starts at 0 s, the user barges in at 1.0 s."""
    watch = Timestamps()
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), make_avatar(), watch])
    start = time.monotonic()
    await run_test(
        pipeline,
        frames_to_send=[
            TTSSpeakFrame(LONG_REPLY),
            SleepFrame(1.0),
            InterruptionFrame(),
            SleepFrame(1.0),
        ],
    )
    cut = next(t for t, f in watch.seen if isinstance(f, InterruptionFrame))
    before = [f for t, f in watch.seen if t < cut]
    after = [f for t, f in watch.seen if t > cut]
    assert 0.5 < cut - start < 1.5
    assert audio_seconds(before) > 0.5, "the reply was playing before the barge-in"
    assert audio_seconds(after) == 0, "no reply audio after the interruption"
    # The face keeps streaming (idle) after the interruption.
    assert sum(isinstance(f, AvatarImageFrame) for f in after) >= 15


async def test_a_reply_made_before_the_users_turn_ended_waits_for_its_end() -> None:
    """Answering ahead: the reply is synthesised while the user's turn is open (0 to 0.8 s)
    and reaches the avatar long before 0.8 s; it is heard from the turn's end, whole."""
    watch = Timestamps()
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), make_avatar(), watch])
    reply = "Hello there, nice to meet you."
    await run_test(
        pipeline,
        frames_to_send=[
            UserStartedSpeakingFrame(),
            TTSSpeakFrame(reply),
            SleepFrame(0.8),
            UserStoppedSpeakingFrame(),
            SleepFrame(3.0),
        ],
    )
    ended = next(t for t, f in watch.seen if isinstance(f, UserStoppedSpeakingFrame))
    audio = [(t, f) for t, f in watch.seen if isinstance(f, TTSAudioRawFrame)]
    assert audio and audio[0][0] >= ended, "no reply audio before the turn ended"
    assert audio[0][0] - ended < 0.3, "and it starts as soon as the turn ends"
    spoken = " ".join(f.text for _, f in watch.seen if isinstance(f, TTSTextFrame))
    assert spoken.split() == reply.split()
    assert audio_seconds([f for _, f in audio]) > 1.0


async def test_a_withdrawn_reply_made_ahead_is_never_heard() -> None:
    watch = Timestamps()
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), make_avatar(), watch])
    await run_test(
        pipeline,
        frames_to_send=[
            UserStartedSpeakingFrame(),
            TTSSpeakFrame("Hello there, nice to meet you."),
            SleepFrame(0.8),
            InterruptionFrame(),  # the user spoke on: the answer ahead is withdrawn
            SleepFrame(0.5),
            UserStoppedSpeakingFrame(),
            SleepFrame(1.0),
        ],
    )
    assert audio_seconds([f for _, f in watch.seen]) == 0
    assert not any(isinstance(f, TTSTextFrame) for _, f in watch.seen)
    assert sum(isinstance(f, AvatarImageFrame) for _, f in watch.seen) >= 40  # the face lives


async def test_short_sound_pauses_the_reply_and_it_resumes() -> None:
    """Timeline: a long reply from 0 s; a 0.2 s noise at 1.0 s; no turn follows."""
    watch = Timestamps()
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), make_avatar(), watch])
    start = time.monotonic()
    await run_test(
        pipeline,
        frames_to_send=[
            TTSSpeakFrame(LONG_REPLY),
            SleepFrame(1.0),
            VADUserStartedSpeakingFrame(),
            SleepFrame(0.2),
            VADUserStoppedSpeakingFrame(stop_secs=0.2),
            SleepFrame(1.2),
        ],
    )
    audio_times = [t - start for t, f in watch.seen if isinstance(f, TTSAudioRawFrame)]
    during = [t for t in audio_times if 1.15 < t < 1.35]
    after = [t for t in audio_times if t > 1.6]
    assert not during, "the reply's audio halts while the user might be talking"
    assert len(after) > 10, "the reply resumes when no turn follows the sound"
    assert not any(isinstance(f, InterruptionFrame) for _, f in watch.seen)


async def test_reply_resumes_after_a_noise_where_it_stopped_with_nothing_lost() -> None:
    """Timeline: a 2 s reply; a 0.2 s noise at 0.8 s. Everything TTS said plays, once."""
    spoken, watch = Timestamps(), Timestamps()
    tts = EspeakTTSService(TTSSettings())
    pipeline = Pipeline([tts, spoken, make_avatar(), watch])
    await run_test(
        pipeline,
        frames_to_send=short_reply_with_a_noise(),
    )
    said = audio_seconds([f for _, f in spoken.seen])  # at espeak's rate
    times = [t for t, f in watch.seen if isinstance(f, TTSAudioRawFrame)]
    played = audio_seconds([f for _, f in watch.seen])  # resampled to the avatar's rate
    assert said > 1.5, "a reply of over a second and a half was synthesised"
    # All of it played, once: nothing dropped at the pause, nothing repeated at the resume
    # (the last frame is padded with up to one frame of silence).
    assert said - 0.005 <= played <= said + 1 / 25 + 0.005, (said, played)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) > 0.3, "the audio halted during the noise"


class BackloggedTransport(FrameProcessor):
    """Stands in for the output transport: holds the newest two audio frames unsent, and
    on a ``ReplyAudioHoldFrame`` drops them and hands them back, as the real one does."""

    def __init__(self) -> None:
        super().__init__()
        self._unsent: list[Frame] = []
        self.returned = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, ReplyAudioHoldFrame):
            self.returned += len(self._unsent)
            answer = ReplyAudioReturnedFrame(frames=len(self._unsent), epoch=frame.epoch)
            self._unsent.clear()
            await self.push_frame(answer, FrameDirection.UPSTREAM)
        elif isinstance(frame, TTSAudioRawFrame) and direction is FrameDirection.DOWNSTREAM:
            self._unsent.append(frame)
            if len(self._unsent) > 2:
                await self.push_frame(self._unsent.pop(0))
        elif isinstance(frame, EndFrame):
            for unsent in self._unsent:
                await self.push_frame(unsent)
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)


async def test_a_pause_takes_back_unsent_audio_and_the_resume_replays_it_once() -> None:
    """Timeline: a 2 s reply, two frames queued in the transport; a noise at 0.8 s."""
    spoken, watch, transport = Timestamps(), Timestamps(), BackloggedTransport()
    pipeline = Pipeline([EspeakTTSService(TTSSettings()), spoken, make_avatar(), transport, watch])
    await run_test(
        pipeline,
        frames_to_send=short_reply_with_a_noise(),
    )
    assert transport.returned == 2, "the two unsent frames were taken back"
    said = audio_seconds([f for _, f in spoken.seen])
    played = audio_seconds([f for _, f in watch.seen])
    # The taken-back frames played after the resume, once: nothing lost, nothing repeated.
    assert said - 0.005 <= played <= said + 1 / 25 + 0.005, (said, played)


def test_rewind_puts_unheard_frames_back_in_order() -> None:
    core = AvatarCore(
        AvatarSettings(width=SIZE, height=SIZE, device="cpu", motion="procedural"),
        sample_rate=SAMPLE_RATE,
    )
    ramp = (np.arange(SAMPLE_RATE) % 20000).astype(np.int16)  # every frame's audio differs
    core.push_audio(ramp.tobytes(), SAMPLE_RATE)
    sent = [core.advance().audio for _ in range(8)]
    core.pause()
    assert core.rewind(3) == 3
    assert core.samples_played == 5 * SAMPLE_RATE // 25
    core.resume()
    assert [core.advance().audio for _ in range(8)][:3] == sent[5:8], "replayed in order"
    assert core.samples_played == 13 * SAMPLE_RATE // 25
    core.pause()
    assert core.rewind(50) == 10, "only the newest ten frames are remembered"


def test_pause_relaxes_the_mouth_and_keeps_the_audio() -> None:
    core = AvatarCore(
        AvatarSettings(width=SIZE, height=SIZE, device="cpu", motion="procedural"),
        sample_rate=SAMPLE_RATE,
    )
    tone = np.sin(np.arange(SAMPLE_RATE) * 2 * np.pi * 220 / SAMPLE_RATE) * 12000
    core.push_audio(tone.astype(np.int16).tobytes(), SAMPLE_RATE, [PhonemeMark("a", 0.0)])
    for _ in range(8):
        core.advance()
    played = core.samples_played
    core.pause()
    paused = [core.advance() for _ in range(5)]
    assert all(step.audio == b"" for step in paused)
    assert core.samples_played == played, "paused speech stays queued"
    assert paused[-1].motion[IDX["jawOpen"]] <= 0.1
    core.resume()
    assert core.advance().audio, "speech continues where it stopped"
    assert core.samples_played == played + SAMPLE_RATE // 25


async def test_speech_calls_off_an_idle_image_being_drawn(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Idle images take 500 ms here; reply audio arriving meanwhile does not wait for one."""
    draw = StylisedFace.render

    def slow_idle_draw(
        self: StylisedFace, motion: np.ndarray, cancel: threading.Event | None = None
    ) -> np.ndarray:
        for _ in range(50 if cancel is not None else 0):  # only images without speech
            time.sleep(0.01)
            if cancel.is_set():
                raise DrawCancelled
        return draw(self, motion, cancel)

    monkeypatch.setattr(StylisedFace, "render", slow_idle_draw)
    avatar, into, out = make_avatar(), Timestamps(), Timestamps()
    speech = np.full(SAMPLE_RATE // 2, 3000, np.int16).tobytes()  # 0.5 s
    await run_test(
        Pipeline([into, avatar, out]),
        frames_to_send=[
            SleepFrame(0.3),
            TTSAudioRawFrame(speech, SAMPLE_RATE, 1),
            TTSStoppedFrame(),
            SleepFrame(0.8),
        ],
    )
    arrived = next(t for t, f in into.seen if isinstance(f, TTSAudioRawFrame))
    first_out = next(t for t, f in out.seen if isinstance(f, TTSAudioRawFrame))
    assert avatar.draws_called_off == 1
    # An idle image was being drawn until about 0.5 s; the reply did not wait for it.
    assert first_out - arrived < 0.15, first_out - arrived


async def images_around(
    frames: list[Frame], mark: type[Frame], avatar: AvatarStage | None = None
) -> list[tuple[float, bytes]]:
    """Run ``frames`` through an avatar; each image out, timed from when ``mark`` went in."""
    into, out = Timestamps(), Timestamps()
    await run_test(Pipeline([into, avatar or make_avatar(), out]), frames_to_send=frames)
    at = next(t for t, f in into.seen if isinstance(f, mark))
    return [(t - at, f.image.image) for t, f in out.seen if isinstance(f, AvatarImageFrame)]


async def test_the_face_holds_still_from_the_turns_end_until_the_reply_speaks() -> None:
    """Timeline: idle until 0.3 s; the user's turn ends; the reply's audio arrives at
    0.5 s. Between the two the idle face is not drawn (its last image goes out again),
    so the reply's first audio and frame have the cores; then the reply is drawn."""
    avatar = make_avatar()
    speech = np.full(SAMPLE_RATE // 2, 3000, np.int16).tobytes()  # 0.5 s
    timeline = [
        SleepFrame(0.3),
        UserStoppedSpeakingFrame(),
        SleepFrame(0.2),
        TTSAudioRawFrame(speech, SAMPLE_RATE, 1),
        TTSStoppedFrame(),
        SleepFrame(0.8),
    ]
    images = await images_around(timeline, UserStoppedSpeakingFrame, avatar)
    before = [image for t, image in images if t < 0]
    assert len(set(before)) > 3, "idle motion is drawn before"
    held = [image for t, image in images if 0.01 < t < 0.19]
    assert len(held) >= 3 and all(image == held[0] for image in held)
    assert avatar.frames_held >= 3
    spoken = [image for t, image in images if t > 0.25]
    assert len(set(spoken)) > 5, "the reply is drawn"


async def test_a_held_face_moves_again_when_no_reply_comes() -> None:
    timeline = [SleepFrame(0.2), UserStoppedSpeakingFrame(), SleepFrame(1.2)]
    images = await images_around(timeline, UserStoppedSpeakingFrame)
    held = [image for t, image in images if 0.01 < t < REPLY_WAIT_STILL_S - 0.05]
    assert len(set(held)) == 1
    after = [image for t, image in images if t > REPLY_WAIT_STILL_S + 0.05]
    assert len(set(after)) > 5, "idle motion is drawn again"


async def test_a_held_face_listens_again_when_the_user_speaks_on() -> None:
    timeline = [
        SleepFrame(0.2),
        UserStoppedSpeakingFrame(),
        SleepFrame(0.05),
        VADUserStartedSpeakingFrame(),
        SleepFrame(0.3),
    ]
    images = await images_around(timeline, VADUserStartedSpeakingFrame)
    after = [image for t, image in images if 0.02 < t < REPLY_WAIT_STILL_S - 0.1]
    assert len(set(after)) > 3, "idle motion is drawn again while the user speaks"
