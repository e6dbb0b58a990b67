"""`visage profile`: play the user over real WebRTC and time every turn from what arrives.

The profiler is an aiortc client (``agent.client.AvatarClient``). It speaks synthesised
questions with pauses, barges in on some replies, says a short "hmm" over others (a
backchannel, which must only pause the avatar), and records the received audio and video
with their arrival times. Figures about what the user experiences (end-to-end time, the
audio/video offset, how fast a barge-in silences the avatar and closes its mouth) are
measured from that received media: the audio's loudness and the mouth seen in the
frames. The per-stage times inside the server come from its own turn reports.

Without ``--url`` the server runs in a child process (``visage serve``), as a real one
runs apart from its callers: in one process, the caller's video decoding shared the
server's event loop and added tens of milliseconds to every figure.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from agent.client import AvatarClient, Received
from agent.config import Settings
from pipelines.latency import STAGES
from renderer.config import AvatarSettings

QUESTIONS = (
    "Hello, who are you?",
    "What can you do?",
    "Are you running offline?",
    "How does this work?",
    "Tell me a joke.",
    "What is Visage?",
)
#: Voices the profiler speaks as the caller with. Piper's is the default: smart-turn
#: judges espeak-ng's flat prosody unfinished far more often than a person's (0.13 for
#: "What can you do?", 0.96 for "I was wondering if"), so with espeak-ng a third of the
#: turns wait out vad.turn_max_silence_secs, which no person would see.
USER_VOICES = ("piper", "espeak")
BARGE_IN = "Wait, stop please."
BACKCHANNEL = "hmm"  # VAD hears it; too short to interrupt, so the reply must resume
BARGE_IN_EVERY = 5  # turns 2, 7, 12, ... barge in; turns 1, 6, 11, ... say the backchannel
LOUD = 0.02  # RMS (full scale 1.0) above which received audio counts as speech
ENVELOPE_HZ = 100
REPLY_SILENCE_S = 0.8  # a reply has ended after this much quiet
RESUME_WAIT_S = 3.0  # a reply paused by a "hmm" that has not resumed by then never will
TURN_TIMEOUT_S = 25.0
MOUTH_CLOSED = 0.1  # estimated jawOpen at or below which the mouth counts as closed
DARK_LUMA = 80  # a pixel darker than this (of 255) is the mouth's inside


class MouthMeter:
    """Estimates jawOpen from received pixels: how much of the mouth's inside is dark.

    The mouth's inside and the darkness-to-jawOpen table come from drawing the session's
    own face (the face drawer the settings name, at the session's size) with the jaw at
    several openings, so nothing here trusts the server's claims about what it drew. Only
    the pixels an open mouth darkens are read (widened by a margin for the head's motion):
    a box around the mouth also holds hair, collars and shadows, which a turn of the head
    of two degrees moves into it and a closed mouth would read as open.
    """

    def __init__(self, avatar: AvatarSettings) -> None:
        from scipy import ndimage

        from renderer.frames import build_drawer
        from renderer.motion.space import IDX, neutral_motion

        width = avatar.width
        face = build_drawer(avatar.model_copy(update={"device": "cpu"}))
        levels = np.linspace(0.0, 1.0, 11)
        frames = []
        for level in levels:
            motion = neutral_motion()
            motion[IDX["jawOpen"]] = level
            frames.append(face.render(motion))
        inside = (_luma(frames[-1]) < DARK_LUMA) & (_luma(frames[0]) >= DARK_LUMA)
        if inside.sum() < 20:
            raise ValueError(f"face drawer {avatar.face!r} draws no visible mouth opening")
        # The head moves the mouth a few pixels; the margin keeps it inside the mask.
        self.mask = ndimage.binary_dilation(inside, iterations=max(2, width // 100))
        darkness = np.maximum.accumulate(np.array([self._darkness(f) for f in frames]))
        # Darkness grows with the opening, but not at first (the lips hide a small one):
        # a plateau maps to its lowest opening, so a closed mouth that moves a pixel (a
        # smile, a nod) does not read as the top of the plateau.
        rises = np.r_[True, np.diff(darkness) > 0]
        self._darkness_table = darkness[rises]
        self._levels = levels[rises]
        # Openings up to the plateau's top show no more dark pixels than a closed mouth:
        # to the viewer (and to this meter) the mouth is closed up to there.
        self.closed_level = float(levels[~rises].max()) if (~rises).any() else MOUTH_CLOSED
        self.closed_level = max(self.closed_level, MOUTH_CLOSED)

    def _darkness(self, rgb: np.ndarray) -> float:
        return float((_luma(rgb)[self.mask] < DARK_LUMA).mean())

    def __call__(self, rgb: np.ndarray) -> float:
        """Estimated jawOpen in [0, 1] for one received frame."""
        return float(np.interp(self._darkness(rgb), self._darkness_table, self._levels))


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32).mean(axis=2)


@dataclass
class TurnResult:
    """What the client measured for one turn."""

    question: str
    speech_end: float
    kind: str = "ask"  # "ask", "barge_in" or "backchannel"
    reply_onset: float | None = None
    reply_end: float | None = None
    av_offset_ms: float | None = None
    barge_onset: float | None = None  # onset of the barge-in or the backchannel
    backchannel_end: float | None = None
    pause_ms: float | None = None  # backchannel: the reply's audio quiet, until it resumed
    av_offset_after_resume_ms: float | None = None  # backchannel: lip sync once resumed
    # The same segments' offsets by arrival time, as a player without lip sync shows them.
    av_offsets_arrival_ms: list[float] = field(default_factory=list)
    server_interrupted: bool | None = None  # the server's record of the barge-in decision
    audio_stop_ms: float | None = None
    mouth_close_ms: float | None = None
    decision_ms: float | None = None  # barge-in onset -> the server halted the reply
    audio_after_stop_ms: float = 0.0
    wall_speech_end: float | None = None  # the same instant on the wall clock
    wall_barge_onset: float | None = None

    @property
    def barge_in(self) -> bool:
        """The profiler talked over this turn's reply to interrupt it."""
        return self.kind == "barge_in"

    @property
    def end_to_end_ms(self) -> float | None:
        """User's speech end -> first loud reply audio at the client."""
        if self.reply_onset is None:
            return None
        return (self.reply_onset - self.speech_end) * 1000


def _arrival(item: tuple[Any, ...]) -> float:
    return float(item[0])


@dataclass
class Timeline:
    """Received media as even-rate series: audio loudness and estimated jawOpen."""

    start: float
    audio: np.ndarray  # (N,) RMS per 10 ms by arrival time
    mouth_t: np.ndarray  # (M,) arrival times of video frames
    mouth: np.ndarray  # (M,) estimated jawOpen per frame
    pts: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,) video pts, s
    mouth_closed: float = MOUTH_CLOSED  # estimates at or below this count as a closed mouth
    # When each frame and each received audio piece was sent (the sender's wall clock, NaN
    # where unknown), and when the audio arrived: what a receiver needs for lip sync.
    mouth_sent: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (M,)
    audio_arrived: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,)
    audio_sent: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (K,)

    @classmethod
    def from_received(cls, received: Received, start: float) -> Timeline:
        """Bin audio into 10 ms loudness by arrival time; keep per-frame mouth values.

        Media is appended in arrival order, so only what arrived after ``start`` is read:
        the profiler polls recent audio while the server shares its event loop.
        """
        audio_items = received.audio[bisect.bisect_left(received.audio, start, key=_arrival) :]
        end = max(audio_items[-1][0] if audio_items else start, start + 0.01)
        bins = int((end - start) * ENVELOPE_HZ) + 1
        energy, count = np.zeros(bins), np.zeros(bins)
        for t, pcm, _rate, _sent in audio_items:
            i = int((t - start) * ENVELOPE_HZ)
            samples = pcm.astype(np.float32) / 32768.0
            energy[i] += float(np.mean(samples**2))
            count[i] += 1
        audio = np.sqrt(energy / np.maximum(count, 1))
        video_items = received.video[bisect.bisect_left(received.video, start, key=_arrival) :]
        video = [(t, pts, v, sent) for t, pts, _, v, sent in video_items if v is not None]
        return cls(
            start=start,
            audio=audio,
            mouth_t=np.array([t for t, _, _, _ in video]),
            mouth=np.array([v for _, _, v, _ in video]),
            pts=np.array([pts for _, pts, _, _ in video]),
            mouth_sent=np.array([np.nan if sent is None else sent for *_, sent in video]),
            audio_arrived=np.array([t for t, *_ in audio_items]),
            audio_sent=np.array([np.nan if sent is None else sent for *_, sent in audio_items]),
        )

    @property
    def has_send_times(self) -> bool:
        """True when frames and audio carry send times (so A/V can be lip-synced)."""
        return bool(np.isfinite(self.mouth_sent).any() and np.isfinite(self.audio_sent).any())

    def shown_mouth_t(self, t0: float, t1: float, lip_sync: bool = True) -> np.ndarray:
        """When each frame is shown, judged from the audio in [t0, t1]: with ``lip_sync``,
        as a lip-syncing receiver shows it; otherwise (or without send times) on arrival.

        A browser plays audio out of its jitter buffer and holds each video frame until
        the audio sent at the same moment plays (it knows both send times from the
        sender's RTCP reports): here, a frame is shown at its send time plus the audio's
        median delay from send to arrival, or when it arrived if that is later.
        """
        inside = (self.audio_arrived >= t0) & (self.audio_arrived <= t1)
        delays = (self.audio_arrived - self.audio_sent)[inside]
        delays = delays[np.isfinite(delays)]
        if not lip_sync or delays.size == 0 or self.mouth_sent.size != self.mouth_t.size:
            return self.mouth_t
        shown = self.mouth_sent + float(np.median(delays))
        return np.where(np.isfinite(shown), np.maximum(shown, self.mouth_t), self.mouth_t)

    def time_of(self, index: int) -> float:
        """Arrival time of a 10 ms audio bin."""
        return self.start + index / ENVELOPE_HZ

    def index_of(self, t: float) -> int:
        """The 10 ms audio bin holding time ``t``."""
        # The epsilon keeps index_of(time_of(i)) == i despite float rounding.
        return max(0, int((t - self.start) * ENVELOPE_HZ + 1e-6))

    def onset_after(self, t: float, until: float) -> float | None:
        """First loud audio after ``t`` (and before ``until``)."""
        lo, hi = self.index_of(t), min(self.index_of(until), len(self.audio))
        loud = np.nonzero(self.audio[lo:hi] >= LOUD)[0]
        return self.time_of(lo + int(loud[0])) if loud.size else None

    def quiet_from(self, t: float, quiet_s: float) -> float | None:
        """Start of the first stretch of ``quiet_s`` seconds without loud audio after ``t``."""
        lo, need = self.index_of(t), int(quiet_s * ENVELOPE_HZ)
        run = 0
        for i in range(lo, len(self.audio)):
            run = run + 1 if self.audio[i] < LOUD else 0
            if run >= need:
                return self.time_of(i - need + 1)
        return None

    def loud_seconds(self, t0: float, t1: float) -> float:
        """Seconds of loud audio between two times."""
        lo, hi = self.index_of(t0), min(self.index_of(t1), len(self.audio))
        return float((self.audio[lo:hi] >= LOUD).sum()) / ENVELOPE_HZ

    def mouth_closed_from(
        self, t: float, hold_s: float = 0.2, *, lip_sync: bool = True
    ) -> float | None:
        """First time after ``t`` the mouth is seen closed and stays closed for ``hold_s``;
        with ``lip_sync``, seen when a lip-syncing receiver shows the frames (see
        :meth:`shown_mouth_t`)."""
        mouth_t = self.shown_mouth_t(t - 2.0, t + 2.0, lip_sync)
        for i in np.nonzero(mouth_t >= t)[0]:
            if self.mouth[i] > self.mouth_closed:
                continue
            window = (mouth_t >= mouth_t[i]) & (mouth_t <= mouth_t[i] + hold_s)
            if np.all(self.mouth[window] <= self.mouth_closed):
                return float(mouth_t[i])
        return None

    def av_offset_ms(
        self, t0: float, t1: float, max_lag_s: float = 0.3, *, lip_sync: bool = True
    ) -> float | None:
        """Lag of mouth motion behind the audio envelope in [t0, t1] (positive: video late).

        With ``lip_sync``, frames are placed where a lip-syncing receiver (a browser) shows
        them; without it, or without send times, where they arrived (:meth:`shown_mouth_t`).
        """
        grid = np.arange(t0, t1, 1 / ENVELOPE_HZ)
        if grid.size < 50 or self.mouth_t.size < 10:
            return None
        audio = self.audio[[min(self.index_of(t), len(self.audio) - 1) for t in grid]]
        mouth_t = self.shown_mouth_t(t0, t1, lip_sync)
        order = np.argsort(mouth_t, kind="stable")
        mouth = np.interp(grid, mouth_t[order], self.mouth[order])
        audio, mouth = audio - audio.mean(), mouth - mouth.mean()
        if audio.std() == 0 or mouth.std() == 0:
            return None
        lags = range(-int(max_lag_s * ENVELOPE_HZ), int(max_lag_s * ENVELOPE_HZ) + 1)

        def corr(lag: int) -> float:
            a = audio[max(0, -lag) : len(audio) - max(0, lag)]
            m = mouth[max(0, lag) : len(mouth) - max(0, -lag)]
            return float(np.dot(a, m))

        best = max(lags, key=corr)
        return best * 1000 / ENVELOPE_HZ


