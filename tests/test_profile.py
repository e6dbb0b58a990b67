"""`visage profile` for 2 turns against an in-process server: its report is complete."""

from __future__ import annotations

import json

import numpy as np
import pytest

from agent.cli import main

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {"p50_ms", "p95_ms", "max_ms"}


def test_profile_two_turns_writes_a_complete_report(tmp_path, capsys) -> None:
    out, plot = tmp_path / "profile.json", tmp_path / "waterfall.png"
    code = main(
        [
            "profile",
            "--turns",
            "2",
            "--json",
            str(out),
            "--plot",
            str(plot),
            "--set",
            "avatar.width=256",
            "--set",
            "avatar.height=256",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    stages = {"vad_stop", "stt", "llm_ttft", "tts_ttfb", "render_first_frame", "transport"}
    assert set(report["stages"]) == stages
    for name in stages:
        assert set(report["stages"][name]) == SUMMARY_KEYS
    for key in (
        "end_to_end",
        "av_offset_ms",
        "interrupt_decision_ms",
        "interrupt_audio_stop_ms",
        "interrupt_mouth_close_ms",
    ):
        assert set(report[key]) == SUMMARY_KEYS, key
    assert report["end_to_end"]["p50_ms"] is not None, "replies were heard"
    assert report["interrupt_audio_stop_ms"]["p50_ms"] is not None, "the barge-in was measured"
    assert report["interrupt_decision_ms"]["p50_ms"] is not None, "the server's decision was seen"
    assert isinstance(report["fps_delivered"], float) and report["fps_delivered"] > 20
    assert isinstance(report["frames_dropped"], int)
    assert "av_offset_trend_ms_per_min" in report  # None with fewer than 3 measured turns
    assert "av_offset_abs_p95_ms" in report  # what the av_offset budget holds
    assert report["av_offset_lip_synced"] is True, "the sender's reports gave send times"
    assert set(report["av_offset_arrival_ms"]) == SUMMARY_KEYS
    barge_in = {"interrupt_decision", "interrupt_audio_stop", "interrupt_mouth_close"}
    assert set(report["budgets"]) == stages | {"end_to_end", "av_offset"} | barge_in
    assert isinstance(report["violations"], list)
    assert [t["kind"] for t in report["per_turn"]] == ["backchannel", "barge_in"]
    backchannel = report["backchannel"]
    assert backchannel["turns"] == 1, "the 'hmm' was said over the first reply"
    assert set(backchannel) == {"turns", "resumed", "interrupted", "pause_ms"}
    assert set(backchannel["pause_ms"]) == SUMMARY_KEYS
    assert set(report["end_to_end_parts_ms"]) == {"speech_end_detected", "server", "delivery"}
    for turn in report["per_turn"]:
        parts = turn["end_to_end_parts_ms"]
        if parts and turn["end_to_end_ms"] is not None:  # the three parts make up the whole
            assert abs(sum(parts.values()) - turn["end_to_end_ms"]) < 1.0, turn
            assert 0 < parts["server"] < turn["end_to_end_ms"]
    assert report["user_voice"] == "piper"
    assert plot.stat().st_size > 1000
    assert "render_first_frame" in capsys.readouterr().out


def test_the_caller_speaks_with_piper_or_espeak() -> None:
    from agent.profile import USER_VOICES, speech_pcm

    for voice in USER_VOICES:
        pcm, end_s = speech_pcm("What can you do?", voice)
        assert pcm.dtype == np.int16 and 0.5 < end_s <= len(pcm) / 16000 < 3.0, voice
    with pytest.raises(ValueError, match="unknown caller voice 'robot'"):
        speech_pcm("hi", "robot")


def test_turn_plan_mixes_questions_barge_ins_and_backchannels() -> None:
    from agent.profile import plan_turns

    assert plan_turns(7) == [
        "backchannel",
        "barge_in",
        "ask",
        "ask",
        "ask",
        "backchannel",
        "barge_in",
    ]
    assert plan_turns(4, barge_in_every=2) == ["backchannel", "barge_in"] * 2
    assert plan_turns(3, barge_in_every=0) == ["ask"] * 3
    with pytest.raises(ValueError, match="0 or at least 2"):
        plan_turns(3, barge_in_every=1)


def test_profile_rejects_a_barge_in_period_of_one(capsys) -> None:
    assert main(["profile", "--turns", "3", "--barge-in-every", "1"]) == 2
    assert "--barge-in-every must be 0 (never) or at least 2" in capsys.readouterr().err


def _report_of(turn) -> dict:
    """The report for one measured turn, over 2 s of quiet media."""
    from agent.config import Settings
    from agent.profile import Timeline, build_report

    t = np.arange(50) / 25
    timeline = Timeline(start=0.0, audio=np.zeros(200), mouth_t=t, mouth=np.zeros(50), pts=t)
    return build_report([turn], [], timeline, Settings())


def _report(reply_after_s: float, av_offset_ms: float) -> dict:
    from agent.profile import TurnResult

    turn = TurnResult(question="q", speech_end=1.0, reply_onset=1.0 + reply_after_s)
    turn.av_offset_ms = av_offset_ms
    return _report_of(turn)


@pytest.mark.parametrize(
    ("reply_after_s", "av_offset_ms", "broken"),
    [(0.5, 10.0, []), (1.5, 10.0, ["end_to_end"]), (0.5, -60.0, ["av_offset"])],
)
def test_fail_on_budget_exits_1_only_when_a_budget_is_broken(
    monkeypatch, capsys, reply_after_s: float, av_offset_ms: float, broken: list[str]
) -> None:
    import agent.profile

    report = _report(reply_after_s, av_offset_ms)
    assert [v["stage"] for v in report["violations"]] == broken
    monkeypatch.setattr(agent.profile, "run_profile", lambda **_: report)
    assert main(["profile", "--turns", "1"]) == 0  # without the flag: a report, not a verdict
    assert main(["profile", "--turns", "1", "--fail-on-budget"]) == (1 if broken else 0)
    out = capsys.readouterr().out
    assert (
        ("over budget at p95: " + ", ".join(broken)) in out if broken else "over budget" not in out
    )


@pytest.mark.parametrize(
    ("pause_ms", "interrupted", "lost"), [(700.0, False, 0), (None, False, 1), (700.0, True, 1)]
)
def test_a_backchannel_that_drops_the_reply_is_a_violation(
    pause_ms: float | None, interrupted: bool, lost: int
) -> None:
    from agent.profile import TurnResult

    turn = TurnResult(question="q", speech_end=1.0, kind="backchannel", barge_onset=2.5)
    turn.pause_ms, turn.server_interrupted = pause_ms, interrupted
    report = _report_of(turn)
    broken = [v for v in report["violations"] if v["stage"] == "false_interruption"]
    assert broken == ([{"stage": "false_interruption", "count": lost, "budget": 0}] if lost else [])


def _rendered_reply(width: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A spoken sentence through the avatar core, without a network: the audio's 10 ms
    loudness, each frame's start time, and the mouth the profiler's meter reads in it."""
    from agent.profile import MouthMeter
    from renderer.config import AvatarSettings
    from renderer.core import AvatarCore
    from speech.espeak import synthesize

    settings = AvatarSettings(width=width, height=width, device="cpu")
    meter = MouthMeter(settings)
    core = AvatarCore(settings, sample_rate=24000)
    pcm, rate = synthesize("I can answer questions about this project, and I run offline.")
    core.push_audio(np.asarray(pcm, np.int16).tobytes(), rate)
    core.end_segment()
    loudness, mouth = [], []
    while core.pending_samples > 0:
        step = core.advance()
        samples = np.frombuffer(step.audio, np.int16).astype(np.float32) / 32768
        for quarter in np.split(samples, 4):  # 10 ms each
            loudness.append(float(np.sqrt(np.mean(quarter**2))))
        mouth.append(meter(core.render(step.motion)))
    return np.array(loudness), np.arange(len(mouth)) / 25, np.array(mouth)


@pytest.mark.parametrize("video_late_s", [0.0, 0.08])
def test_av_offset_estimator_reads_the_lag_of_the_mouth_behind_the_voice(
    video_late_s: float,
) -> None:
    from agent.profile import Timeline

    loudness, frame_t, mouth = _rendered_reply()
    timeline = Timeline(start=0.0, audio=loudness, mouth_t=frame_t + video_late_s, mouth=mouth)
    offset = timeline.av_offset_ms(0.0, len(loudness) / 100)
    assert offset is not None and abs(offset - video_late_s * 1000) <= 20, offset


def test_av_offset_places_frames_as_a_lip_syncing_receiver_shows_them() -> None:
    """Audio waits 50 ms in the receiver's jitter buffer, video 5 ms: a player without lip
    sync shows the face 45 ms early; one that syncs on send times shows it in step."""
    from agent.profile import Timeline

    loudness, frame_t, mouth = _rendered_reply()
    arrived = np.arange(len(loudness)) / 100  # one received audio piece per 10 ms bin
    timeline = Timeline(
        start=0.0,
        audio=loudness,
        mouth_t=frame_t - 0.045,
        mouth=mouth,
        mouth_sent=frame_t - 0.05,
        audio_arrived=arrived,
        audio_sent=arrived - 0.05,
    )
    end = len(loudness) / 100
    by_arrival = timeline.av_offset_ms(0.0, end, lip_sync=False)
    synced = timeline.av_offset_ms(0.0, end)
    assert by_arrival is not None and abs(by_arrival + 45) <= 20, by_arrival
    assert synced is not None and abs(synced) <= 20, synced


def test_mouth_close_is_read_when_a_lip_syncing_receiver_shows_it() -> None:
    from agent.profile import Timeline

    frame_t = np.arange(50) / 25
    mouth = np.where(frame_t < 1.0, 0.8, 0.0)  # closes at 1.0 s on the sender's timeline
    arrived = np.arange(200) / 100
    timeline = Timeline(
        start=0.0,
        audio=np.zeros(200),
        mouth_t=frame_t + 0.005,  # video arrives at once, audio waits 50 ms
        mouth=mouth,
        mouth_sent=frame_t,
        audio_arrived=arrived,
        audio_sent=arrived - 0.05,
    )
    assert timeline.mouth_closed_from(0.5, lip_sync=False) == pytest.approx(1.005)
    assert timeline.mouth_closed_from(0.5) == pytest.approx(1.05)


@pytest.mark.parametrize("face", ["stylised", "astronaut"])
def test_the_mouth_meter_is_not_fooled_by_the_head_turning(face: str, tmp_path) -> None:
    """A closed mouth reads closed with the head pitched, turned or tilted by up to 8.6°
    (a box around the mouth read hair and collar as an open mouth: 0.3 to 0.5); an open
    jaw reads open."""
    from PIL import Image
    from skimage import data as skdata

    from agent.profile import MouthMeter
    from renderer.config import AvatarSettings
    from renderer.frames import build_drawer
    from renderer.motion.space import IDX, neutral_motion
    from renderer.portrait.avatar import prepare_avatar, save_avatar

    settings = AvatarSettings(face=face, width=512, height=512, device="cpu", dir=tmp_path)
    if face != "stylised":
        photo = tmp_path / "astronaut.png"
        Image.fromarray(skdata.astronaut()).save(photo)
        save_avatar(tmp_path, prepare_avatar(photo, face))
    meter, drawer = MouthMeter(settings), build_drawer(settings)

    def reading(**channels: float) -> float:
        motion = neutral_motion()
        for name, value in channels.items():
            motion[IDX[name]] = value
        return meter(drawer.render(motion))

    for channel in ("headPitch", "headYaw", "headRoll"):
        for angle in (-0.15, -0.04, 0.04, 0.15):
            assert reading(**{channel: angle}) <= meter.closed_level, (channel, angle)
    assert reading(jawOpen=0.6) >= 0.5
    assert reading(jawOpen=0.6, headYaw=0.08) >= 0.4
