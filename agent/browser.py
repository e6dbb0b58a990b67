"""Drive a real headless Chromium against an in-process Visage server.

Used by ``visage bench e2e`` and by the browser tests. Chromium comes from Debian
(``/usr/bin/chromium``) through Playwright; Playwright's own browser download is never
used. The fake microphone plays a WAV once (``%noloop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import tempfile
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import uvicorn

from agent.config import Settings
from agent.server.app import create_app
from agent.server.sessions import SessionManager

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
)


def find_chromium() -> str:
    """Path of a Chromium binary, or a RuntimeError that says how to get one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no Chromium found; install it with `apt-get install chromium`")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_speech_wav(
    path: Path, questions: list[str], *, lead_s: float, gap_s: float, tail_s: float = 2.0
) -> list[tuple[float, float]]:
    """Write a 16 kHz mono WAV of spoken questions separated by silence.

    Returns each question's (start_s, end_s) within the file.
    """
    from speech.espeak import synthesize

    rate = 16_000
    pieces = [np.zeros(int(lead_s * rate), np.int16)]
    spans: list[tuple[float, float]] = []
    position = lead_s
    for i, text in enumerate(questions):
        speech, speech_rate = synthesize(text, voice="en-us", rate=165, pitch=50)
        if speech_rate != rate:
            speech = soxr.resample(np.asarray(speech, np.int16), speech_rate, rate)
        pieces.append(speech)
        spans.append((position, position + len(speech) / rate))
        position += len(speech) / rate
        pause = gap_s if i < len(questions) - 1 else tail_s
        pieces.append(np.zeros(int(pause * rate), np.int16))
        position += pause
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate(pieces).tobytes())
    return spans


@contextlib.asynccontextmanager
async def running_server(
    settings: Settings, sessions: SessionManager | None = None
) -> AsyncIterator[tuple[str, SessionManager]]:
    """Serve Visage on a free loopback port for the duration of the block."""
    port = free_port()
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"host": "127.0.0.1", "port": port})}
    )
    app = create_app(settings, sessions)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(), name="visage-test-server")
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}", app.state.sessions
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@contextlib.asynccontextmanager
async def chromium_page(mic_wav: Path | None = None) -> AsyncIterator[Any]:
    """A fresh headless Chromium page whose fake microphone plays ``mic_wav`` once."""
    from playwright.async_api import async_playwright

    flags = list(CHROMIUM_FLAGS)
    if mic_wav is not None:
        flags.append(f"--use-file-for-fake-audio-capture={mic_wav}%noloop")
    with tempfile.TemporaryDirectory(prefix="visage-chromium-") as profile:
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=find_chromium(), headless=True, args=flags
            )
            try:
                page = context.pages[0] if context.pages else await context.new_page()
                yield page
            finally:
                await context.close()


async def page_snapshot(page: Any) -> dict[str, Any]:
    """What the call page measured so far (see web/stats.js), as plain data."""
    return await page.evaluate(
        """() => {
          const v = window.visage, s = v.stats;
          const meter = (m) => m ? {rms: m.rms, peakRms: m.peakRms,
                                     onsets: m.onsets, offsets: m.offsets} : null;
          return {
            state: v.call.state,
            micStartedAt: v.micStartedAt ?? null,
            userTranscripts: v.userTranscripts,
            botTranscripts: v.botTranscripts,
            messageTypes: v.messages.map((m) => m.type),
            messages: v.messages.map((m) => ({t: m.t, type: m.type})),
            videoFrames: s ? s.videoFrames : 0,
            fps: s ? s.fps() : 0,
            frames: s ? s.frames : [],
            reply: s ? meter(s.reply) : null,
            mic: s ? meter(s.mic) : null,
            videoWidth: document.getElementById('avatar').videoWidth,
          };
        }"""
    )


def reply_latencies_ms(snapshot: dict[str, Any]) -> list[float]:
    """For each end of user speech at the mic, the delay to the next reply sound."""
    mic, reply = snapshot.get("mic"), snapshot.get("reply")
    if not mic or not reply:
        return []
    latencies = []
    for offset in mic["offsets"]:
        later = [onset for onset in reply["onsets"] if onset > offset]
        if later:
            latencies.append(later[0] - offset)
    return latencies


BENCH_QUESTIONS = [
    "Hello, who are you?",
    "What can you do?",
    "Are you running offline?",
    "How do I connect a real language model?",
    "Tell me a joke.",
]


async def _e2e(turns: int, settings: Settings) -> dict[str, Any]:
    questions = [BENCH_QUESTIONS[i % len(BENCH_QUESTIONS)] for i in range(turns)]
    with tempfile.TemporaryDirectory(prefix="visage-bench-") as tmp:
        wav = Path(tmp) / "questions.wav"
        spans = write_speech_wav(wav, questions, lead_s=6.0, gap_s=9.0, tail_s=8.0)
        async with running_server(settings) as (url, _sessions), chromium_page(wav) as page:
            await page.goto(f"{url}/?autostart=1&audio_processing=0")
            await asyncio.sleep(spans[-1][1] + 8.0)
            snapshot = await page_snapshot(page)
    latencies = reply_latencies_ms(snapshot)
    result: dict[str, Any] = {"turns_spoken": turns, "turns_measured": len(latencies)}
    if latencies:
        arr = np.array(latencies)
        result |= {
            "speech_end_to_reply_audio_p50_ms": float(np.percentile(arr, 50)),
            "speech_end_to_reply_audio_max_ms": float(arr.max()),
        }
    result["video_fps_at_page"] = float(snapshot["fps"])
    result["user_transcripts"] = len(snapshot["userTranscripts"])
    return result


def run_e2e_bench(turns: int, settings: Settings) -> dict[str, Any]:
    """Speak ``turns`` questions into a headless browser call and time the replies."""
    return asyncio.run(_e2e(turns, settings))
