"""MotionGenerator: streaming equals offline, idle and interruption; AvatarCore integration."""

from __future__ import annotations

import numpy as np
import pytest

from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.motion.batch import sample_chunks
from renderer.motion.learned import LearnedMotion
from renderer.motion.space import IDX, MOTION_DIM
from renderer.motion.stream import SAMPLES_PER_FRAME, MotionGenerator, generate
from tests.helpers.motion import random_model, random_pieces, speech

SR = 16000


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return random_model(seed=1)


def noise_audio(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def test_streaming_equals_offline_for_any_piece_sizes(model) -> None:  # type: ignore[no-untyped-def]
    audio = noise_audio(2.3)
    offline = generate(model, audio, SR, steps=2, seed=5)
    assert offline.shape == (58, MOTION_DIM) and offline.dtype == np.float32
    for trial in range(3):
        gen = MotionGenerator(model, steps=2, seed=5)
        frames = []
        for piece in random_pieces(audio, np.random.default_rng(trial), 1, 3000):
            gen.push(piece, SR)
            frames.append(gen.take())
        gen.end()
        frames.append(gen.take(58 - gen.frames_taken))
        np.testing.assert_array_equal(np.concatenate(frames), offline)
    assert not np.allclose(generate(model, audio, SR, steps=2, seed=6), offline)


def test_frames_come_out_as_soon_as_a_chunk_and_its_lookahead_are_in(model) -> None:  # type: ignore[no-untyped-def]
    cfg = model.cfg
    need = (cfg.chunk + cfg.lookahead) * SAMPLES_PER_FRAME + 240  # + last mel window's tail
    gen = MotionGenerator(model, steps=1)
    gen.push(noise_audio(1.0)[: need - 1], SR)
    assert gen.frames_ready() == 0 and not gen.can_take()
    assert gen.take().shape == (0, MOTION_DIM)
    gen.push(np.zeros(1, np.float32), SR)
    assert gen.frames_ready() == cfg.chunk
    assert gen.take().shape == (cfg.chunk, MOTION_DIM)


def test_a_chunk_sampled_ahead_as_a_job_changes_nothing(model) -> None:  # type: ignore[no-untyped-def]
    audio = noise_audio(1.0)
    lazy, eager = MotionGenerator(model, steps=2, seed=3), MotionGenerator(model, steps=2, seed=3)
    for gen in (lazy, eager):
        gen.push(audio[:4000], SR)  # not yet a chunk and its lookahead
    assert eager.next_job() is None, "nothing is due before the chunk's audio is in"
    for gen in (lazy, eager):
        gen.push(audio[4000:], SR)
    job = eager.next_job()
    assert job is not None and eager.commit(job, sample_chunks(model, [job])[0])
    assert eager.chunks_computed == 1
    assert eager.next_job() is None, "the next frame's motion is already there"
    np.testing.assert_array_equal(eager.take(), lazy.take())
    assert eager.chunks_computed == lazy.chunks_computed


def test_any_rate_and_int16_input(model) -> None:  # type: ignore[no-untyped-def]
    pcm, rate = speech("One two three.")
    out = generate(model, pcm, rate, steps=1, seed=0, piece_s=0.05)
    assert len(out) == int(np.ceil(len(pcm) * 25 / rate))
    assert np.all(np.isfinite(out))
    with pytest.raises(ValueError, match="int16 or float"):
        MotionGenerator(model).push(np.zeros(10, np.int32), SR)


def test_idle_keeps_generating_after_the_end(model) -> None:  # type: ignore[no-untyped-def]
    gen = MotionGenerator(model, steps=1)
    gen.push(noise_audio(0.5), SR)
    gen.end()
    assert not gen.is_open and gen.frames_ready() == 13  # 0.5 s rounded up to frames
    idle = gen.take(200)
    assert idle.shape == (200, MOTION_DIM)
    # Idle is computed a chunk at a time, never further ahead than one chunk.
    assert gen.frames_generated - gen.frames_taken < model.cfg.chunk


def test_speech_after_idle_does_not_wait_behind_idle_frames(model) -> None:  # type: ignore[no-untyped-def]
    gen = MotionGenerator(model, steps=1)
    gen.take(3)  # idle from the start: a chunk was computed ahead
    assert gen.frames_generated > gen.frames_taken
    gen.push(noise_audio(0.1), SR)
    assert gen.frames_generated == gen.frames_taken == 3  # the idle look-ahead is gone


def test_drop_pending_forgets_audio_and_frames_not_taken(model) -> None:  # type: ignore[no-untyped-def]
    audio = noise_audio(3.0)
    gen = MotionGenerator(model, steps=1, seed=2)
    gen.push(audio, SR)
    first = gen.take(10)
    assert gen.frames_ready() > 20
    gen.drop_pending()
    assert gen.frames_ready() == 0 and gen.frames_generated == 10 and not gen.is_open
    # New audio continues right after the frames actually taken.
    gen.push(audio[:SR], SR)
    gen.end()
    assert gen.frames_ready() == 25
    after = gen.take()
    assert after.shape == (25, MOTION_DIM)
    # The same as a generator that only ever saw the first 10 frames, then the new audio.
    ref = MotionGenerator(model, steps=1, seed=2)
    ref.push(audio, SR)
    np.testing.assert_array_equal(ref.take(10), first)
    assert gen.last_frame().shape == (MOTION_DIM,)


def test_end_with_frame_count_pads_or_trims(model) -> None:  # type: ignore[no-untyped-def]
    gen = MotionGenerator(model, steps=1)
    gen.push(noise_audio(0.3), SR)  # 7.5 frames
    gen.end(n_frames=10)
    assert gen.frames_ready() == 10
    gen.take()
    gen.push(noise_audio(0.2), SR)  # starts at frame 10
    gen.end()
    assert gen.frames_ready() == 5 and gen.frames_taken == 10


# --------------------------------------------------------------- AvatarCore integration

CORE_SR = 24000
SPF = CORE_SR // 25


def learned_core() -> AvatarCore:
    settings = AvatarSettings(width=64, height=64, device="cpu")
    assert settings.motion == "learned"
    return AvatarCore(settings, sample_rate=CORE_SR)


def test_core_with_learned_motion_speaks_and_closes_the_mouth() -> None:
    core = learned_core()
    for _ in range(5):
        assert not core.advance().speaking  # idle frames before the reply
    pcm, rate = speech("Hello there, how are you doing today? I am fine.")
    for piece in random_pieces(pcm, np.random.default_rng(0), 500, 2000):
        core.push_audio(piece.tobytes(), rate)
    core.end_segment()
    steps = []
    for _ in range(1000):
        steps.append(core.advance())
        if not steps[-1].speaking:
            break
    steps += [core.advance() for _ in range(15)]
    spoken = [s for s in steps if s.audio]
    assert len(spoken) == pytest.approx(len(pcm) / rate * 25, abs=2)
    jaw = np.array([s.motion[IDX["jawOpen"]] for s in steps])
    talking = jaw[: len(spoken)]
    assert talking.max() > 0.3 and talking.std() > 0.05
    assert jaw[-5:].max() < 0.1  # settled closed after the reply


def test_core_waits_for_motion_before_playing_audio() -> None:
    core = learned_core()
    core.push_audio(np.zeros(SPF * 2, np.int16).tobytes(), CORE_SR)  # 2 frames: no lookahead yet
    step = core.advance()
    assert step.speaking and step.audio == b""  # an underrun, motion held
    assert step.motion.shape == (MOTION_DIM,)
    core.end_segment()
    assert len(core.advance().audio) == SPF * 2 and len(core.advance().audio) == SPF * 2
    assert not core.advance().speaking


def test_core_clear_buffer_drops_the_generators_pending_motion() -> None:
    core = learned_core()
    source = core.motion_source
    assert isinstance(source, LearnedMotion)
    core.push_audio(np.zeros(CORE_SR * 2, np.int16).tobytes(), CORE_SR)
    for _ in range(5):
        assert core.advance().audio
    gen = source.generator
    assert gen.frames_generated > gen.frames_taken
    core.clear_buffer()
    assert gen.frames_generated == gen.frames_taken == 5 and not gen.is_open
    assert not core.advance().speaking


def test_silence_gate_halves_the_mouth_only_on_silent_frames(model) -> None:  # type: ignore[no-untyped-def]
    from renderer.motion.batch import SILENCE_MOUTH_GAIN
    from renderer.motion.visemes import VISEME_IDX

    # The first chunk: 3 frames of digital silence, then loud noise. Both runs see the same
    # inputs for it (no history yet); later chunks condition on the gated frames.
    chunk = model.cfg.chunk
    audio = np.concatenate([np.zeros(3 * 640, dtype=np.float32), noise_audio(1.2)])
    gated = generate(model, audio, SR, steps=2, seed=3)[:chunk]
    raw = generate(model, audio, SR, steps=2, seed=3, silence_gate=False)[:chunk]
    silent, loud = np.arange(3), np.arange(3, chunk)
    mouth = np.zeros(MOTION_DIM, dtype=bool)
    mouth[VISEME_IDX] = True
    expected = np.clip(raw[np.ix_(silent, VISEME_IDX)] * SILENCE_MOUTH_GAIN, 0, 1)
    np.testing.assert_allclose(gated[np.ix_(silent, VISEME_IDX)], expected, atol=1e-5)
    assert np.abs(raw[np.ix_(silent, VISEME_IDX)]).max() > 0.05, "the gate had something to halve"
    # Frames with sound, and every channel that is not the mouth, are untouched.
    np.testing.assert_allclose(gated[loud], raw[loud], atol=1e-5)
    np.testing.assert_allclose(gated[:, ~mouth], raw[:, ~mouth], atol=1e-5)


def test_a_breath_before_a_word_counts_as_silence_a_whisper_does_not(model) -> None:  # type: ignore[no-untyped-def]
    from renderer.motion.batch import SILENCE_MOUTH_GAIN
    from renderer.motion.visemes import VISEME_IDX

    # Piper breathes at -58 to -50 dBFS before a word: after a quiet frame, that is silence.
    # -44 dBFS is sound, and so is a lone -56 dBFS frame inside speech (a stop's closure).
    assert model.cfg.chunk >= 6
    rng = np.random.default_rng(5)

    def at(db: float, frames: int) -> np.ndarray:
        return rng.standard_normal(frames * 640).astype(np.float32) * 10 ** (db / 20)

    audio = np.concatenate([at(-56, 2), at(-44, 2), at(-14, 1), at(-56, 1), noise_audio(1.2)])
    gated = generate(model, audio, SR, steps=2, seed=3)[:6]
    raw = generate(model, audio, SR, steps=2, seed=3, silence_gate=False)[:6]
    breath = np.ix_([0, 1], VISEME_IDX)
    expected = np.clip(raw[breath] * SILENCE_MOUTH_GAIN, 0, 1)
    np.testing.assert_allclose(gated[breath], expected, atol=1e-5)
    assert np.abs(raw[breath]).max() > 0.02, "the gate had something to halve"
    np.testing.assert_allclose(gated[2:6], raw[2:6], atol=1e-5)
