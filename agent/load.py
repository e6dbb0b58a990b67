"""`visage bench load`: many callers at once, and the most calls this machine holds.

N aiortc callers (:class:`LoadClient`, an ``AvatarClient``) call the server together.
Each waits for the greeting, then asks spoken questions (:data:`LOAD_QUESTIONS`,
synthesised by espeak-ng) until ``seconds`` have passed, always at least one; a reply
still playing then is not waited for. Per call it reports:

- **fps**: complete video frames (their RTP marker packet arrived) per second; **img
  fps**: newly drawn images per second on the server (the degradation ladder's half rate
  repeats images); **low fps**: the worst 2-second window.
- **audio**: RTP packets per second, the share of real time they carry, and the longest
  gap between two packets.
- **end-to-end**: the caller's speech ended -> the first loud reply audio arrived.
- the server's stage p95s for the call (``GET /api/calls/{pc_id}``).

Callers must cost little, or they take the CPU the server is measured on: video is never
decoded (frames are counted where aiortc would assemble them, from RTP packets), only
the audio is, for its loudness. Without ``--url`` the server runs as a child process
(``visage serve``), so its CPU time and the callers' are measured apart.

A call passes when it gets :data:`MIN_FPS` frames a second, real-time audio
(:data:`MIN_AUDIO_REALTIME` of it, no gap over :data:`MAX_AUDIO_GAP_MS`), an answer to
every question, and an end-to-end p95 within ``budgets.end_to_end`` (the user stopped
speaking -> the reply's first audio was sent, as that budget is defined: the server's
figure). The degradation ladder may draw fewer new images meanwhile (that is its job:
"img fps" and "quality" show it). Other stages over their budgets, and the end-to-end
time heard at the caller, are listed, and fail the call only with ``strict`` (on a
2-core machine ``vad_stop`` and ``stt`` already sit at their budgets with one call).
``find_capacity`` doubles N while every call passes, then bisects: the capacity is the
largest N that passed.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import math
import os
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from agent.client import CLIENT_AUDIO_PREFETCH, AvatarClient, Received
from agent.config import Settings
from agent.profile import LOUD, REPLY_SILENCE_S, speech_pcm
from agent.served import (
    ProcessFigures,
    ServerProcess,
    machine_cpu_seconds,
    own_cpu_seconds,
    server_process,
    wait_for_sessions,
)
from pipelines import compat
from pipelines.latency import STAGES

#: Questions the embedded setup takes as finished at once: smart-turn holds some flat
#: espeak-ng questions ("What can you do?") for ``vad.turn_max_silence_secs``, which
#: would measure that setting rather than the load.
LOAD_QUESTIONS = (
    "Who are you?",
    "How does this work?",
    "Tell me a joke.",
    "What is Visage?",
    "How fast are you?",
    "Are you running offline?",
)
MIN_FPS = 24.0
MIN_AUDIO_REALTIME = 0.95
MAX_AUDIO_GAP_MS = 200.0
LOW_FPS_WINDOW_S = 2.0
AUDIO_CLOCK_RATE = 48_000  # Opus RTP clock
CONNECT_TIMEOUT_S = 20.0
GREETING_TIMEOUT_S = 25.0
TURN_TIMEOUT_S = 25.0
PAUSE_S = 0.6  # between a reply's end and the next question
STAGGER_S = 0.4  # between two callers' first questions (at most 3 s in all)
SETTLE_TIMEOUT_S = 30.0  # for the server to end every call between two runs
POLL_S = 0.05

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class MediaLog:
    """When each received RTP packet arrived, noted where the receiver buffers it."""

    def __init__(self) -> None:
        self.audio: list[tuple[float, int]] = []  # (arrival, RTP timestamp)
        self.frames: list[float] = []  # arrival of each video frame's marker packet
        self.video_packets = 0
        self._frame_stamps: set[int] = set()

    def note_audio(self, packet: RtpPacket) -> None:
        """One audio packet arrived."""
        self.audio.append((time.monotonic(), packet.timestamp))

    def note_video(self, packet: RtpPacket) -> None:
        """One video packet arrived; its frame is complete with the marker packet (a
        retransmitted one is not counted twice)."""
        self.video_packets += 1
        if packet.marker and packet.timestamp not in self._frame_stamps:
            self._frame_stamps.add(packet.timestamp)
            self.frames.append(time.monotonic())


class NotingAudioBuffer(JitterBuffer):
    """aiortc's audio jitter buffer, noting each packet's arrival."""

    def __init__(self, log: MediaLog, capacity: int) -> None:
        super().__init__(capacity, prefetch=CLIENT_AUDIO_PREFETCH)
        self._log = log

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Note the packet, then buffer it as aiortc does."""
        self._log.note_audio(packet)
        return super().add(packet)


