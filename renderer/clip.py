"""Offline clips (``visage render``): speech in, an MP4 of the avatar saying it out.

The clip goes through the live call's path: the speech is pushed into an
:class:`~renderer.player.AvatarPlayer` (with its phoneme marks, as the TTS stage pushes
them) over an :class:`~renderer.core.AvatarCore` with the configured motion source and
face drawer, and the player's frames (each a frame period's audio and its image) are
encoded as they come. The player runs unpaced (``paced=False``): no frame clock and no
degradation ladder, so every frame is drawn at full quality, as fast as the machine
draws. Encoding runs on its own thread, beside the drawing.

The video is H.264 (yuv420p) and the audio AAC, in an MP4 with its index at the front
(``+faststart``). The audio is the player's own output, so it is in step with the
frames by construction; it stays at the speech's sample rate when that is a whole number
of samples per frame and a rate AAC takes, and is resampled otherwise.

The file is written under a temporary name beside the output and renamed when complete:
an error or an interruption leaves no partial file. A mistake the user can fix (a missing
or unreadable WAV, empty speech, an output that cannot be written, an unknown avatar)
raises :class:`ClipError` before anything heavy runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
import soxr

from renderer.config import AvatarSettings
from renderer.wavfile import read_wav
from speech.phonemes import PhonemeMark

if TYPE_CHECKING:  # torch and the models load only when a clip is rendered
    from renderer.player import AvatarPlayer

#: Sample rates the AAC encoder takes, preferred first when the speech's rate is not one.
AAC_RATES = (48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 64000, 88200, 96000)
#: H.264 encoders to use, best first (FFmpeg names; PyAV's wheels bundle libx264).
H264_ENCODERS = ("libx264", "libopenh264", "h264")
# Visually clean; on 2 cores "veryfast" keeps up with drawing where "medium" (x264's
# default) slowed a 512x512 clip by a fifth, for files of about the same size.
X264_OPTIONS = {"preset": "veryfast", "crf": "20"}
PIECE_S = 0.5  # a WAV is pushed in pieces this long, as the TTS stage pushes its frames
MAX_ENCODE_BACKLOG = 8  # frames queued for the encoder before the renderer waits for it


class ClipError(ValueError):
    """A problem with the clip's inputs or output that the user can fix."""


@dataclass(frozen=True)
class Speech:
    """What the avatar says: int16 mono PCM pieces with their phoneme marks, at one rate."""

    pieces: Sequence[tuple[bytes, Sequence[PhonemeMark]]]
    sample_rate: int

    @property
    def samples(self) -> int:
        """Samples of speech in all."""
        return sum(len(pcm) for pcm, _ in self.pieces) // 2

    @property
    def seconds(self) -> float:
        """Length of the speech."""
        return self.samples / self.sample_rate


@dataclass(frozen=True)
class ClipReport:
    """What was written, and how fast."""

    path: Path
    frames: int
    seconds: float  # the video's length (whole frames)
    width: int
    height: int
    fps: int
    sample_rate: int
    bytes: int
    render_s: float  # wall time from building the avatar to the file's last byte
    video_codec: str
    audio_codec: str

    @property
    def speed(self) -> float:
        """Seconds of clip made per second of wall time (× real time)."""
        return self.seconds / self.render_s if self.render_s > 0 else float("inf")

    def describe(self) -> str:
        """One line for the user."""
        return (
            f"wrote {self.path}: {self.seconds:.2f} s, {self.width}x{self.height} at "
            f"{self.fps} fps ({self.frames} frames, {self.video_codec} + {self.audio_codec}), "
            f"{_size(self.bytes)}, rendered in {self.render_s:.1f} s "
            f"({self.speed:.1f}× real time)"
        )


# ----------------------------------------------------------------------------- inputs