def speech_pcm(text: str, voice: str = "espeak") -> tuple[np.ndarray, float]:
    """16 kHz int16 speech for ``text`` in a caller's ``voice`` (see ``USER_VOICES``) and
    where its last audible sample is (seconds)."""
    import soxr

    if voice == "piper":
        from speech.piper import PiperEngine

        samples, rate = PiperEngine().synthesize(text)
    elif voice == "espeak":
        from speech.espeak import synthesize

        samples, rate = synthesize(text, voice="en-us", rate=165, pitch=50)
    else:
        raise ValueError(f"unknown caller voice {voice!r}; choose from {', '.join(USER_VOICES)}")
    pcm = soxr.resample(samples, rate, 16000)
    loud = np.nonzero(np.abs(pcm) > 500)[0]
    return pcm, (loud[-1] + 1) / 16000 if loud.size else 0.0


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    arr = np.array(values, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 1),
        "p95_ms": round(float(np.percentile(arr, 95)), 1),
        "max_ms": round(float(arr.max()), 1),
    }


def _trend_per_min(points: list[tuple[float, float | None]]) -> float | None:
    """Least-squares slope of (seconds, ms) points in ms per minute; None under 3 points."""
    xy = np.array([(t, v) for t, v in points if v is not None], dtype=np.float64)
    if len(xy) < 3 or np.ptp(xy[:, 0]) == 0:
        return None
    slope = np.polyfit(xy[:, 0], xy[:, 1], 1)[0]
    return round(float(slope) * 60.0, 2)