class CountingVideoBuffer(JitterBuffer):
    """Notes each video packet and releases no frame: nothing is decoded."""

    def __init__(self, log: MediaLog, capacity: int) -> None:
        super().__init__(capacity, is_video=True)
        self._log = log

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """Note the packet; keep nothing."""
        self._log.note_video(packet)
        return False, None


class Loudness:
    """Which received audio pieces were loud (RMS over :data:`~agent.profile.LOUD`), kept
    up to date cheaply: each piece is looked at once, then dropped from ``received``."""

    def __init__(self, received: Received) -> None:
        self._received = received
        self.latest = 0.0  # arrival of the newest piece
        self.loud_at: list[float] = []  # arrivals of the loud pieces

    def update(self) -> None:
        """Look at the pieces that arrived since the last call."""
        items = self._received.audio
        count = len(items)
        for t, pcm, _rate, _sent in items[:count]:
            samples = pcm.astype(np.float32) / 32768.0
            if samples.size and math.sqrt(float(np.mean(samples**2))) >= LOUD:
                self.loud_at.append(t)
            self.latest = t
        del items[:count]  # the client only appends, on this event loop

    def onset_after(self, t: float) -> float | None:
        """The first loud piece that arrived after ``t``."""
        i = bisect.bisect_right(self.loud_at, t)
        return self.loud_at[i] if i < len(self.loud_at) else None

    def quiet_since(self, t: float) -> float:
        """Seconds of received audio without a loud piece, after ``t``."""
        last = self.loud_at[-1] if self.loud_at and self.loud_at[-1] > t else t
        return self.latest - last


class LoadClient(AvatarClient):
    """An :class:`~agent.client.AvatarClient` that counts video instead of decoding it."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        self.media = MediaLog()
        self.loudness = Loudness(self.received)
        pc = self._pc

        # Runs after AvatarClient's own handler, so these buffers are the ones kept.
        @pc.on("track")
        def _count(track: Any) -> None:
            if track.kind == "audio":
                compat.replace_jitter_buffers(
                    pc, "audio", lambda old: NotingAudioBuffer(self.media, old.capacity)
                )
            else:
                compat.replace_jitter_buffers(
                    pc, "video", lambda old: CountingVideoBuffer(self.media, old.capacity)
                )

    async def reply(
        self, after: float, timeout_s: float, cut_at: float = math.inf
    ) -> tuple[float | None, float | None]:
        """Wait for the reply after ``after`` to start and end: (onset, end), None for a
        part that did not come within ``timeout_s``; a reply still going at ``cut_at``
        (monotonic) is not waited for once it has started (its end is None)."""
        deadline = time.monotonic() + timeout_s
        onset = None
        while time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            self.loudness.update()
            if onset is None:
                onset = self.loudness.onset_after(after)
            if onset is not None and time.monotonic() >= cut_at:
                return onset, None
            if onset is not None and self.loudness.quiet_since(onset) >= REPLY_SILENCE_S:
                end = self.loudness.loud_at[-1] if self.loudness.loud_at else onset
                return onset, end
        return onset, None


@dataclass
class Turn:
    """One question and its reply, on the monotonic clock."""

    question: str
    speech_end: float
    reply_onset: float | None = None
    reply_end: float | None = None

    @property
    def end_to_end_ms(self) -> float | None:
        """The caller's speech ended -> the first loud reply audio arrived."""
        if self.reply_onset is None:
            return None
        return round((self.reply_onset - self.speech_end) * 1000, 1)


