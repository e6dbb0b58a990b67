"""Admission by measured capacity: where the call limit comes from, the load benchmark's
per-call figures (a real server process and a real caller on loopback), the capacity
search, and connect/hang-up cycles."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent import capacity
from agent.capacity import (
    CapacityKey,
    new_record,
    resolve_max_sessions,
    save_record,
)
from agent.cli import main
from agent.config import Settings, load_settings
from agent.load import MediaLog, judge, media_figures, search_capacity

BUDGETS = Settings().budgets.model_dump()


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine has 2 usable cores, whatever it really has."""
    monkeypatch.setattr(capacity, "usable_cores", lambda: 2)


def test_an_explicit_max_sessions_wins(tmp_path: Path, two_cores: None) -> None:
    path = tmp_path / "capacity.json"
    save_record(new_record(Settings(), 7), path)
    settings = load_settings(overrides={"server": {"max_sessions": "3"}}, environ={})
    limit, why = resolve_max_sessions(settings, path)
    assert limit == 3
    assert "server.max_sessions is set" in why


def test_the_saved_capacity_for_this_machine_and_avatar_is_used(
    tmp_path: Path, two_cores: None
) -> None:
    path = tmp_path / "capacity.json"
    settings = Settings()
    save_record(new_record(settings, 5, command="visage bench load --find-capacity"), path)
    limit, why = resolve_max_sessions(settings, path)
    assert limit == 5
    assert "measured" in why and str(path) in why
    assert json.loads(path.read_text())["records"][0]["key"]["cores"] == 2


