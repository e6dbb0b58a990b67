"""``visage render``: an MP4 that decodes as asked, with the mouth in step with the voice,
and bad inputs refused with exit status 2 and nothing left behind."""

from __future__ import annotations

import threading
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import soxr

from agent.cli import main
from agent.config import Settings
from agent.tts_commands import speech_for_clip
from renderer.clip import clip_sample_rate
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.player import AvatarPlayer
from tests.helpers.drawers import FLAT_DRAWER, FlatDrawer

TEXT = "Hello there. I am Ava, your video avatar. Ask me anything, and I will answer you."
SIZE, FPS = 128, 25
FAILING_DRAWER = "tests.test_render_clip:failing_drawer"
FAIL_AT = 10  # the failing drawer's first bad frame


def render(*args: str) -> int:
    return main(["render", "--quiet", "--size", str(SIZE), *args])


@pytest.fixture(scope="module")
def flat_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TEXT said by the FlatDrawer (red level = jaw opening), default motion (MotionDiT),
    in espeak-ng's voice (its timing is the same every time; Piper's is drawn)."""
    out = tmp_path_factory.mktemp("clip") / "flat.mp4"
    espeak = ("--set", "tts.engine=espeak")
    assert render("--text", TEXT, "--avatar", FLAT_DRAWER, *espeak, "--out", str(out)) == 0
    return out


def decode(path: Path) -> tuple[list[np.ndarray], np.ndarray, int]:
    """The clip's RGB frames, and its audio (mono float, placed by pts and cut at the
    stream's duration, as a player does) and rate."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        assert stream.duration is not None
        length = round(stream.duration * stream.time_base * rate)
        pieces = []
        for f in container.decode(audio=0):
            assert f.pts is not None
            start = round(f.pts * f.time_base * rate)
            pieces.append((start, f.to_ndarray().mean(axis=0)))
    audio = np.zeros(max(s + len(x) for s, x in pieces), np.float32)
    for start, x in pieces:  # the encoder's priming, if any, sits before 0
        audio[max(start, 0) : start + len(x)] = x[max(-start, 0) :]
    return frames, audio[:length], rate  # AAC decodes whole 1024-sample frames


def test_text_is_said_by_the_configured_voice_piper_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "piper.mp4"
    assert render("--text", "Hello there.", "--avatar", FLAT_DRAWER, "--out", str(out)) == 0
    assert "said by Piper" in capsys.readouterr().out
    frames, samples, rate = decode(out)
    assert 0.5 < len(samples) / rate < 2.0
    assert abs(len(frames) / FPS - len(samples) / rate) < 1 / FPS


