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
