"""The renderer's degradation ladder: the rungs, the decisions, and a slowed renderer live."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import numpy as np
import pytest
from loguru import logger
from pipecat.frames.frames import (
    TTSAudioRawFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.tests.utils import SleepFrame, run_test

from pipelines.frames import AvatarImageFrame
from pipelines.stages.avatar import AvatarStage
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.frames.stylised.face import StylisedFace
from renderer.ladder import DegradationLadder, QualityLevel, build_levels
from renderer.motion.learned import LearnedMotion
from renderer.motion.space import MOTION_DIM
from renderer.player import AvatarPlayer
from tests.helpers.frames import Timestamps

FPS = 25
PERIOD = 1 / FPS
SR = 24_000


WINDOW = 8  # the ladder's default window, in frames
UP_AFTER = 2 * FPS  # its default wait for an up step: 2 s of headroom


def ladder(steps: int = 4) -> DegradationLadder:
    return DegradationLadder(build_levels(FPS, 512, 512, motion_steps=steps), FPS)


def feed(lad: DegradationLadder, work_s: float, frames: int) -> list[QualityLevel]:
    """Observe ``frames`` frames of the same work; the levels it changed to, in order."""
    return [lvl for _ in range(frames) if (lvl := lad.observe(work_s)) is not None]


def frames_to_change(lad: DegradationLadder, work_s: float, limit: int = 5000) -> int:
    """Frames of this work until the ladder changes level (the changing frame included)."""
    for n in range(1, limit + 1):
        if lad.observe(work_s) is not None:
            return n
    raise AssertionError(f"no change in {limit} frames")


# ----------------------------------------------------------------------- the rungs


def test_levels_trade_steps_then_image_rate_then_resolution() -> None:
    levels = build_levels(FPS, 512, 384, motion_steps=4)
    assert [lvl.describe() for lvl in levels] == [
        "steps 4, 25 fps, 512x384",
        "steps 2, 25 fps, 512x384",
        "steps 1, 25 fps, 512x384",
        "steps 1, 12.5 fps, 512x384",
        "steps 1, 12.5 fps, 256x192",
    ]
    assert [(lvl.render_every, lvl.scale) for lvl in levels[-2:]] == [(2, 1.0), (2, 0.5)]
    steps = [lvl.motion_steps for lvl in build_levels(FPS, 64, 64, motion_steps=8)]
    assert steps == [8, 4, 2, 1, 1, 1]


def test_procedural_motion_has_no_step_rungs() -> None:
    levels = build_levels(FPS, 128, 128)
    assert [lvl.describe() for lvl in levels] == [
        "25 fps, 128x128",
        "12.5 fps, 128x128",
        "12.5 fps, 64x64",
    ]
    # A half-size drawing below the renderer's minimum side (16) is left out.
    assert len(build_levels(FPS, 24, 24)) == 2


# -------------------------------------------------------------------- the decisions


def test_sustained_overload_steps_down_one_rung_per_window_in_order() -> None:
    lad = ladder()
    reached = []
    for _ in range(4):
        assert frames_to_change(lad, 1.5 * PERIOD) == WINDOW
        reached.append(lad.level)
    assert reached == lad.levels[1:], "steps, steps, image rate, resolution"
    assert not feed(lad, 3 * PERIOD, 100), "the last rung is the floor"
    assert lad.changes == 4


def test_a_single_spike_does_not_step_down() -> None:
    lad = ladder()
    assert not feed(lad, 0.3 * PERIOD, 20)
    assert lad.observe(4 * PERIOD) is None  # one frame four periods long (e.g. a GC pause)
    assert not feed(lad, 0.3 * PERIOD, 100)
    assert lad.index == 0


def test_load_between_the_thresholds_holds_the_rung() -> None:
    lad = ladder()
    feed(lad, 1.5 * PERIOD, 2 * WINDOW)
    assert lad.index == 2
    assert not feed(lad, 0.7 * PERIOD, 20 * FPS), "no up step without headroom, no down step"


def test_headroom_steps_back_up_one_rung_at_a_time_after_the_dwell() -> None:
    lad = ladder()
    feed(lad, 1.5 * PERIOD, 4 * WINDOW)
    assert lad.index == 4
    for expected in (3, 2, 1, 0):
        n = frames_to_change(lad, 0.2 * PERIOD)
        assert UP_AFTER < n <= UP_AFTER + WINDOW, n
        assert lad.index == expected
    assert not feed(lad, 0.2 * PERIOD, 20 * FPS), "full quality is the top"


def test_an_up_step_that_does_not_fit_is_retried_less_and_less_often() -> None:
    """The cost doubles from rung 4 to rung 3: rung 4 has headroom, rung 3 is over budget."""
    lad = ladder()
    feed(lad, 1.5 * PERIOD, 4 * WINDOW)
    cost = {4: 0.3 * PERIOD, 3: 1.2 * PERIOD}
    ups = []
    for frame in range(60 * FPS):
        if lad.observe(cost[lad.index]) is not None and lad.index == 3:
            ups.append(frame)
    assert lad.index == 4
    # Tries after about 2 s, 4 s, 8 s, 16 s (not every 2 s: that would be 25 tries).
    assert len(ups) == 4, ups
    waits = np.diff(ups)
    assert all(later > 1.5 * sooner for sooner, later in pairwise(waits)), waits
    # When the load eases, the next try fits; having held, the one after waits 2 s again.
    frames_to_change(lad, 0.3 * PERIOD)
    assert lad.index == 3
    assert UP_AFTER < frames_to_change(lad, 0.3 * PERIOD) <= UP_AFTER + WINDOW
    assert lad.index == 2


def test_ladder_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one"):
        DegradationLadder([], FPS)
    with pytest.raises(ValueError, match="headroom_ratio < budget_ratio"):
        DegradationLadder(build_levels(FPS, 64, 64), FPS, budget_ratio=0.4)
    with pytest.raises(ValueError, match="positive fps"):
        build_levels(0, 64, 64)


# ----------------------------------------------------------------------- the core


def test_core_applies_a_level_steps_stride_and_size() -> None:
    settings = AvatarSettings(width=128, height=96, device="cpu", motion_steps=4)
    core = AvatarCore(settings, sample_rate=SR)
    source = core.motion_source
    assert isinstance(source, LearnedMotion)
    gen = source.generator
    assert [lvl.motion_steps for lvl in core.levels] == [4, 2, 1, 1, 1]
    motion = np.zeros(MOTION_DIM, np.float32)
    full = core.render(motion)

    core.set_quality(core.levels[2])
    assert gen.steps == gen.sampler.steps == 1
    assert all(core.advance().draw for _ in range(3)), "still a new image every frame"

    core.set_quality(core.levels[-1])
    assert [core.advance().draw for _ in range(6)] == [True, False] * 3
    half = core.render(motion)
    assert half.shape == full.shape == (96, 128, 3) and half.dtype == np.uint8
    # The same face, only softer: drawn at 64x48 and upscaled, not cropped or transposed.
    assert np.abs(half.astype(int) - full.astype(int)).mean() < 8

    core.set_quality(core.levels[0])
    assert gen.steps == gen.sampler.steps == 4
    assert all(core.advance().draw for _ in range(3))
    assert np.array_equal(core.render(motion), full)


def test_core_rejects_a_level_of_another_ladder() -> None:
    core = AvatarCore(AvatarSettings(width=64, height=64, device="cpu", motion="procedural"))
    with pytest.raises(ValueError, match="not one of this core's quality levels"):
        core.set_quality(build_levels(FPS, 128, 128)[1])


# ------------------------------------------------------- a slowed renderer, live

SIZE = 128
FULL_DRAW_S = 0.080  # two frame periods at full size; a quarter of that at half size
AUDIO_S = 6.0


def tone_chunks(seconds: float, chunk_s: float = 0.2) -> list[TTSAudioRawFrame]:
    n = round(seconds * SR)
    t = np.arange(n) / SR
    pcm = (np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * 9000).astype(
        np.int16
    )
    step = round(chunk_s * SR)
    return [TTSAudioRawFrame(pcm[i : i + step].tobytes(), SR, 1) for i in range(0, n, step)]


@pytest.mark.slow
async def test_slowed_renderer_degrades_and_keeps_the_frame_rate_without_drift(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    draw = StylisedFace.render

    def slow_draw(
        self: StylisedFace, motion: np.ndarray, cancel: threading.Event | None = None
    ) -> np.ndarray:
        time.sleep(FULL_DRAW_S * (self.width * self.height) / (SIZE * SIZE))
        return draw(self, motion, cancel)

    monkeypatch.setattr(StylisedFace, "render", slow_draw)
    logged: list[tuple[float, str]] = []  # (when, message) of each quality change
    sink = logger.add(
        lambda m: logged.append((time.monotonic(), m.record["message"])), filter=_quality_log
    )
    avatar = AvatarStage(
        AvatarPlayer(
            AvatarCore(AvatarSettings(width=SIZE, height=SIZE, device="cpu"), sample_rate=SR)
        )
    )
    watch = Timestamps()
    audio_in = tone_chunks(AUDIO_S)
    try:
        await run_test(
            Pipeline([avatar, watch]),
            frames_to_send=[*audio_in, TTSStoppedFrame(), SleepFrame(4.0)],
        )
    finally:
        logger.remove(sink)

    # It stepped down through the rungs in order to the one that fits: half size at half
    # the image rate (a quarter of the full cost, every other frame).
    changes = [message for _, message in logged]
    downs = [c for c in changes if "quality down" in c]
    assert [d.split(" -> ")[1].split(" (")[0] for d in downs[:4]] == [
        "steps 2, 25 fps, 128x128",
        "steps 1, 25 fps, 128x128",
        "steps 1, 12.5 fps, 128x128",
        "steps 1, 12.5 fps, 64x64",
    ], changes
    assert avatar.core.quality == avatar.core.levels[-1], changes
    assert len(changes) <= 6, f"no oscillation: {changes}"
    assert avatar.frames_drawn < 0.7 * avatar.frames_rendered

    images = [(t, f.image) for t, f in watch.seen if isinstance(f, AvatarImageFrame)]
    audio = [(t, f) for t, f in watch.seen if isinstance(f, TTSAudioRawFrame)]
    assert all(f.size == (SIZE, SIZE) and len(f.image) == SIZE * SIZE * 3 for _, f in images)
    # Every sample pushed in came out (the last frame padded with silence).
    sent = sum(len(f.audio) for f in audio_in)
    got = sum(len(f.audio) for _, f in audio)
    assert 0 <= got - sent < SR // FPS * 2

    # Once settled on that rung (about 2.5 s in: 8 frames per rung, the first three at
    # 80 ms a frame), and while the reply plays until the ladder probes a rung up (2 s of
    # headroom later; that probe is too slow, and the clock restarts rather than burst):
    # the delivered frame rate holds and the audio keeps to the wall clock.
    settled = [t for t, message in logged if "quality down" in message][3]
    assert settled - images[0][0] < 4.0, "the ladder reacts within a few seconds"
    probes = [t for t, message in logged if "quality up" in message and t > settled]
    a, b = settled + 0.2, min([audio[-1][0], *probes])
    assert b - a > 1.5, f"the reply plays on long enough after settling ({b - a:.1f} s)"
    fps = sum(a <= t <= b for t, _ in images) / (b - a)
    assert abs(fps - FPS) <= 1.0, fps
    played = [t for t, _ in audio if a <= t <= b]
    drift = (played[-1] - played[0]) - (len(played) - 1) * PERIOD
    assert abs(drift) < 0.1, f"audio drifted {drift * 1000:.0f} ms from the wall clock"


def _quality_log(record: dict) -> bool:
    return "avatar quality" in record["message"]