@dataclass
class Call:
    """One caller of a load run."""

    index: int
    client: LoadClient | None = None
    error: str | None = None
    greeted: bool = False
    turns: list[Turn] = field(default_factory=list)
    server_start: dict[str, Any] = field(default_factory=dict)
    server_end: dict[str, Any] = field(default_factory=dict)


async def _connect(call: Call, base: str, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    client = LoadClient(base)
    call.client = client
    try:
        await client.connect(CONNECT_TIMEOUT_S)
    except Exception as exc:
        call.error = f"could not connect: {exc}"
        return
    _onset, end = await client.reply(time.monotonic() - 1.0, GREETING_TIMEOUT_S)
    call.greeted = end is not None


async def _converse(call: Call, until: float, delay_s: float) -> None:
    """Ask questions until ``until`` (at least one), each after the last reply ended;
    once ``until`` has passed, a reply that has started is not waited for."""
    client = call.client
    assert client is not None
    await asyncio.sleep(delay_s)
    while not call.turns or time.monotonic() < until:
        question = LOAD_QUESTIONS[(call.index + len(call.turns)) % len(LOAD_QUESTIONS)]
        pcm, speech_s = speech_pcm(question)
        turn = Turn(question, client.mic.say(pcm, 16000) + speech_s)
        call.turns.append(turn)
        turn.reply_onset, turn.reply_end = await client.reply(
            turn.speech_end, TURN_TIMEOUT_S, cut_at=until
        )
        if turn.reply_end is None:
            break  # cut at the end, or no reply (or one that never ends): stop asking
        await asyncio.sleep(PAUSE_S)


async def _server_call(http: httpx.AsyncClient, base: str, call: Call) -> dict[str, Any]:
    """The server's figures for this call (``GET /api/calls/{pc_id}``); {} if none."""
    if call.client is None or call.client.pc_id is None:
        return {}
    with contextlib.suppress(httpx.HTTPError, ValueError):
        # pipecat's pc_ids hold a '#', which would end a URL's path unquoted.
        pc_id = urllib.parse.quote(call.client.pc_id, safe="")
        response = await http.get(f"{base}/api/calls/{pc_id}")
        if response.status_code == 200:
            return dict(response.json())
    return {}


def _p(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def media_figures(media: MediaLog, t0: float, t1: float) -> dict[str, Any]:
    """Delivered video and audio of one call in the window [t0, t1]."""
    span = max(t1 - t0, 1e-6)
    frames = np.array([t for t in media.frames if t0 <= t <= t1])
    lows = [
        float(((frames >= s) & (frames < s + LOW_FPS_WINDOW_S)).sum()) / LOW_FPS_WINDOW_S
        for s in np.arange(t0, max(t1 - LOW_FPS_WINDOW_S, t0) + 1e-9, 0.5)
    ]
    audio = [(t, ts) for t, ts in media.audio if t0 <= t <= t1]
    steps = [(b - a) % 2**32 for (_, a), (_, b) in itertools.pairwise(audio)]
    steps = [s for s in steps if 0 < s < AUDIO_CLOCK_RATE]  # not across a reordering
    packet_s = float(np.median(steps)) / AUDIO_CLOCK_RATE if steps else 0.02
    arrivals = [t0, *(t for t, _ in audio), t1]
    gap = max(b - a for a, b in itertools.pairwise(arrivals))
    return {
        "fps": round(len(frames) / span, 2),
        "fps_low": round(min(lows), 2) if lows else 0.0,
        "frames": len(frames),
        "audio_packets_per_s": round(len(audio) / span, 2),
        "audio_packet_ms": round(packet_s * 1000, 1),
        "audio_realtime": round(len(audio) * packet_s / span, 3),
        "audio_max_gap_ms": round(gap * 1000, 1),
    }


def server_figures(start: dict[str, Any], end: dict[str, Any], span: float) -> dict[str, Any]:
    """The server's view of one call: new images per second over the window, the
    quality rung at its end, its stage p95s over every turn."""
    video0, video1 = start.get("video", {}), end.get("video", {})
    stages: dict[str, list[float]] = {name: [] for name in STAGES}
    for turn in end.get("turns", []):
        for name, ms in turn.get("stages_ms", {}).items():
            if name in stages and ms is not None:
                stages[name].append(float(ms))
    drawn = video1.get("drawn", 0) - video0.get("drawn", 0)
    return {
        "image_fps": round(drawn / max(span, 1e-6), 2) if video1 else None,
        "quality": video1.get("quality"),
        "frames_repeated": video1.get("repeated", 0) - video0.get("repeated", 0),
        "frames_dropped": video1.get("dropped", 0) - video0.get("dropped", 0),
        "server_turns": len(end.get("turns", [])),
        "stages_p95_ms": {name: _p(values, 95) for name, values in stages.items()},
    }


def stages_over_budget(figures: dict[str, Any], budgets: dict[str, float]) -> list[str]:
    """The stages of a call whose p95 is over its budget: the server's, and the end-to-end
    time at the caller (which adds the network, its jitter buffer and the onset of the
    reply's sound to the server's ``end_to_end``) against ``budgets.end_to_end``."""
    over = [
        f"server {name} p95 {p95:.0f} ms > {budgets[name]:g}"
        for name, p95 in figures.get("stages_p95_ms", {}).items()
        if name != "end_to_end" and p95 is not None and p95 > budgets[name]
    ]
    heard = figures.get("end_to_end_p95_ms")
    if heard is not None and heard > budgets["end_to_end"]:
        over.append(f"end-to-end at the caller p95 {heard:.0f} ms > {budgets['end_to_end']:g}")
    return over


def judge(figures: dict[str, Any], budgets: dict[str, float], strict: bool = False) -> list[str]:
    """Why a call did not hold up (empty: it passed): fps, audio, unanswered questions,
    the end-to-end p95 against ``budgets.end_to_end`` as that budget is defined (until the
    reply is sent: the server's figure; the caller's where the server gave none); with
    ``strict``, every stage of :func:`stages_over_budget` too."""
    if figures.get("error"):
        return [figures["error"]]
    why = []
    if figures["fps"] < MIN_FPS:
        why.append(f"fps {figures['fps']:.1f} < {MIN_FPS:g}")
    if figures["audio_realtime"] < MIN_AUDIO_REALTIME:
        why.append(f"audio at {figures['audio_realtime']:.0%} of real time")
    if figures["audio_max_gap_ms"] > MAX_AUDIO_GAP_MS:
        why.append(f"audio gap {figures['audio_max_gap_ms']:.0f} ms > {MAX_AUDIO_GAP_MS:g}")
    if figures["replies"] < figures["questions"]:
        why.append(f"{figures['questions'] - figures['replies']} question(s) unanswered")
    sent = figures.get("stages_p95_ms", {}).get("end_to_end")
    e2e = sent if sent is not None else figures["end_to_end_p95_ms"]
    if e2e is not None and e2e > budgets["end_to_end"]:
        why.append(f"end-to-end p95 {e2e:.0f} ms > {budgets['end_to_end']:g}")
    if strict:
        over = stages_over_budget(figures, budgets)
        why += over if sent is not None else [w for w in over if not w.startswith("end-to-end")]
    return why


def call_figures(
    call: Call, t0: float, t1: float, budgets: dict[str, float], strict: bool = False
) -> dict[str, Any]:
    """Everything measured for one call, with its verdict."""
    figures: dict[str, Any] = {"call": call.index + 1, "error": call.error}
    if call.client is not None and call.error is None:
        e2e = [ms for turn in call.turns if (ms := turn.end_to_end_ms) is not None]
        figures |= {
            "pc_id": call.client.pc_id,
            "greeted": call.greeted,
            **media_figures(call.client.media, t0, t1),
            "questions": len(call.turns),
            "replies": len(e2e),
            "end_to_end_ms": e2e,
            "end_to_end_p50_ms": _p(e2e, 50),
            "end_to_end_p95_ms": _p(e2e, 95),
            "end_to_end_max_ms": max(e2e) if e2e else None,
            **server_figures(call.server_start, call.server_end, t1 - t0),
        }
    figures["failures"] = judge(figures, budgets, strict)
    figures["over_budget"] = stages_over_budget(figures, budgets)
    figures["ok"] = not figures["failures"]
    return figures


@contextlib.asynccontextmanager
async def target_server(
    url: str | None, flags: list[str], max_sessions: int
) -> AsyncIterator[tuple[str, ServerProcess | None]]:
    """The server to load: ``url``, or ``visage serve`` started here with ``flags``."""
    if url:
        yield url.rstrip("/"), None
        return
    async with server_process(flags, max_sessions) as server:
        yield server.url, server


def _calls(n: int) -> str:
    return f"{n} call{'' if n == 1 else 's'}"


async def _ticker(label: str, calls: list[Call], until: float, log: Log) -> None:
    start = time.monotonic()
    while True:
        await asyncio.sleep(5.0)
        asked = sum(len(c.turns) for c in calls)
        answered = sum(t.reply_end is not None for c in calls for t in c.turns)
        left = max(0.0, until - time.monotonic())
        done = time.monotonic() - start
        log(f"{label}: {done:.0f} s, {asked} asked, {answered} answered, {left:.0f} s left to ask")


async def load_run(
    sessions: int,
    seconds: float,
    base: str,
    server: ServerProcess | None,
    settings: Settings,
    log: Log = _stderr,
    strict: bool = False,
) -> dict[str, Any]:
    """N callers at once against ``base``; the report (see the module's docstring)."""
    label = _calls(sessions)
    calls = [Call(i) for i in range(sessions)]
    budgets = settings.budgets.model_dump()
    load_before = os.getloadavg()
    log(f"{label}: connecting")
    stagger = min(STAGGER_S, 3.0 / sessions)
    try:
        await asyncio.gather(*(_connect(c, base, 0.1 * c.index) for c in calls))
        live = [c for c in calls if c.error is None]
        log(f"{label}: {len(live)} connected and greeted; asking questions for {seconds:g} s")
        async with httpx.AsyncClient(timeout=10.0) as http:
            for c in live:
                c.server_start = await _server_call(http, base, c)
            t0, cpu0, (busy0, steal0) = time.monotonic(), own_cpu_seconds(), machine_cpu_seconds()
            server_cpu0 = server.cpu_seconds() if server else None
            ticker = asyncio.create_task(_ticker(label, live, t0 + seconds, log))
            try:
                await asyncio.gather(*(_converse(c, t0 + seconds, stagger * c.index) for c in live))
            finally:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
            t1, cpu1, (busy1, steal1) = time.monotonic(), own_cpu_seconds(), machine_cpu_seconds()
            server_cpu1 = server.cpu_seconds() if server else None
            server_after = server.figures() if server else None
            for c in live:
                c.server_end = await _server_call(http, base, c)
    finally:
        await asyncio.gather(
            *(c.client.close() for c in calls if c.client is not None), return_exceptions=True
        )
    span = t1 - t0
    server_cpu = None if server_cpu0 is None or server_cpu1 is None else server_cpu1 - server_cpu0
    # What else ran on this machine meanwhile: other people's work skews the figures.
    others = busy1 - busy0 - (cpu1 - cpu0) - (server_cpu or 0.0)
    per_call = [call_figures(c, t0, t1, budgets, strict) for c in calls]
    report: dict[str, Any] = {
        "sessions": sessions,
        "seconds_measured": round(span, 1),
        "ok": all(f["ok"] for f in per_call),
        "per_session": per_call,
        "clients_cpu_percent": round(100 * (cpu1 - cpu0) / span, 1),
        "server_cpu_percent": None if server_cpu is None else round(100 * server_cpu / span, 1),
        "other_cpu_percent": round(100 * max(others, 0.0) / span, 1),
        "stolen_cpu_percent": round(100 * (steal1 - steal0) / span, 1),
        "server": server_after.as_dict() if isinstance(server_after, ProcessFigures) else None,
        "cores": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "criteria": {
            "min_fps": MIN_FPS,
            "min_audio_realtime": MIN_AUDIO_REALTIME,
            "max_audio_gap_ms": MAX_AUDIO_GAP_MS,
            "budgets_ms": budgets,
            "strict": strict,
        },
    }
    log(f"{label}: {'every call held up' if report['ok'] else 'some calls did not hold up'}")
    return report


async def settle(base: str, log: Log = _stderr) -> None:
    """Wait until the server has ended every call (between two runs)."""
    took = await wait_for_sessions(base, 0, SETTLE_TIMEOUT_S)
    if took is None:
        log(f"the server still runs calls {SETTLE_TIMEOUT_S:.0f} s after they hung up")
    await asyncio.sleep(1.0)


async def warm_up(base: str, log: Log = _stderr) -> None:
    """One call until a second into its greeting, then hung up: a server's first call
    loads and traces its models, which would count against the first run otherwise."""
    log("warm-up call (the first call loads the models)")
    client = LoadClient(base)
    try:
        await client.connect(CONNECT_TIMEOUT_S)
        onset, _end = await client.reply(time.monotonic() - 1.0, GREETING_TIMEOUT_S, cut_at=0.0)
        if onset is None:
            raise RuntimeError(f"no greeting within {GREETING_TIMEOUT_S:g} s")
        await asyncio.sleep(1.0)
    except Exception as exc:
        raise RuntimeError(f"the warm-up call failed: {exc}") from exc
    finally:
        await client.close()
    await settle(base, log)


async def bench_load(
    *,
    sessions: int,
    seconds: float,
    url: str | None,
    flags: list[str],
    settings: Settings,
    strict: bool = False,
    log: Log = _stderr,
) -> dict[str, Any]:
    """One load run (see :func:`load_run`) against ``url`` or a server started here."""
    async with target_server(url, flags, sessions) as (base, server):
        await warm_up(base, log)
        return await load_run(sessions, seconds, base, server, settings, log, strict)


async def search_capacity(
    passes: Callable[[int], Awaitable[bool]], most: int
) -> tuple[int, int | None]:
    """The largest N in 1..``most`` that ``passes``, assuming more calls never do better:
    N doubles from 1 while it passes (the last try is ``most``), then the gap between the
    last N that passed and the first that failed is bisected. Returns (capacity, the
    smallest N seen to fail or None); the capacity is 0 when even 1 call fails."""
    good, bad, n = 0, None, 1
    while n <= most:
        if not await passes(n):
            bad = n
            break
        good = n
        n = most if n < most < 2 * n else 2 * n
    while bad is not None and bad - good > 1:
        mid = (good + bad) // 2
        if await passes(mid):
            good = mid
        else:
            bad = mid
    return good, bad


async def find_capacity(
    *,
    seconds: float,
    url: str | None,
    flags: list[str],
    settings: Settings,
    most: int,
    strict: bool = False,
    log: Log = _stderr,
) -> dict[str, Any]:
    """The largest N up to ``most`` at which every call holds up: N doubles from 1 while
    all pass, then the gap to the first failure is bisected."""
    runs: dict[int, dict[str, Any]] = {}
    async with target_server(url, flags, most) as (base, server):
        await warm_up(base, log)

        async def passes(n: int) -> bool:
            runs[n] = await load_run(n, seconds, base, server, settings, log, strict)
            log(verdict_line(runs[n]))
            await settle(base, log)
            return bool(runs[n]["ok"])

        good, bad = await search_capacity(passes, most)
    return {
        "capacity": good,
        "first_failing": bad,
        "most_tried": most,
        "runs": [runs[n] for n in sorted(runs)],
    }


def verdict_line(run: dict[str, Any]) -> str:
    """One line: N, pass or fail and why, CPU."""
    failing = [f for f in run["per_session"] if not f["ok"]]
    why = "; ".join(f"call {f['call']}: {', '.join(f['failures'])}" for f in failing[:3])
    verdict = "holds" if run["ok"] else f"fails ({why})"
    server = run["server_cpu_percent"]
    cpu = f"server CPU {server:.0f}%, " if server is not None else ""
    return (
        f"N={run['sessions']}: {verdict}; {cpu}callers' CPU {run['clients_cpu_percent']:.0f}%, "
        f"other processes {run['other_cpu_percent']:.0f}%"
    )


def _cell(value: Any, spec: str = ".0f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def format_run(run: dict[str, Any]) -> str:
    """A load run as two tables (media per call, server stage p95s per call) and a line
    of CPU use and load."""
    media = [
        "call fps img_fps low_fps audio/s audio_rt max_gap_ms e2e_p50 e2e_p95 answered "
        "quality verdict".split()
    ]
    stages = [["call", *STAGES]]
    for f in run["per_session"]:
        if f.get("error"):
            media.append([str(f["call"]), *["-"] * 9, f"FAIL: {f['error']}"])
            continue
        media.append(
            [
                str(f["call"]),
                _cell(f["fps"], ".1f"),
                _cell(f["image_fps"], ".1f"),
                _cell(f["fps_low"], ".1f"),
                _cell(f["audio_packets_per_s"], ".1f"),
                _cell(f["audio_realtime"], ".0%"),
                _cell(f["audio_max_gap_ms"]),
                _cell(f["end_to_end_p50_ms"]),
                _cell(f["end_to_end_p95_ms"]),
                f"{f['replies']}/{f['questions']}",
                f'"{f["quality"]}"' if f["quality"] else "-",
                "ok" if f["ok"] else "FAIL: " + ", ".join(f["failures"]),
            ]
        )
        stages.append([str(f["call"]), *(_cell(f["stages_p95_ms"][s]) for s in STAGES)])
    server = run["server_cpu_percent"]
    lines = [f"{_calls(run['sessions'])} at once, {run['seconds_measured']} s measured:"]
    lines += _table(media)
    lines += ["", "server stage p95 (ms):", *_table(stages)]
    judged = "failing the call" if run["criteria"]["strict"] else "not judged without --strict"
    for f in run["per_session"]:
        if f.get("over_budget"):
            lines.append(f"call {f['call']} over budget ({judged}): {', '.join(f['over_budget'])}")
    lines.append("")
    figures = run.get("server")
    where = ""
    if server is not None:
        where = f"server CPU {server:.0f}% of a core (with its STT workers)"
        if figures:
            where += f", RSS {figures['rss_mb']:.0f} MB, {figures['threads']} threads"
        where += "; "
    lines.append(
        f"{where}callers' CPU {run['clients_cpu_percent']:.0f}% of a core; other processes "
        f"{run['other_cpu_percent']:.0f}%, stolen by the hypervisor "
        f"{run['stolen_cpu_percent']:.0f}%; {run['cores']} cores; load average "
        f"{run['load_avg_before'][0]:.2f} before, {run['load_avg_after'][0]:.2f} after"
    )
    return "\n".join(lines)


def format_capacity(result: dict[str, Any]) -> str:
    """Each N tried with its verdict, then the capacity."""
    lines = [verdict_line(run) for run in result["runs"]]
    line = f"capacity: {_calls(result['capacity'])} at once"
    if result["first_failing"] is None:
        line += f" (every N up to --most {result['most_tried']} held; raise it to go further)"
    else:
        line += f" ({result['first_failing']} did not hold)"
    return "\n".join([*lines, line])


def run_bench_load(**kwargs: Any) -> dict[str, Any]:
    """Blocking wrapper of :func:`bench_load` for the CLI."""
    return asyncio.run(bench_load(**kwargs))


def run_find_capacity(**kwargs: Any) -> dict[str, Any]:
    """Blocking wrapper of :func:`find_capacity` for the CLI."""
    return asyncio.run(find_capacity(**kwargs))