def test_a_capacity_saved_for_another_machine_or_avatar_is_not_used(
    tmp_path: Path, two_cores: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "capacity.json"
    settings = Settings()
    key = CapacityKey.current(settings)
    other_cpu = new_record(settings, 9)
    other_cpu.key = dataclasses.replace(key, cpu="Some Other CPU", cores=64)
    save_record(other_cpu, path)
    small = settings.model_copy(
        update={"avatar": settings.avatar.model_copy(update={"width": 256, "height": 256})}
    )
    save_record(new_record(small, 6), path)
    assert len(json.loads(path.read_text())["records"]) == 2

    limit, why = resolve_max_sessions(settings, path)
    assert limit == 1, "half a call per core on 2 cores"
    assert "per CPU core" in why and "--find-capacity" in why
    assert resolve_max_sessions(small, path)[0] == 6

    # The same machine with more cores is another machine.
    monkeypatch.setattr(capacity, "usable_cores", lambda: 4)
    assert resolve_max_sessions(small, path)[0] == 2


def test_saving_again_replaces_the_record_with_the_same_key(
    tmp_path: Path, two_cores: None
) -> None:
    path = tmp_path / "nested" / "capacity.json"
    save_record(new_record(Settings(), 1), path)
    save_record(new_record(Settings(), 3), path)
    records = json.loads(path.read_text())["records"]
    assert [r["capacity"] for r in records] == [3]
    assert resolve_max_sessions(Settings(), path)[0] == 3


def test_per_core_default_and_its_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "none.json"
    for cores, expected in ((1, 1), (2, 1), (16, 8), (1000, 256)):
        monkeypatch.setattr(capacity, "usable_cores", lambda cores=cores: cores)
        assert resolve_max_sessions(Settings(), missing)[0] == expected, cores


def test_a_measured_capacity_of_zero_still_admits_one_call(tmp_path: Path, two_cores: None) -> None:
    path = tmp_path / "capacity.json"
    save_record(new_record(Settings(), 0), path)
    limit, why = resolve_max_sessions(Settings(), path)
    assert limit == 1 and "not even 1 call" in why


def test_a_broken_capacity_file_falls_back_and_says_so(tmp_path: Path, two_cores: None) -> None:
    path = tmp_path / "capacity.json"
    for text in ("{not json", '{"records": [{"key": {"cpu": "x"}, "capacity": 2}]}', "[]"):
        path.write_text(text)
        limit, why = resolve_max_sessions(Settings(), path)
        assert limit == 1, text  # the per-core default on 2 cores
        assert str(path) in why, why
        assert "cannot be read" in why or "not one" in why, why
    save_record(new_record(Settings(), 4), path)  # a good file replaces a broken one
    assert resolve_max_sessions(Settings(), path)[0] == 4


def test_the_default_capacity_file_follows_xdg_cache_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert capacity.default_capacity_file() == tmp_path / "visage" / "capacity.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert capacity.default_capacity_file() == Path.home() / ".cache/visage/capacity.json"


def _media(fps: float, seconds: float, audio_gap_at: float | None = None) -> MediaLog:
    """A MediaLog of steady video at ``fps`` and 20 ms audio packets over ``seconds``,
    with the audio silent for 300 ms at ``audio_gap_at``."""
    media = MediaLog()
    media.frames = [i / fps for i in range(int(seconds * fps))]
    media.audio = [
        (i * 0.02, i * 960)
        for i in range(int(seconds / 0.02))
        if audio_gap_at is None or not audio_gap_at <= i * 0.02 < audio_gap_at + 0.3
    ]
    return media


def test_media_figures_and_the_verdict() -> None:
    good = media_figures(_media(25, 10), 0.0, 10.0)
    assert good["fps"] == pytest.approx(25, abs=0.2)
    assert good["audio_packets_per_s"] == pytest.approx(50, abs=0.2)
    assert good["audio_packet_ms"] == 20.0
    assert good["audio_realtime"] == pytest.approx(1.0, abs=0.01)
    assert good["audio_max_gap_ms"] == pytest.approx(20, abs=1)
    call = {
        **good,
        "image_fps": 25.0,
        "questions": 2,
        "replies": 2,
        "end_to_end_p95_ms": 700.0,
        "stages_p95_ms": {"stt": 300.0, "end_to_end": 650.0},
    }
    assert judge(call, BUDGETS) == []
    # The budget runs until the reply is sent: the server's end-to-end figure is judged,
    # the caller's (network, jitter buffer, the sound's onset on top) only with strict.
    heard_late = {**call, "end_to_end_p95_ms": 1000.0}
    assert judge(heard_late, BUDGETS) == []
    assert judge(heard_late, BUDGETS, strict=True) == ["end-to-end at the caller p95 1000 ms > 900"]
    sent_late = {**call, "stages_p95_ms": {"end_to_end": 950.0}}
    assert judge(sent_late, BUDGETS) == ["end-to-end p95 950 ms > 900"]
    # Without the server's figures (another server at --url), the caller's count.
    assert judge({**heard_late, "stages_p95_ms": {}}, BUDGETS) == ["end-to-end p95 1000 ms > 900"]

    bad = media_figures(_media(12.5, 10, audio_gap_at=4.0), 0.0, 10.0)
    assert bad["fps"] == pytest.approx(12.5, abs=0.2)
    assert bad["audio_max_gap_ms"] == pytest.approx(320, abs=5)
    assert bad["audio_realtime"] == pytest.approx(0.97, abs=0.01)
    worse = {
        **call,
        **bad,
        "image_fps": 12.5,  # the ladder's half image rate is not judged: that is its job
        "replies": 1,
        "end_to_end_p95_ms": 1500.0,
        "stages_p95_ms": {"stt": 900.0},
    }
    assert [f.split()[0] for f in judge(worse, BUDGETS)] == ["fps", "audio", "1", "end-to-end"]
    strict = judge(worse, BUDGETS, strict=True)
    assert strict[4:] == ["server stt p95 900 ms > 500"]
    assert judge({**call, "stages_p95_ms": {"stt": 900.0}}, BUDGETS) == []
    assert judge({"error": "could not connect: 503"}, BUDGETS) == ["could not connect: 503"]


@pytest.mark.parametrize(
    ("holds_up_to", "most", "capacity", "failing", "tried"),
    [
        (2, 32, 2, 3, [1, 2, 4, 3]),
        (0, 32, 0, 1, [1]),
        (5, 32, 5, 6, [1, 2, 4, 8, 6, 5]),
        (40, 12, 12, None, [1, 2, 4, 8, 12]),
        (9, 12, 9, 10, [1, 2, 4, 8, 12, 10, 9]),
    ],
)
async def test_the_capacity_search_doubles_then_bisects(
    holds_up_to: int, most: int, capacity: int, failing: int | None, tried: list[int]
) -> None:
    seen: list[int] = []

    async def passes(n: int) -> bool:
        seen.append(n)
        return n <= holds_up_to

    assert await search_capacity(passes, most) == (capacity, failing)
    assert seen == tried


SMALL = ["--set", "avatar.width=256", "--set", "avatar.height=256"]


def test_bench_load_refuses_bad_arguments(capsys) -> None:
    assert main(["bench", "load"]) == 2
    assert "--sessions N" in capsys.readouterr().err
    assert main(["bench", "load", "--sessions", "1", "--seconds", "0"]) == 2
    assert main(["bench", "load", "--find-capacity", "--most", "0"]) == 2


@pytest.mark.slow
def test_find_capacity_with_one_call_measures_it_and_saves_the_result(
    tmp_path: Path, capsys
) -> None:
    out, saved = tmp_path / "load.json", tmp_path / "capacity.json"
    code = main(
        [
            "bench",
            "load",
            "--find-capacity",
            "--most",
            "1",
            "--seconds",
            "4",
            "--json",
            str(out),
            "--capacity-file",
            str(saved),
            *SMALL,
        ]
    )
    assert code == 0
    result = json.loads(out.read_text())
    assert [run["sessions"] for run in result["runs"]] == [1]
    report = result["runs"][0]
    assert result["capacity"] == (1 if report["ok"] else 0)
    call = report["per_session"][0]
    assert call["error"] is None and call["greeted"], call
    assert call["questions"] >= 1 and call["replies"] == call["questions"], call
    assert 0 < call["end_to_end_p50_ms"] < 5000
    assert call["fps"] > 15 and call["frames"] > 10 * report["seconds_measured"], "frames counted"
    assert 40 < call["audio_packets_per_s"] < 60 and call["audio_packet_ms"] == 20.0
    assert 0 < call["audio_max_gap_ms"] < 2000
    # The server's own figures for the call came back from GET /api/calls/{pc_id}.
    assert call["image_fps"] is not None and call["image_fps"] > 5
    assert call["quality"] and call["server_turns"] >= 1
    assert call["stages_p95_ms"]["stt"] is not None
    assert call["stages_p95_ms"]["end_to_end"] is not None
    assert isinstance(call["failures"], list) and call["ok"] == (not call["failures"])
    # The server ran in a process of its own: its CPU and the caller's are apart.
    assert report["server_cpu_percent"] > 10
    assert 0 < report["clients_cpu_percent"] < report["server_cpu_percent"]
    assert report["server"]["rss_mb"] > 100 and report["server"]["threads"] > 1
    assert report["other_cpu_percent"] >= 0 and report["stolen_cpu_percent"] >= 0
    assert report["server"]["children"] >= 0  # a pocketsphinx worker per call, if it is the STT
    printed = capsys.readouterr().out
    assert "server stage p95" in printed and "img_fps" in printed and "capacity: " in printed
    # Saved for this machine and this avatar (256x256): a server with them uses it.
    small = load_settings(overrides={"avatar": {"width": "256", "height": "256"}}, environ={})
    limit, why = resolve_max_sessions(small, saved)
    assert limit == max(1, result["capacity"]) and str(saved) in why and "measured" in why
    assert result["saved"]["key"]["width"] == 256


@pytest.mark.slow
def test_bench_cycles_reads_the_server_after_each_checkpoint(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cycles.json"
    code = main(["bench", "cycles", "--cycles", "3", "--json", str(out), *SMALL])
    report = json.loads(out.read_text())
    summary = report["summary"]
    assert summary["cycles"] == 3 and summary["failed"] == 0, summary["errors"]
    assert code == (0 if summary["rss_stopped_growing"] else 1)
    assert [r["cycles"] for r in report["readings"]] == [0, 1, 3]
    for reading in report["readings"]:
        assert reading["rss_mb"] > 50 and reading["threads"] > 1 and reading["fds"] > 3
        assert sum(reading["thread_names"].values()) == reading["threads"]
        assert reading["children"] >= 0 and reading["children_rss_mb"] >= 0
    # Finished calls leave no fds behind, nor a thread per call (pools started by the first
    # calls may still grow by a thread or two up to their cap).
    first, last = report["readings"][1], report["readings"][-1]
    assert last["threads"] <= first["threads"] + 2, report["readings"]
    assert last["fds"] <= first["fds"], report["readings"]
    for cycle in report["per_cycle"]:
        assert cycle["first_media_s"] < 10 and cycle["teardown_s"] is not None
    assert {"rss_growth_mb", "threads_left", "fds_left", "children_left"} <= set(summary)
    assert "rss_mb" in capsys.readouterr().out