def speech_from_wav(path: Path) -> Speech:
    """A WAV file's audio (any rate, channels averaged) as speech; ``ClipError`` if it is
    missing, not a WAV, corrupt or empty."""
    try:
        audio, rate = read_wav(path)
    except FileNotFoundError as exc:
        raise ClipError(f"{exc}; give an existing WAV file with --audio") from exc
    except (OSError, ValueError) as exc:
        raise ClipError(str(exc)) from exc
    if audio.size == 0:
        raise ClipError(f"{path} holds no audio (0 samples); give a WAV with speech in it")
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2")
    step = max(1, round(PIECE_S * rate))
    pieces = [(pcm[i : i + step].tobytes(), ()) for i in range(0, pcm.size, step)]
    return Speech(pieces, rate)


def clip_sample_rate(rate: int, fps: int) -> int:
    """The clip's audio rate: ``rate`` itself when AAC takes it and a frame period holds a
    whole number of its samples, else the nearest such rate at or above it."""
    fitting = [r for r in AAC_RATES if r % fps == 0]
    if not fitting:
        raise ClipError(
            f"no AAC sample rate has a whole number of samples per frame at {fps} fps; "
            "use --fps 25 (or 24, 30, 50, 60)"
        )
    if rate in fitting:
        return rate
    above = sorted(r for r in fitting if r >= rate)
    return above[0] if above else max(fitting)


def resample_speech(speech: Speech, rate: int) -> Speech:
    """``speech`` at ``rate`` (high-quality resampling; marks keep their times)."""
    if rate == speech.sample_rate:
        return speech
    x = np.concatenate([np.frombuffer(pcm, "<i2") for pcm, _ in speech.pieces])
    y = soxr.resample(x, speech.sample_rate, rate, quality="HQ")
    pieces: list[tuple[bytes, Sequence[PhonemeMark]]] = []
    at = 0
    for pcm, marks in speech.pieces:
        start, at = at, at + len(pcm) // 2
        a, b = (round(n * rate / speech.sample_rate) for n in (start, at))
        pieces.append((y[a:b].astype("<i2").tobytes(), marks))
    return Speech(pieces, rate)


