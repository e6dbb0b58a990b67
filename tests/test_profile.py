"""`visage profile` for 2 turns against an in-process server: its report is complete."""

from __future__ import annotations

import json

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
    barge_in = {"interrupt_decision", "interrupt_audio_stop", "interrupt_mouth_close"}
    assert set(report["budgets"]) == stages | {"end_to_end", "av_offset"} | barge_in
    assert isinstance(report["violations"], list)
    assert plot.stat().st_size > 1000
    assert "render_first_frame" in capsys.readouterr().out


def _report(reply_after_s: float, av_offset_ms: float) -> dict:
    import numpy as np

    from agent.config import Settings
    from agent.profile import Timeline, TurnResult, build_report

    turn = TurnResult(question="q", speech_end=1.0, reply_onset=1.0 + reply_after_s)
    turn.av_offset_ms = av_offset_ms
    t = np.arange(50) / 25
    timeline = Timeline(start=0.0, audio=np.zeros(200), mouth_t=t, mouth=np.zeros(50), pts=t)
    return build_report([turn], [], timeline, Settings())


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