@contextlib.asynccontextmanager
async def _target(url: str | None, server_flags: Sequence[str]) -> AsyncIterator[str]:
    """The server to profile: the given URL, or ``visage serve`` started with these
    ``--config``/``--set`` flags in a child process."""
    if url:
        yield url.rstrip("/")
        return
    from agent.served import server_process

    async with server_process(server_flags, max_sessions=1) as server:
        yield server.url


async def _wait_reply(client: AvatarClient, after: float, settings_timeout: float) -> None:
    """Wait until a reply has started after ``after`` and then gone quiet."""
    deadline = time.monotonic() + settings_timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        timeline = Timeline.from_received(client.received, after - 0.05)
        onset = timeline.onset_after(after, time.monotonic())
        if onset is not None and timeline.quiet_from(onset, REPLY_SILENCE_S) is not None:
            return


async def _wait_resumed_reply(client: AvatarClient, sound_onset: float, timeout_s: float) -> None:
    """After a sound over the reply: wait until the reply has halted, resumed and then gone
    quiet, or has not resumed within ``RESUME_WAIT_S`` (measured as such afterwards).

    Waiting only for quiet after the sound took the pause itself (about a second while VAD
    and the resume wait) for the reply's end whenever some reply audio was still on its
    way when the sound ended; the next question then came over the resumed reply.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = time.monotonic()
        timeline = Timeline.from_received(client.received, sound_onset - 0.05)
        halt = timeline.quiet_from(sound_onset, 0.2)
        if halt is None:
            continue
        resumed = timeline.onset_after(halt, now)
        if resumed is None:
            if now - halt > RESUME_WAIT_S:
                return
            continue
        if timeline.quiet_from(resumed, REPLY_SILENCE_S) is not None:
            return


def plan_turns(turns: int, barge_in_every: int = BARGE_IN_EVERY) -> list[str]:
    """Each turn's kind: a plain question, a barge-in, or a backchannel over the reply.

    With ``barge_in_every`` N, turns 2, 2+N, ... barge in and turns 1, 1+N, ... say a
    backchannel; 0 makes every turn a plain question.
    """
    if barge_in_every == 0:
        return ["ask"] * turns
    if barge_in_every < 2:
        raise ValueError("barge_in_every must be 0 or at least 2")
    kinds = {1: "backchannel", 2 % barge_in_every: "barge_in"}
    return [kinds.get(n % barge_in_every, "ask") for n in range(1, turns + 1)]


async def _reply_onset(client: AvatarClient, after: float) -> float | None:
    """Wait for the reply to a question to become audible; None if it never does."""
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        onset = Timeline.from_received(client.received, after - 0.05).onset_after(
            after, time.monotonic()
        )
        if onset is not None:
            return onset
    return None


def _talk_over(client: AvatarClient, text: str, voice: str) -> tuple[float, float]:
    """Say ``text`` now; (its first loud sample, its end) as send times."""
    pcm, length = speech_pcm(text, voice)
    loud = np.nonzero(np.abs(pcm) > 500)[0]
    at = client.mic.say(pcm, 16000)
    return at + (loud[0] / 16000 if loud.size else 0.0), at + length


async def _play_turn(client: AvatarClient, question: str, kind: str, voice: str) -> TurnResult:
    pcm, speech_len = speech_pcm(question, voice)
    begin = client.mic.say(pcm, 16000)
    result = TurnResult(question=question, speech_end=begin + speech_len, kind=kind)
    if kind == "ask":
        await _wait_reply(client, result.speech_end, TURN_TIMEOUT_S)
        return result
    # Let the reply play for a second, then talk over it.
    onset = await _reply_onset(client, result.speech_end)
    if onset is None:
        return result
    await asyncio.sleep(max(0.0, onset + 1.0 - time.monotonic()))
    if kind == "barge_in":
        result.barge_onset, barge_end = _talk_over(client, BARGE_IN, voice)
        # The barge-in is itself a turn; the avatar answers it after it ends.
        result.speech_end = barge_end
        await _wait_reply(client, result.speech_end, TURN_TIMEOUT_S)
    else:
        result.barge_onset, result.backchannel_end = _talk_over(client, BACKCHANNEL, voice)
        await _wait_resumed_reply(client, result.barge_onset, TURN_TIMEOUT_S)
    return result


def _measure_turns(turns: list[TurnResult], timeline: Timeline) -> None:
    for i, turn in enumerate(turns):
        until = (
            turns[i + 1].speech_end - 2.0
            if i + 1 < len(turns)
            else timeline.time_of(len(timeline.audio))
        )
        if turn.barge_in and turn.barge_onset is not None:
            stop = timeline.quiet_from(turn.barge_onset, 0.2)
            if stop is not None:
                turn.audio_stop_ms = max(0.0, (stop - turn.barge_onset) * 1000)
                # Anything loud from the stop until the avatar could answer the barge-in
                # (the end of the barge-in speech plus 0.3 s) is the interrupted reply.
                turn.audio_after_stop_ms = 1000 * timeline.loud_seconds(
                    stop + 0.2, turn.speech_end + 0.3
                )
            closed = timeline.mouth_closed_from(turn.barge_onset)
            if closed is not None:
                turn.mouth_close_ms = max(0.0, (closed - turn.barge_onset) * 1000)
        turn.reply_onset = timeline.onset_after(turn.speech_end, until)
        if turn.reply_onset is None:
            continue
        turn.reply_end = timeline.quiet_from(turn.reply_onset, REPLY_SILENCE_S) or until
        turn.av_offset_ms = _av_offset(turn, timeline, turn.reply_onset, turn.reply_end)
        if turn.kind == "backchannel" and turn.barge_onset is not None:
            _measure_backchannel(turn, timeline, until)


def _av_offset(turn: TurnResult, timeline: Timeline, t0: float, t1: float) -> float | None:
    """Lip-synced A/V offset of a stretch of the reply; notes the arrival-time one too."""
    arrival = timeline.av_offset_ms(t0, t1, lip_sync=False)
    if arrival is not None:
        turn.av_offsets_arrival_ms.append(arrival)
    return timeline.av_offset_ms(t0, t1)


def _measure_backchannel(turn: TurnResult, timeline: Timeline, until: float) -> None:
    """The reply halts after the sound's onset and carries on once the sound has ended.

    Lip sync is measured on each side of the pause (the pause itself is quiet audio over
    a relaxing mouth, which says nothing about sync).
    """
    assert turn.barge_onset is not None and turn.reply_onset is not None
    halt = timeline.quiet_from(turn.barge_onset, 0.2)
    if halt is None or halt > turn.barge_onset + 1.0:
        return
    turn.av_offsets_arrival_ms.clear()  # the whole reply's estimate mixed in the pause
    turn.av_offset_ms = _av_offset(turn, timeline, turn.reply_onset, halt)
    resumed = timeline.onset_after(halt, min(until, halt + RESUME_WAIT_S))
    if resumed is None:
        return
    turn.pause_ms = (resumed - halt) * 1000
    end = timeline.quiet_from(resumed, REPLY_SILENCE_S) or until
    turn.av_offset_after_resume_ms = _av_offset(turn, timeline, resumed, end)


def _video_figures(timeline: Timeline, fps: int) -> dict[str, float]:
    t, pts = timeline.mouth_t, timeline.pts
    if t.size < 2:
        return {"fps_delivered": 0.0, "frames_dropped": 0, "pts_drift_ms": 0.0}
    # Frames are stamped with their send time: the frames missing from the fps over the
    # call (a stall, or the phase the avatar's clock gives up when a reply starts).
    expected = (pts[-1] - pts[0]) * fps + 1
    dropped = max(0, round(expected - pts.size))
    # Drift: how far the pts clock and the arrival clock drifted apart over the session.
    half = t.size // 2
    offset_start = float(np.median(t[:half] - pts[:half]))
    offset_end = float(np.median(t[half:] - pts[half:]))
    return {
        "fps_delivered": round((t.size - 1) / (t[-1] - t[0]), 2),
        "frames_dropped": dropped,
        "pts_drift_ms": round((offset_end - offset_start) * 1000, 1),
    }


async def _server_session(base: str, pc_id: str | None) -> dict[str, Any]:
    """This call's figures from the server (stage timings per turn, barge-ins)."""
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{base}/api/calls/{quote(str(pc_id), safe='')}")
        described = [response.json()] if response.status_code == 200 else []
    for session in described:
        if session["pc_id"] == pc_id:
            return dict(session)
    return {}