def test_clip_has_h264_and_aac_at_the_asked_size_and_rate(flat_clip: Path) -> None:
    espeak = Settings().tts.model_copy(update={"engine": "espeak"})
    speech_s = speech_for_clip(TEXT, espeak)[0].seconds
    with av.open(str(flat_clip)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264"
        assert (video.codec_context.width, video.codec_context.height) == (SIZE, SIZE)
        assert video.codec_context.pix_fmt == "yuv420p"
        assert video.average_rate == FPS
        assert audio.codec_context.name == "aac"
        assert audio.codec_context.sample_rate == 22050  # espeak-ng's own rate, kept
        assert video.duration is not None and audio.duration is not None
        video_s = float(video.duration * video.time_base)
        audio_s = float(audio.duration * audio.time_base)
    frames, samples, rate = decode(flat_clip)
    assert abs(len(frames) / FPS - speech_s) < 1 / FPS
    assert abs(video_s - speech_s) < 1 / FPS
    assert abs(audio_s - speech_s) < 1 / FPS
    assert abs(len(samples) / rate - speech_s) < 1 / FPS
    assert flat_clip.read_bytes()[4:8] == b"ftyp"
    assert flat_clip.read_bytes().find(b"moov") < flat_clip.read_bytes().find(b"mdat")  # faststart


def test_mouth_opens_with_the_voice_at_lag_zero(flat_clip: Path) -> None:
    frames, samples, rate = decode(flat_clip)
    mouth = np.array([f[..., 0].mean() / 255 for f in frames])  # the FlatDrawer's jaw
    per_frame = rate // FPS
    n = min(len(mouth), len(samples) // per_frame)
    mouth = mouth[:n]
    rms = np.sqrt((samples[: n * per_frame].reshape(n, per_frame) ** 2).mean(axis=1))

    def corr(lag: int) -> float:  # lag > 0: the mouth follows the voice by `lag` frames
        m, r = (mouth[lag:], rms[: n - lag]) if lag >= 0 else (mouth[:lag], rms[-lag:])
        return float(np.corrcoef(m, r)[0, 1])

    by_lag = {lag: corr(lag) for lag in range(-4, 5)}
    best = max(by_lag, key=lambda lag: by_lag[lag])
    print(f"mouth vs loudness: r = {by_lag[0]:.3f} at lag 0; best lag {best} ({by_lag[best]:.3f})")
    assert abs(best) <= 1, by_lag
    assert by_lag[best] > 0.5, by_lag
    assert mouth.max() > 0.3  # the mouth really opened


def test_default_face_from_a_stereo_wav(tmp_path: Path) -> None:
    """No --avatar: the stylised face. A 44.1 kHz stereo WAV keeps its rate."""
    from speech.espeak import synthesize

    mono, rate = synthesize("One two three.")
    left = soxr.resample(mono, rate, 44100).astype(np.int16)
    stereo = np.stack([left, left // 2], axis=1)
    wav = tmp_path / "stereo.wav"
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(2)
        f.setsampwidth(2)
        f.setframerate(44100)
        f.writeframes(stereo.tobytes())
    out = tmp_path / "stylised.mp4"
    assert render("--audio", str(wav), "--out", str(out)) == 0
    frames, samples, out_rate = decode(out)
    assert out_rate == 44100
    assert abs(len(frames) / FPS - len(left) / 44100) < 1 / FPS
    assert abs(len(samples) / out_rate - len(left) / 44100) < 1 / FPS
    assert frames[0].std() > 20  # a face, not a flat colour
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stereo.wav", "stylised.mp4"]


def test_audio_rate_is_one_aac_takes_with_whole_samples_per_frame() -> None:
    assert clip_sample_rate(22050, 25) == 22050
    assert clip_sample_rate(16000, 25) == 16000
    assert clip_sample_rate(22000, 25) == 22050  # not an AAC rate: the next one up
    assert clip_sample_rate(23000, 25) == 24000
    assert clip_sample_rate(44100, 24) == 48000  # 1837.5 samples a frame: the next one up
    assert clip_sample_rate(192000, 25) == 96000


async def test_unpaced_player_makes_frames_faster_than_real_time() -> None:
    settings = AvatarSettings(
        width=64, height=64, face=FLAT_DRAWER, motion="procedural", device="cpu"
    )
    player = AvatarPlayer(AvatarCore(settings, sample_rate=16000), paced=False)
    assert player.ladder is None  # no frame period, so nothing to degrade for
    tone = (8000 * np.sin(np.arange(32000) * 0.05)).astype(np.int16)  # 2 s
    player.push_audio(tone.tobytes(), 16000)
    player.flush()
    began = time.monotonic()
    frames = []
    async for frame in player:
        frames.append(frame)
        if len(frames) == 50:
            break
    await player.aclose()
    assert time.monotonic() - began < 1.0  # 2 s of frames
    assert all(len(f.audio) == 2 * 640 for f in frames)  # each with its own audio
    assert player.samples_played == player.samples_pushed


class _FailingDrawer(FlatDrawer):
    def render(self, motion: np.ndarray, cancel: threading.Event | None = None) -> np.ndarray:
        if self.calls >= FAIL_AT:
            raise RuntimeError("the drawer broke")
        return super().render(motion, cancel)


def failing_drawer(settings: AvatarSettings, width: int, height: int) -> FlatDrawer:
    """A drawer that fails mid-clip (by import path: FAILING_DRAWER)."""
    return _FailingDrawer(width, height)


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "notes.wav").write_text("these are not sounds\n")
    (tmp / "header-only.wav").write_bytes(b"RIFF\x04\x00\x00\x00WAVE")
    with wave.open(str(tmp / "empty.wav"), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
    out = str(tmp / "out.mp4")
    return {
        "missing": (["--audio", str(tmp / "nope.wav"), "--out", out], "audio file not found"),
        "not a wav": (["--audio", str(tmp / "notes.wav"), "--out", out], "is not a WAV file"),
        "corrupt": (["--audio", str(tmp / "header-only.wav"), "--out", out], "lacks a fmt"),
        "empty": (["--audio", str(tmp / "empty.wav"), "--out", out], "holds no audio"),
        "both": (
            ["--audio", str(tmp / "empty.wav"), "--text", "hi", "--out", out],
            "not allowed with",
        ),
        "neither": (["--out", out], "one of the arguments --audio --text is required"),
        "blank text": (["--text", "  ", "--out", out], "--text is empty"),
        "no folder": (["--text", "hi", "--out", str(tmp / "no" / "out.mp4")], "does not exist"),
        "a folder": (["--text", "hi", "--out", str(tmp)], "is a directory"),
        "under a file": (
            ["--text", "hi", "--out", str(tmp / "notes.wav" / "out.mp4")],
            "is not a folder",
        ),
        "unknown avatar": (["--text", "hi", "--avatar", "nobody", "--out", out], "'nobody'"),
        "odd size": (["--text", "hi", "--size", "99", "--out", out], "--size must be"),
    }


BAD = [
    "missing",
    "not a wav",
    "corrupt",
    "empty",
    "both",
    "neither",
    "blank text",
    "no folder",
    "a folder",
    "under a file",
    "unknown avatar",
    "odd size",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_a_message_and_no_file(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, message = _bad_inputs(tmp_path)[case]
    before = sorted(tmp_path.rglob("*"))
    try:
        status = main(["render", "--quiet", *argv])
    except SystemExit as exc:  # argparse's own errors
        status = int(exc.code or 0)
    assert status == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_failure_mid_clip_leaves_no_partial_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "broken.mp4"
    status = render("--text", TEXT, "--avatar", FAILING_DRAWER, "--out", str(out))
    assert status == 1
    assert "the drawer broke" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
