"""MotionDiT, its few-step sampler and the eval metrics, on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from renderer.motion import metrics
from renderer.motion.bench import bench_motion
from renderer.motion.bench import format_table as bench_table
from renderer.motion.data.dataset import Utterance
from renderer.motion.evaluate import METRIC_KEYS, evaluate, format_table, phoneme_marks
from renderer.motion.model import SIZES, MotionDiT, MotionDiTConfig
from renderer.motion.sampler import FlowSampler, flow_times
from renderer.motion.space import IDX, MOTION_DIM
from renderer.motion.train import train_source_std
from tests.helpers.motion import random_model

CFG = SIZES["tiny"]


def inputs(batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    audio = torch.randn(batch, CFG.window, CFG.audio_dim, generator=g)
    history = torch.randn(batch, CFG.history, CFG.motion_dim, generator=g)
    valid = torch.ones(batch, CFG.history, dtype=torch.bool)
    x = torch.randn(batch, CFG.chunk, CFG.motion_dim, generator=g)
    return audio, history, valid, x


def test_untrained_model_predicts_zero_velocity() -> None:
    model = MotionDiT(CFG).eval()
    audio, history, valid, x = inputs()
    ctx = model.context(audio, history, valid)
    assert ctx.shape == (2, CFG.window, CFG.width)
    v = model(x, torch.tensor([0.0, 0.7]), ctx)
    assert v.shape == (2, CFG.chunk, MOTION_DIM)
    assert torch.count_nonzero(v) == 0  # adaLN-Zero and a zero output layer


def test_config_round_trip_and_validation() -> None:
    assert MotionDiTConfig.from_dict(CFG.to_dict()) == CFG
    assert CFG.window == CFG.history + CFG.chunk + CFG.lookahead
    with pytest.raises(ValueError, match="unknown MotionDiT config keys: colour"):
        MotionDiTConfig.from_dict({**CFG.to_dict(), "colour": 1})
    with pytest.raises(ValueError, match="divisible"):
        MotionDiT(MotionDiTConfig(width=30, heads=4))


def test_history_validity_changes_the_output() -> None:
    model = random_model()
    audio, history, _, x = inputs(batch=1)
    t = torch.tensor([0.5])
    on = model(x, t, model.context(audio, history, torch.ones(1, CFG.history, dtype=torch.bool)))
    off = model(x, t, model.context(audio, history, torch.zeros(1, CFG.history, dtype=torch.bool)))
    assert not torch.allclose(on, off)


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_flow_times_run_from_noise_to_data(steps: int) -> None:
    for shift in (0.5, 1.0, 3.0):
        t = flow_times(steps, shift)
        assert t.dtype == torch.float32 and len(t) == steps + 1
        assert t[0] == 0.0 and t[-1] == pytest.approx(1.0)
        assert torch.all(t[1:] > t[:-1])


def test_flow_times_reject_bad_steps() -> None:
    with pytest.raises(ValueError, match="between 1 and 8"):
        flow_times(0)
    with pytest.raises(ValueError, match="between 1 and 8"):
        flow_times(9)


def test_sampler_is_deterministic_for_a_seed() -> None:
    model = random_model()
    audio, history, valid, _ = inputs(batch=1)
    sampler = FlowSampler(model, steps=4)
    ctx = model.context(audio, history, valid)

    def run(seed: int) -> torch.Tensor:
        noise = torch.randn(1, CFG.chunk, MOTION_DIM, generator=torch.Generator().manual_seed(seed))
        return sampler.sample(ctx, noise).clone()

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_untrained_sampler_returns_its_noise() -> None:
    model = MotionDiT(CFG)
    noise = torch.randn(1, CFG.chunk, MOTION_DIM)
    expected = noise * model.source_std  # the mouth's flow starts at zero
    assert torch.count_nonzero(model.source_std) == MOTION_DIM - 6
    audio, history, valid, _ = inputs(batch=1)
    out = FlowSampler(model, steps=2).sample(model.context(audio, history, valid), noise)
    assert torch.equal(out, expected)


# ------------------------------------------------------------------------------ metrics


def tracks_with_jaw(jaw: np.ndarray) -> np.ndarray:
    out = np.zeros((len(jaw), MOTION_DIM), dtype=np.float32)
    out[:, IDX["jawOpen"]] = jaw
    return out


def test_sync_lag_finds_a_lagged_copy() -> None:
    rng = np.random.default_rng(0)
    jaw = np.convolve(rng.random(400), np.ones(5) / 5, mode="same")
    target = tracks_with_jaw(jaw)
    late = tracks_with_jaw(np.concatenate([np.zeros(3), jaw[:-3]]))  # 3 frames late
    early = tracks_with_jaw(np.concatenate([jaw[2:], np.zeros(2)]))  # 2 frames early
    assert metrics.sync_lag([target], [target]) == 0
    assert metrics.sync_lag([late], [target]) == 3
    assert metrics.sync_lag([early], [target]) == -2
    assert metrics.jaw_corr([target], [target]) == pytest.approx(1.0)
    assert metrics.jaw_corr([late], [target]) < 0.9


def test_pause_jaw_max_looks_past_the_settle_time() -> None:
    pauses = [(0.41, 0.81), (1.0, 1.2)]  # frames 10.25-20.25 and a pause under 300 ms
    assert metrics.pause_frames(pauses, 32) == [(14, 20)]  # from 0.53 s, whole frames only
    jaw = np.zeros(32)
    jaw[10:14] = 0.9  # still closing in the first 120 ms of the pause: allowed
    jaw[20] = 0.7  # the frame the pause ends in is partly speech: not counted
    jaw[26] = 0.8  # inside the short pause: not counted
    assert metrics.pause_jaw_max([tracks_with_jaw(jaw)], [pauses]) == pytest.approx(0.0)
    jaw[15] = 0.3
    assert metrics.pause_jaw_max([tracks_with_jaw(jaw)], [pauses]) == pytest.approx(0.3)


def test_boundary_ratio_sees_jumps_at_chunk_borders() -> None:
    t = np.arange(64, dtype=np.float32)
    smooth = np.tile((0.01 * t)[:, None], (1, MOTION_DIM))
    assert metrics.boundary_ratio([smooth], chunk=8) == pytest.approx(1.0)
    jumpy = smooth + (np.arange(64) // 8)[:, None] * 0.05
    assert metrics.boundary_ratio([jumpy], chunk=8) == pytest.approx(6.0)


def test_blinks_and_head_statistics() -> None:
    track = np.zeros((25 * 60, MOTION_DIM), dtype=np.float32)
    for start in range(10, len(track), 150):  # a blink every 6 s
        track[start : start + 4, IDX["eyeBlinkLeft"]] = 1.0
        track[start : start + 4, IDX["eyeBlinkRight"]] = 0.9
    assert metrics.blink_count(track) == 10
    assert metrics.blinks_per_min([track]) == pytest.approx(10.0)
    mask = np.arange(len(track)) % 100 < 50
    track[:, IDX["headYaw"]] = np.where(mask, np.sin(np.arange(len(track))), 0.0)
    assert metrics.head_std([track], [mask], talking=True) > 0.1
    assert metrics.head_std([track], [mask], talking=False) == 0.0
    assert metrics.head_difference([track], [track]) == 0.0


# ---------------------------------------------------------------- eval and bench harness


def fake_utterance(seconds: float, seed: int) -> Utterance:
    """An utterance with noise for audio and a made-up timeline (only shapes matter)."""
    rng = np.random.default_rng(seed)
    t = int(seconds * 25)
    audio = (3000 * rng.standard_normal(t * 640)).astype(np.int16)
    motion = rng.random((t, MOTION_DIM)).astype(np.float32) * 0.2
    mask = np.arange(t) % 40 < 30
    return Utterance(
        id=f"u{seed}", split="test", text="", voice="", rate=170, pitch=50,
        mel=np.zeros((4 * t, 80), np.float32), motion=motion, speech_mask=mask, audio=audio,
        phonemes=[("a", 0.1, 0.3), ("m", 0.3, 0.5)], pauses=[(0.5, 1.2)],
    )  # fmt: skip


def test_evaluate_reports_exactly_the_metric_keys() -> None:
    model = random_model()
    result = evaluate(model, [fake_utterance(2.0, 0), fake_utterance(1.3, 1)], steps=1)
    for name in ("learned", "procedural"):
        assert tuple(result[name]) == METRIC_KEYS
        assert all(np.isfinite(v) for v in result[name].values())
    assert "seed head diff" in format_table(result)


def test_phoneme_marks_land_in_their_frames() -> None:
    marks = phoneme_marks([("h", 0.05, 0.1), ("a", 0.1, 0.3), ("m", 0.5, 0.6)], 20)
    assert [(j, m.ipa) for j, ms in enumerate(marks) for m in ms] == [
        (1, "h"), (2, "a"), (7, ""), (12, "m"), (15, ""),
    ]  # fmt: skip
    assert marks[1][0].offset_s == pytest.approx(0.01)


def test_bench_reports_latency_and_rtf() -> None:
    result = bench_motion(random_model(), steps_list=(1, 2), seconds=2.0)
    assert [r["steps"] for r in result["results"]] == [1, 2]
    for row in result["results"]:
        assert row["first_chunk_ms"] > 0 and row["steady_p95_ms"] >= row["steady_p50_ms"] > 0
        assert 0 < row["rtf"] < 1
    assert "RTF" in bench_table(result)


def test_eyelid_temperature_scales_only_the_sampling_noise() -> None:
    model = MotionDiT(CFG)
    blink = [IDX["eyeBlinkLeft"], IDX["eyeBlinkRight"]]
    model.set_eyelid_temperature(1.3)
    assert model.cfg.eyelid_temperature == 1.3
    assert torch.allclose(model.source_std[blink], torch.tensor(1.3))
    assert model.source_std[IDX["headYaw"]] == 1.0 and model.source_std[IDX["jawOpen"]] == 0.0
    assert torch.all(train_source_std(model)[blink] == 1.0)  # training always uses unit noise
    with pytest.raises(ValueError, match="positive"):
        model.set_eyelid_temperature(0.0)