def check_output(out: Path) -> None:
    """``ClipError`` now, before any rendering, if ``out`` cannot be written."""
    parent = out.parent
    if out.is_dir():
        raise ClipError(f"--out {out} is a directory; give a file name such as {out}/clip.mp4")
    if not parent.is_dir():
        why = "is not a folder" if parent.exists() else "does not exist"
        raise ClipError(f"cannot write {out}: {parent} {why}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ClipError(f"cannot write {out}: the folder {parent} is not writable")


def h264_encoder() -> str:
    """The first H.264 encoder PyAV's FFmpeg has (``ClipError`` if it has none)."""
    for name in H264_ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # av raises its own UnknownCodecError / ValueError by version
            continue
        return name
    raise ClipError(
        "this PyAV's FFmpeg has no H.264 encoder (tried " + ", ".join(H264_ENCODERS) + ")"
    )


# ---------------------------------------------------------------------------- output


class ClipWriter:
    """An MP4 being written: H.264 yuv420p video and AAC audio (one thread at a time)."""

    def __init__(
        self, path: Path, width: int, height: int, fps: int, sample_rate: int, encoder: str
    ) -> None:
        self.container = av.open(
            str(path), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        try:
            video = self.container.add_stream(encoder, rate=fps)
            assert isinstance(video, av.VideoStream)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            if video.codec_context.name == "libx264":  # also what "h264" is in PyAV's wheels
                video.options = dict(X264_OPTIONS)
            audio = self.container.add_stream("aac", rate=sample_rate, layout="mono")
        except BaseException:
            self.container.close()
            raise
        self.video, self.audio = video, audio
        self.video_codec = video.codec_context.name
        self.audio_codec = audio.codec_context.name
        self._shape = (height, width, 3)
        self._rate = sample_rate
        self._frames = 0
        self._samples = 0

    def write(self, image: bytes, pcm: bytes) -> None:
        """One frame period: its RGB image and its int16 mono audio."""
        frame = av.VideoFrame.from_ndarray(
            np.frombuffer(image, np.uint8).reshape(self._shape), format="rgb24"
        )
        frame.pts = self._frames
        self._frames += 1
        self.container.mux(self.video.encode(frame))
        if pcm:
            samples = np.frombuffer(pcm, "<i2").reshape(1, -1)
            sound = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            sound.sample_rate = self._rate
            sound.pts = self._samples
            self._samples += samples.shape[1]
            self.container.mux(self.audio.encode(sound))

    def finish(self) -> None:
        """Flush both encoders and close the file (the faststart pass runs here)."""
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()

    def abandon(self) -> None:
        """Close without finishing (the file is about to be deleted)."""
        with contextlib.suppress(Exception):
            self.container.close()


# ---------------------------------------------------------------------------- render


def render_clip(
    speech: Speech, settings: AvatarSettings, out: Path, *, progress: bool = True
) -> ClipReport:
    """Render ``speech`` with the avatar ``settings`` describe into the MP4 ``out``.

    ``ClipError`` for what the user can fix (raised before the file is created); any
    other error leaves no file behind either.
    """
    from renderer.core import AvatarCore
    from renderer.player import AvatarPlayer

    began = time.perf_counter()
    check_output(out)
    encoder = h264_encoder()
    rate = clip_sample_rate(speech.sample_rate, settings.fps)
    speech = resample_speech(speech, rate)
    try:
        core = AvatarCore(settings, sample_rate=rate)
    except ValueError as exc:  # an unknown avatar, a motion model that cannot run at fps
        raise ClipError(str(exc)) from exc
    player = AvatarPlayer(core, paced=False)
    for pcm, marks in speech.pieces:
        player.push_audio(pcm, rate, marks)
    player.flush()
    frames = player.samples_pushed // player.samples_per_frame
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        writer = ClipWriter(partial, core.width, core.height, core.fps, rate, encoder)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ClipError(f"cannot write {out}: {exc}") from exc
    try:
        asyncio.run(_play_into(player, writer, frames, progress))
        writer.finish()
        os.replace(partial, out)
    except BaseException:
        writer.abandon()
        partial.unlink(missing_ok=True)
        raise
    return ClipReport(
        path=out,
        frames=frames,
        seconds=frames / core.fps,
        width=core.width,
        height=core.height,
        fps=core.fps,
        sample_rate=rate,
        bytes=out.stat().st_size,
        render_s=time.perf_counter() - began,
        video_codec=writer.video_codec,
        audio_codec=writer.audio_codec,
    )


async def _play_into(player: AvatarPlayer, writer: ClipWriter, frames: int, progress: bool) -> None:
    """Take ``frames`` frames from the unpaced player and encode them on a worker thread."""
    from tqdm import tqdm

    encode = ThreadPoolExecutor(1, thread_name_prefix="clip-encode")
    queued: deque[Future[None]] = deque()
    bar = tqdm(
        total=frames,
        desc="render",
        unit="frame",
        file=sys.stderr,
        disable=not progress,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    done = 0
    try:
        async for frame in player:
            if not frame.audio:
                # Every frame's audio and motion are in before the first one is made, so
                # a frame without audio would be a bug in the timeline: the clip would
                # drift. Say so rather than write it.
                raise RuntimeError(f"frame {frame.index} of the clip came without its audio")
            queued.append(encode.submit(writer.write, frame.image, frame.audio))
            while len(queued) > MAX_ENCODE_BACKLOG or (queued and queued[0].done()):
                await asyncio.wrap_future(queued.popleft())
            done += 1
            bar.update()
            if done == frames:
                break
        while queued:
            await asyncio.wrap_future(queued.popleft())
    finally:
        bar.close()
        await player.aclose()
        for future in queued:
            future.cancel()
        encode.shutdown(wait=True)
    if done != frames:
        raise RuntimeError(f"the avatar made {done} of the clip's {frames} frames")


def _size(n: int) -> str:
    """A file size for people: 812 bytes, 41.3 KB, 2.4 MB."""
    if n < 1000:
        return f"{n} bytes"
    return f"{n / 1e3:.1f} KB" if n < 1_000_000 else f"{n / 1e6:.1f} MB"