def _match_decisions(results: list[TurnResult], barge_ins: list[dict[str, Any]]) -> None:
    """Barge-in onset (client) -> the server's decision to halt the reply (its VAD start).

    Both are wall-clock instants, so with ``--url`` on another machine the figure is only
    as good as the two clocks' agreement.
    """
    for result in results:
        if result.barge_onset is None or result.wall_barge_onset is None:
            continue
        after = [
            b
            for b in barge_ins
            if result.wall_barge_onset - 0.1 <= b["decided"] <= result.wall_barge_onset + 3.0
        ]
        if after:
            first = min(after, key=lambda b: b["decided"])
            result.decision_ms = max(0.0, (first["decided"] - result.wall_barge_onset) * 1000)
            result.server_interrupted = first["interrupted"] is not None


async def profile(
    *,
    turns: int,
    url: str | None,
    settings: Settings,
    barge_in_every: int = BARGE_IN_EVERY,
    user_voice: str = USER_VOICES[0],
    server_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the profiling call; return the report (see ``visage profile --help``).
    ``settings`` must be what ``server_flags`` give the server it starts (no ``url``)."""
    speech_pcm("hello", user_voice)  # load the caller's voice before the call starts
    meter = MouthMeter(settings.avatar)
    async with _target(url, server_flags) as base:
        client = AvatarClient(base, video_probe=meter)
        try:
            await client.connect()
            start = time.monotonic()
            await _wait_reply(client, start, TURN_TIMEOUT_S)  # the greeting
            results = []
            for i, kind in enumerate(plan_turns(turns, barge_in_every)):
                await asyncio.sleep(0.6)
                question = QUESTIONS[i % len(QUESTIONS)]
                results.append(await _play_turn(client, question, kind, user_voice))
            await asyncio.sleep(0.5)
            session = await _server_session(base, client.pc_id)
        finally:
            await client.close()
    timeline = Timeline.from_received(client.received, start)
    timeline.mouth_closed = meter.closed_level
    _measure_turns(results, timeline)
    wall_offset = time.time() - time.monotonic()
    for result in results:
        result.wall_speech_end = result.speech_end + wall_offset
        if result.barge_onset is not None:
            result.wall_barge_onset = result.barge_onset + wall_offset
    _match_decisions(results, session.get("barge_ins", []))
    report = build_report(results, session.get("turns", []), timeline, settings)
    report["user_voice"] = user_voice
    report["reply_audio_gaps"] = session.get("audio", {})
    return report


def _server_turn_for(result: TurnResult, server_turns: list[dict[str, Any]]) -> dict | None:
    """The server's report of the same turn: the one whose speech ended closest in time."""
    if not server_turns or result.wall_speech_end is None:
        return None
    best = min(server_turns, key=lambda t: abs(t["speech_end"] - result.wall_speech_end))
    return best if abs(best["speech_end"] - result.wall_speech_end) < 1.5 else None


def _end_to_end_parts(result: TurnResult, server: dict[str, Any] | None) -> dict[str, float]:
    """Where the caller's end-to-end time went: until the server placed the end of speech
    (VAD's lag), the server's own end-to-end, and from its send to the loud reply audio
    heard here (audio track, network, receive buffer, the reply's soft start)."""
    if server is None or result.wall_speech_end is None or result.end_to_end_ms is None:
        return {}
    served = server["stages_ms"].get("end_to_end")
    if served is None:
        return {}
    lag = (server["speech_end"] - result.wall_speech_end) * 1000
    return {
        "speech_end_detected": round(lag, 1),
        "server": round(served, 1),
        "delivery": round(result.end_to_end_ms - lag - served, 1),
    }


def build_report(
    results: list[TurnResult],
    server_turns: list[dict[str, Any]],
    timeline: Timeline,
    settings: Settings,
) -> dict[str, Any]:
    """Gather measured turns into the JSON report, with budget violations."""
    matched = [_server_turn_for(r, server_turns) for r in results]
    stages: dict[str, list[float]] = {name: [] for name in STAGES if name != "end_to_end"}
    for turn in server_turns:
        for name, ms in turn["stages_ms"].items():
            if name in stages:
                stages[name].append(ms)
    end_to_end = [ms for r in results if (ms := r.end_to_end_ms) is not None]
    measured = [(r.av_offset_ms, r.av_offset_after_resume_ms) for r in results]
    av_offsets = [ms for pair in measured for ms in pair if ms is not None]
    arrival = [ms for r in results for ms in r.av_offsets_arrival_ms]
    report: dict[str, Any] = {
        "turns": len(results),
        "stages": {name: _summary(values) for name, values in stages.items()},
        "end_to_end": _summary(end_to_end),
        "end_to_end_parts_ms": {
            part: _summary(
                [
                    p[part]
                    for m, r in zip(matched, results, strict=True)
                    if (p := _end_to_end_parts(r, m))
                ]
            )
            for part in ("speech_end_detected", "server", "delivery")
        },
        "av_offset_ms": _summary(av_offsets),
        # Lip sync is off by an offset either way: the budget holds this one.
        "av_offset_abs_p95_ms": _summary([abs(ms) for ms in av_offsets])["p95_ms"],
        # Whether the offsets above are lip-synced: the sender's reports gave send times.
        "av_offset_lip_synced": timeline.has_send_times,
        # As a player without lip sync would show the media (aiortc's own player).
        "av_offset_arrival_ms": _summary(arrival),
        "av_offset_arrival_abs_p95_ms": _summary([abs(ms) for ms in arrival])["p95_ms"],
        "interrupt_decision_ms": _summary(
            [r.decision_ms for r in results if r.barge_in and r.decision_ms is not None]
        ),
        "interrupt_audio_stop_ms": _summary(
            [r.audio_stop_ms for r in results if r.audio_stop_ms is not None]
        ),
        "interrupt_mouth_close_ms": _summary(
            [r.mouth_close_ms for r in results if r.mouth_close_ms is not None]
        ),
        "interrupted_audio_after_stop_ms": round(
            sum(r.audio_after_stop_ms for r in results if r.barge_in), 1
        ),
        "av_offset_trend_ms_per_min": _trend_per_min(
            [(r.speech_end - timeline.start, r.av_offset_ms) for r in results]
        ),
        "backchannel": _backchannel_figures(results),
        **_video_figures(timeline, settings.avatar.fps),
        "budgets": settings.budgets.model_dump(),
        "per_turn": [
            {
                "question": r.question,
                "at_s": round(r.speech_end - timeline.start, 2),
                "kind": r.kind,
                "barge_in": r.barge_in,
                "end_to_end_ms": r.end_to_end_ms,
                "av_offset_ms": r.av_offset_ms,
                "interrupt_decision_ms": r.decision_ms,
                "interrupt_audio_stop_ms": r.audio_stop_ms,
                "interrupt_mouth_close_ms": r.mouth_close_ms,
                "backchannel_pause_ms": r.pause_ms,
                "av_offset_after_resume_ms": r.av_offset_after_resume_ms,
                "av_offsets_arrival_ms": r.av_offsets_arrival_ms,
                "server_stages_ms": m["stages_ms"] if m else {},
                "server_stage_starts_ms": m.get("starts_ms", {}) if m else {},
                "end_to_end_parts_ms": _end_to_end_parts(r, m),
            }
            for r, m in zip(results, matched, strict=True)
        ],
    }
    violations = []
    checked = [
        *report["stages"].items(),
        ("end_to_end", report["end_to_end"]),
        ("interrupt_decision", report["interrupt_decision_ms"]),
        ("interrupt_audio_stop", report["interrupt_audio_stop_ms"]),
        ("interrupt_mouth_close", report["interrupt_mouth_close_ms"]),
        ("av_offset", {"p95_ms": report["av_offset_abs_p95_ms"]}),
    ]
    for name, summary in checked:
        budget = report["budgets"][name]
        p95 = summary["p95_ms"]
        if p95 is not None and p95 > budget:
            violations.append({"stage": name, "p95_ms": p95, "budget_ms": budget})
    backchannel = report["backchannel"]
    lost = backchannel["turns"] - backchannel["resumed"] + backchannel["interrupted"]
    if lost:
        violations.append({"stage": "false_interruption", "count": lost, "budget": 0})
    report["violations"] = violations
    return report


def _backchannel_figures(results: list[TurnResult]) -> dict[str, Any]:
    """How the replies a backchannel was said over fared: each must pause, then resume."""
    said = [r for r in results if r.kind == "backchannel" and r.barge_onset is not None]
    return {
        "turns": len(said),
        "resumed": sum(r.pause_ms is not None for r in said),
        "interrupted": sum(bool(r.server_interrupted) for r in said),
        "pause_ms": _summary([r.pause_ms for r in said if r.pause_ms is not None]),
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table of p50/p95/max per stage."""
    rows = [("stage", "p50 ms", "p95 ms", "max ms", "budget")]
    named = [*report["stages"].items(), ("end_to_end", report["end_to_end"])]
    named += [
        (key, report[key])
        for key in (
            "av_offset_ms",
            "interrupt_decision_ms",
            "interrupt_audio_stop_ms",
            "interrupt_mouth_close_ms",
        )
    ]
    for name, s in named:
        budget = report["budgets"].get(name.removesuffix("_ms"), "")
        rows.append((name, *(("-" if s[k] is None else f"{s[k]:.0f}") for k in s), str(budget)))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    lines.append(
        f"fps delivered {report['fps_delivered']}, frames dropped {report['frames_dropped']}, "
        f"pts drift {report['pts_drift_ms']} ms, |A/V offset| p95 "
        f"{report['av_offset_abs_p95_ms']} ms "
        f"{'lip-synced' if report['av_offset_lip_synced'] else 'by arrival (no send times)'} "
        f"({report['av_offset_arrival_abs_p95_ms']} ms by arrival), A/V offset trend "
        f"{report['av_offset_trend_ms_per_min']} ms/min, interrupted audio after stop "
        f"{report['interrupted_audio_after_stop_ms']} ms"
    )
    parts = report.get("end_to_end_parts_ms", {})
    if parts and all(parts[k]["p50_ms"] is not None for k in parts):
        lines.append(
            "end-to-end at the caller, p50 of its parts: "
            + ", ".join(f"{k.replace('_', ' ')} {v['p50_ms']:.0f} ms" for k, v in parts.items())
        )
    gaps = report.get("reply_audio_gaps")
    if gaps:
        lines.append(
            f"gaps inside replies (the avatar had no audio to play): {gaps['reply_gaps']}, "
            f"{gaps['reply_gap_ms']} ms in all"
        )
    bc = report["backchannel"]
    if bc["turns"]:
        pause = bc["pause_ms"]["p50_ms"]
        lines.append(
            f"backchannel over a reply: {bc['resumed']}/{bc['turns']} resumed "
            f"(paused {'-' if pause is None else f'{pause:.0f}'} ms at p50), "
            f"{bc['interrupted']} interrupted"
        )
    if report["violations"]:
        broken = ", ".join(v["stage"] for v in report["violations"])
        lines.append(f"over budget at p95: {broken}")
    return "\n".join(lines)


def plot_waterfall(report: dict[str, Any], path: Path) -> None:
    """Draw each turn's server stages as a waterfall (matplotlib), one row per turn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = ["vad_stop", "llm_ttft", "tts_ttfb", "render_first_frame", "transport"]
    turns = report["per_turn"]
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * max(len(turns), 1)))
    colors = plt.get_cmap("tab10")
    for row, turn in enumerate(turns):
        left = 0.0
        starts = turn.get("server_stage_starts_ms", {})
        for k, name in enumerate(order):
            width = turn["server_stages_ms"].get(name)
            if width is None:
                continue
            # Where the server says the stage began (answering ahead overlaps vad_stop,
            # so the turn's decision gets a lane of its own above the reply's stages);
            # an older server's report gives only lengths, drawn end to end.
            left = starts.get(name, left)
            lane = (row - 0.22, 0.3) if name == "vad_stop" else (row + 0.14, 0.42)
            ax.barh(
                lane[0],
                width,
                height=lane[1],
                left=left,
                color=colors(k),
                label=name if row == 0 else None,
            )
            left += width
        if turn["end_to_end_ms"] is not None:
            ax.plot(turn["end_to_end_ms"], row, "k|", markersize=14)
    kinds = {"barge_in": " (barge-in)", "backchannel": " (hmm)"}
    labels = [f"turn {i + 1}{kinds.get(t.get('kind', ''), '')}" for i, t in enumerate(turns)]
    ax.set_yticks(range(len(turns)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("ms after the user stopped speaking (| = reply audio at the client)")
    ax.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1 - 0.6 / max(len(turns), 1)),
        ncol=5,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_profile(
    *,
    turns: int,
    url: str | None,
    settings: Settings,
    barge_in_every: int = BARGE_IN_EVERY,
    user_voice: str = USER_VOICES[0],
    server_flags: Sequence[str] = (),
) -> dict[str, Any]:
    """Blocking wrapper for the CLI."""
    return asyncio.run(
        profile(
            turns=turns,
            url=url,
            settings=settings,
            barge_in_every=barge_in_every,
            user_voice=user_voice,
            server_flags=server_flags,
        )
    )
