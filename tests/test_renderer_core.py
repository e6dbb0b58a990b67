"""AvatarCore: audio pacing, segments, interruption, resampling and phoneme timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agent.config import Settings
from agent.process import configure_process
from renderer.config import AvatarSettings
from renderer.core import AvatarCore, FrameStep
from renderer.motion.procedural import ProceduralMotion
from renderer.motion.space import IDX, MOTION_DIM
from speech.phonemes import PhonemeMark

SR = 24000
SPF = SR // 25


# These tests pin down pacing with a source that needs no lookahead (and the procedural
# mouth); the learned source's pacing is tested in test_motion_streaming.py.
SETTINGS = AvatarSettings(width=64, height=64, device="cpu", motion="procedural")


@pytest.fixture
def core() -> AvatarCore:
    return AvatarCore(SETTINGS, sample_rate=SR)


def pcm(n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, n, dtype=np.int16).tobytes()


def drain(core: AvatarCore, limit: int = 1000) -> list[FrameStep]:
    """Advance until the core is idle again; returns every step taken."""
    steps = []
    for _ in range(limit):
        step = core.advance()
        steps.append(step)
        if not step.speaking:
            return steps
    raise AssertionError("core never went idle")


def test_frame_geometry(core: AvatarCore) -> None:
    assert (core.sample_rate, core.fps, core.samples_per_frame) == (SR, 25, SPF)
    assert (core.width, core.height) == (64, 64)


def test_sample_rate_must_divide_into_frames() -> None:
    with pytest.raises(ValueError, match="divisible by the fps"):
        AvatarCore(AvatarSettings(width=64, height=64, fps=7, device="cpu"), sample_rate=SR)


def test_idle_core_gives_silent_idle_frames(core: AvatarCore) -> None:
    steps = [core.advance() for _ in range(3)]
    assert [s.index for s in steps] == [0, 1, 2]
    assert all(s.audio == b"" and not s.speaking for s in steps)
    assert steps[0].motion.shape == (MOTION_DIM,) and steps[0].motion.dtype == np.float32


def test_audio_out_equals_audio_in_in_frame_sized_pieces(core: AvatarCore) -> None:
    chunks = [pcm(1000, 1), pcm(3333, 2), pcm(517, 3)]
    for c in chunks:
        core.push_audio(c, SR)
    core.end_segment()
    steps = drain(core)
    audio = [s.audio for s in steps if s.audio]
    assert all(len(a) == SPF * 2 for a in audio)
    assert all(s.speaking for s in steps[:-1]) and not steps[-1].speaking
    sent = b"".join(chunks)
    got = b"".join(audio)
    pad = len(got) - len(sent)
    assert 0 <= pad < SPF * 2
    assert got == sent + b"\0" * pad
    assert core.samples_pushed == core.samples_played == len(got) // 2
    assert core.pending_seconds == 0.0


def test_segments_back_to_back_keep_order(core: AvatarCore) -> None:
    first, second = pcm(1500, 4), pcm(2000, 5)
    core.push_audio(first, SR)
    core.end_segment()
    core.push_audio(second, SR)
    core.end_segment()
    got = b"".join(s.audio for s in drain(core))
    first_padded = first.ljust(2 * SPF * 2, b"\0")  # 1500 samples -> 2 frames
    assert got.startswith(first_padded)
    assert got[len(first_padded) :].startswith(second)


def test_underrun_keeps_speaking_without_audio(core: AvatarCore) -> None:
    core.push_audio(pcm(SPF + 100, 6), SR)
    first = core.advance()
    assert len(first.audio) == SPF * 2 and first.speaking
    starved = core.advance()  # 100 samples buffered, segment still open
    assert starved.audio == b"" and starved.speaking
    core.push_audio(pcm(SPF, 7), SR)
    assert len(core.advance().audio) == SPF * 2
    core.end_segment()  # 100 samples left: padded to a full frame
    last = core.advance()
    assert len(last.audio) == SPF * 2 and last.speaking
    assert not core.advance().speaking
    assert (core.gaps, core.gap_frames) == (1, 1)  # the starved frame, heard as a gap


def test_only_a_stall_inside_a_reply_counts_as_a_gap(core: AvatarCore) -> None:
    core.push_audio(pcm(SPF // 2, 1), SR)
    core.advance()  # waiting for the reply's first frame of audio: not a gap
    core.push_audio(pcm(SPF * 2, 2), SR)
    core.advance(), core.advance()
    core.pause()  # the user may be talking: a pause, not a gap
    core.advance(), core.advance()
    core.resume()
    core.advance(), core.advance()  # two starved frames: one gap
    core.push_audio(pcm(SPF, 3), SR)
    core.advance()
    core.advance()  # starved again: a second gap
    core.end_segment()
    drain(core)
    core.advance()  # idle between replies: not a gap
    assert (core.gaps, core.gap_frames) == (2, 3)


def test_clear_buffer_drops_pending_and_reports_position(core: AvatarCore) -> None:
    core.push_audio(pcm(SR, 8), SR)  # 1 s
    for _ in range(10):
        core.advance()  # 0.4 s played
    played = core.clear_buffer()
    assert played == pytest.approx(0.4)
    assert core.pending_seconds == 0.0
    assert core.samples_pushed == core.samples_played
    step = core.advance()
    assert step.audio == b"" and not step.speaking
    # The core is usable again right away, and old phonemes do not leak into new audio.
    core.push_audio(pcm(SPF, 9), SR, [PhonemeMark("a", 0.0)])
    core.end_segment()
    assert len(core.advance().audio) == SPF * 2


def test_clear_buffer_counts_only_the_current_segment(core: AvatarCore) -> None:
    assert core.clear_buffer() == 0.0  # nothing ever played
    core.push_audio(pcm(SPF * 3, 10), SR)
    core.end_segment()
    core.push_audio(pcm(SPF * 5, 11), SR)
    for _ in range(5):
        core.advance()  # 3 frames of the first segment, 2 of the second
    assert core.clear_buffer() == pytest.approx(2 * SPF / SR)


def test_counters_are_monotonic(core: AvatarCore) -> None:
    seen = []
    core.push_audio(pcm(5000, 12), SR)
    seen.append((core.samples_pushed, core.samples_played))
    core.advance()
    seen.append((core.samples_pushed, core.samples_played))
    core.clear_buffer()
    seen.append((core.samples_pushed, core.samples_played))
    core.push_audio(pcm(100, 13), SR)
    core.end_segment()
    core.advance()
    seen.append((core.samples_pushed, core.samples_played))
    pushed, played = zip(*seen, strict=True)
    assert list(pushed) == sorted(pushed) and list(played) == sorted(played)
    assert all(p >= q for p, q in seen)


def test_resampling_22050_keeps_duration_and_pitch(core: AvatarCore) -> None:
    src = 22050
    t = np.arange(src) / src  # 1 s of a 440 Hz tone
    tone = (10000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    for i in range(0, src, 1102):  # espeak-ng-sized chunks
        core.push_audio(tone[i : i + 1102].tobytes(), src)
    core.end_segment()
    out = np.frombuffer(b"".join(s.audio for s in drain(core)), dtype=np.int16)
    assert abs(len(out) - SR) < SPF  # 1 s, up to the padding of the last frame
    signs = np.signbit(out[: SR - 100].astype(np.float32))
    crossings = np.count_nonzero(signs[1:] != signs[:-1])
    assert crossings == pytest.approx(2 * 440 * (SR - 100) / SR, abs=4)
    # Chunk borders leave no clicks: no step is steeper than the sine's own slope.
    max_slope = 2 * np.pi * 440 / SR * 10000
    assert np.abs(np.diff(out[: SR - 100].astype(np.int32))).max() < 1.02 * max_slope


def test_resampled_phonemes_land_in_the_right_frame() -> None:
    motion = RecordingMotion()
    core = AvatarCore(SETTINGS, sample_rate=SR, motion_source=motion)
    src = 22050
    chunk = np.zeros(src // 4, dtype=np.int16).tobytes()  # 0.25 s each
    core.push_audio(chunk, src)
    core.push_audio(chunk, src, [PhonemeMark("a", 0.25)])  # at 0.5 s overall
    core.end_segment()
    hits = marks_per_frame(core, motion)
    assert [(i, m.ipa) for i, m in hits] == [(12, "a")]  # 0.5 s / 0.04 s = frame 12.5
    assert hits[0][1].offset_s == pytest.approx(0.02, abs=1e-3)


def test_phonemes_arrive_with_their_frame() -> None:
    motion = RecordingMotion()
    core = AvatarCore(SETTINGS, sample_rate=SR, motion_source=motion)
    marks = [PhonemeMark("h", 0.0), PhonemeMark("ə", 0.05), PhonemeMark("l", 0.13)]
    core.push_audio(pcm(SR // 5, 14), SR, marks)
    core.end_segment()
    hits = marks_per_frame(core, motion)
    assert [(i, m.ipa) for i, m in hits] == [(0, "h"), (1, "ə"), (3, "l")]
    assert [m.offset_s for _, m in hits] == pytest.approx([0.0, 0.01, 0.01])


def test_speech_animates_the_mouth_and_returns_to_idle(core: AvatarCore) -> None:
    t = np.arange(SR // 2) / SR
    loud = (12000 * np.sin(2 * np.pi * 150 * t)).astype(np.int16).tobytes()
    core.push_audio(loud, SR, [PhonemeMark("a", 0.0)])
    core.end_segment()
    steps = drain(core) + [core.advance() for _ in range(10)]
    jaw = np.array([s.motion[IDX["jawOpen"]] for s in steps])
    assert jaw[: len(steps) - 11].max() > 0.5
    assert jaw[-1] < 0.02


def test_bad_input_is_rejected(core: AvatarCore) -> None:
    with pytest.raises(ValueError, match="odd length"):
        core.push_audio(b"\x00\x01\x02", SR)
    with pytest.raises(ValueError, match="sample_rate"):
        core.push_audio(b"\x00\x00", 0)
    assert core.pending_seconds == 0.0


def test_render_and_thread_setting() -> None:
    before = torch.get_num_threads()
    try:
        avatar = AvatarSettings(width=96, height=64, device="cpu", torch_threads=1)
        configure_process(Settings(avatar=avatar))  # the server sets torch's threads at start
        core = AvatarCore(avatar, sample_rate=16000)
        assert torch.get_num_threads() == 1
        img = core.render(core.advance().motion)
        assert img.shape == (64, 96, 3) and img.dtype == np.uint8
    finally:
        torch.set_num_threads(before)


class RecordingMotion(ProceduralMotion):
    """The real motion source, also recording the phoneme marks it got per frame."""

    def __init__(self) -> None:
        super().__init__(fps=25)
        self.marks: list[list[PhonemeMark]] = []

    def step(self, audio, sample_rate, phonemes, speaking):  # type: ignore[no-untyped-def]
        self.marks.append(list(phonemes))
        return super().step(audio, sample_rate, phonemes, speaking)


def marks_per_frame(core: AvatarCore, motion: RecordingMotion) -> list[tuple[int, PhonemeMark]]:
    """Drain the core; (frame index, mark) for every mark handed to the motion source."""
    steps = drain(core)
    return [(s.index, m) for s in steps for m in motion.marks[s.index]]
