"""No silent avatar: an LLM that is unreachable, stalls, or breaks off mid-reply (and a
stuck TTS or STT, which are bounded too).

Each fault ends in the configured fallback line, spoken within 3 s of the turn through
the normal reply path (TTS, avatar, the context), and the call goes on: the next turn
gets a real answer, and a barge-in still cancels a stalled request. The dependency
registry (``/health``) says degraded while the LLM fails and ok after it answers.

The LLM is a local OpenAI-compatible server this module starts on loopback (or a closed
port); calls run through the real conversation on the in-memory transport, and one over
real HTTP and WebRTC.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import numpy as np
import soxr
from aiohttp import web
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.workers.runner import WorkerRunner
from pydantic import SecretStr

from agent.browser import running_server
from agent.client import AvatarClient
from agent.config import Settings
from pipelines.config import LLMSettings, TTSSettings
from pipelines.conversation import Conversation, build_conversation
from pipelines.health import DependencyHealth
from pipelines.stages.llm import OpenAICompatibleLLMService, create_llm_service
from pipelines.stages.stt import PocketsphinxSTTService
from pipelines.stages.tts import EspeakTTSService
from renderer.config import AvatarSettings
from speech.espeak import EspeakEngine, SpeechStream, synthesize
from tests.helpers.drawers import FLAT_DRAWER
from tests.helpers.frames import Timestamps
from tests.helpers.memory_transport import MemoryTransport
from tests.helpers.waiting import wait_until

#: A short fallback line (the default one takes 4 s to say), configured as a user would.
FALLBACK = "Sorry, say that again?"
RESPONSE_FRAMES = (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame)
ANSWER = ["Visage is", " a talking avatar", " that answers out loud."]
PARTIAL = ["Hello there.", " The answer", " is"]
#: Within this of the turn starting, the caller hears something: the answer or the fallback.
FIRST_AUDIO_S = 3.0
#: Peak level of speech (espeak speaks at up to 32767; silence and idle frames are 0).
LOUD = 1000

# A fake LLM on loopback


@dataclass
class FakeLLM:
    """An OpenAI-compatible streaming endpoint whose behaviour the test switches:
    ``answer`` streams ``ANSWER``; ``stall`` accepts the request and never answers;
    ``midway`` streams ``PARTIAL`` and then stalls; ``drop`` streams ``PARTIAL`` and then
    closes the connection."""

    mode: Literal["answer", "stall", "midway", "drop"] = "answer"
    requests: list[dict] = field(default_factory=list)
    #: When each request arrived (time.monotonic(), the test's clock too).
    arrivals: list[float] = field(default_factory=list)
    base_url: str = ""
    #: Set at the end, so stalled handlers return and the server shuts down at once.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.arrivals.append(time.monotonic())
        mode = self.mode
        if mode == "stall":
            await self.release.wait()
            raise web.HTTPServiceUnavailable()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = ANSWER if mode == "answer" else PARTIAL
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        for i, delta in enumerate(deltas):
            await response.write(_sse(body["model"], i, delta, None))
            await asyncio.sleep(0.02)
        if mode == "midway":
            await self.release.wait()
        elif mode == "drop":
            assert request.transport is not None
            request.transport.abort()  # the chunked body never ends
            return response
        await response.write(_sse(body["model"], len(deltas), {}, "stop"))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _sse(model: str, n: int, delta: dict, finish: str | None) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": n,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def fake_llm(mode: str = "answer", port: int = 0) -> AsyncIterator[FakeLLM]:
    """Serve a FakeLLM on 127.0.0.1:``port`` (0: a free one) for the block."""
    llm = FakeLLM(mode)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_post("/v1/chat/completions", llm.chat_completions)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    try:
        await web.SockSite(runner, sock).start()
        llm.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        yield llm
    finally:
        llm.release.set()
        await runner.cleanup()
        sock.close()


def llm_settings(base_url: str) -> LLMSettings:
    return LLMSettings(
        base_url=base_url,
        model="fake-model",
        api_key=SecretStr("sk-not-logged"),
        fallback_line=FALLBACK,
    )


# A call on the in-memory transport


@asynccontextmanager
async def call(llm: LLMSettings, health: DependencyHealth) -> AsyncIterator[Conversation]:
    """The real conversation (a small flat face, procedural motion) running on a
    MemoryTransport; the caller has not connected yet."""
    settings = Settings()
    conversation = build_conversation(
        MemoryTransport,
        stt=settings.stt,
        llm=llm,
        tts=settings.tts,
        vad=settings.vad,
        avatar=AvatarSettings(
            width=64, height=64, device="cpu", face=FLAT_DRAWER, motion="procedural"
        ),
        health=health,
    )
    output = _transport(conversation).output()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(conversation.worker)
    run = asyncio.create_task(runner.run(), name="fault-call")
    try:
        assert await wait_until(lambda: len(output.images) > 5, 20), "the pipeline started"
        yield conversation
    finally:
        await conversation.worker.cancel(reason="test over")
        await asyncio.wait_for(run, 10)


def _transport(conversation: Conversation) -> MemoryTransport:
    assert isinstance(conversation.transport, MemoryTransport)
    return conversation.transport


async def ask(conversation: Conversation, question: str) -> float:
    """A user turn that reaches the LLM at once (as a finished transcript would); returns
    when it started."""
    started = time.monotonic()
    message = {"role": "user", "content": question}
    await conversation.worker.queue_frame(LLMMessagesAppendFrame([message], run_llm=True))
    return started


def loud_since(conversation: Conversation, since: float) -> list[float]:
    """When audible reply audio was written to the caller, from ``since`` on."""
    output = _transport(conversation).output()
    return [
        t
        for t, pcm in output.audio
        if t >= since and np.abs(np.frombuffer(pcm, np.int16)).max(initial=0) > LOUD
    ]


async def first_audio_after(conversation: Conversation, since: float, timeout_s: float) -> float:
    """Seconds from ``since`` to the first audible reply audio written to the caller."""
    heard = await wait_until(lambda: bool(loud_since(conversation, since)), timeout_s, 0.02)
    assert heard, f"nothing heard within {timeout_s} s"
    return loud_since(conversation, since)[0] - since


def said(conversation: Conversation) -> list[str]:
    """What the avatar said, one entry per reply, as the context recorded it."""
    assert conversation.context is not None
    messages = conversation.context.get_messages()
    return [str(m["content"]) for m in messages if m.get("role") == "assistant"]  # type: ignore[union-attr]


async def wait_said(conversation: Conversation, n: int, timeout_s: float = 15) -> list[str]:
    """The context's replies once there are ``n`` of them."""
    assert await wait_until(lambda: len(said(conversation)) >= n, timeout_s), said(conversation)
    return said(conversation)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


# The tests


async def test_defaults_bound_the_wait_and_the_client_never_waits_600_s() -> None:
    settings = LLMSettings()
    assert settings.timeout_s + 0.5 <= FIRST_AUDIO_S and settings.retries == 1
    assert settings.fallback_line.startswith("Sorry, I can't answer that right now.")
    llm, why = create_llm_service(llm_settings(f"http://127.0.0.1:{closed_port()}/v1"))
    assert isinstance(llm, OpenAICompatibleLLMService)
    assert "2.5 s" in why and "sk-not-logged" not in why
    client = llm._client
    assert client.max_retries == settings.retries
    assert client.timeout == max(settings.timeout_s, settings.stall_timeout_s)
    await client.close()


async def test_unreachable_llm_says_the_fallback_and_the_next_turn_answers() -> None:
    """Closed port: the greeting falls back within 3 s, /health's registry says
    unreachable; the LLM then comes up on that port and the next question is answered."""
    port, health = closed_port(), DependencyHealth()
    async with call(llm_settings(f"http://127.0.0.1:{port}/v1"), health) as conversation:
        connected = time.monotonic()
        await _transport(conversation).connect()  # the greeting's turn
        latency = await first_audio_after(conversation, connected, FIRST_AUDIO_S + 2)
        assert latency < FIRST_AUDIO_S, f"fallback heard after {latency:.2f} s"
        assert health.degraded
        assert health.describe()["llm"].startswith("unreachable since 20")
        (greeting,) = await wait_said(conversation, 1)
        assert words(greeting) == words(FALLBACK), "the context records what was said"

        async with fake_llm("answer", port=port) as llm:
            asked = await ask(conversation, "What is Visage?")
            latency2 = await first_audio_after(conversation, asked, FIRST_AUDIO_S + 2)
            replies = await wait_said(conversation, 2)
        assert words(replies[1]) == words("".join(ANSWER)), "a real answer this time"
        assert latency2 < FIRST_AUDIO_S
        assert not health.degraded and health.describe() == {"llm": "ok", "tts": "ok"}
        # The LLM saw the fallback as the avatar's earlier turn.
        assert llm.requests[0]["messages"][-2:] == [
            {"role": "assistant", "content": greeting},
            {"role": "user", "content": "What is Visage?"},
        ]
    print(f"closed port: fallback after {latency:.2f} s; answer after {latency2:.2f} s")


async def test_stalling_llm_says_the_fallback_barge_in_still_cancels_and_recovery_answers() -> None:
    health = DependencyHealth()
    async with fake_llm("stall") as llm, call(llm_settings(llm.base_url), health) as conversation:
        connected = time.monotonic()
        await _transport(conversation).connect()
        latency = await first_audio_after(conversation, connected, FIRST_AUDIO_S + 2)
        assert latency < FIRST_AUDIO_S, f"fallback heard after {latency:.2f} s"
        assert health.describe()["llm"].startswith("no answer within 2.5 s since 20")
        (greeting,) = await wait_said(conversation, 1)
        assert words(greeting) == words(FALLBACK)
        failing_since = health.describe()["llm"]

        # A barge-in while the LLM stalls cancels the request: no fallback, no new failure.
        asked = await ask(conversation, "Are you there?")
        assert await wait_until(lambda: len(llm.requests) == 2, 2)
        await asyncio.sleep(0.5)
        await conversation.worker.queue_frame(InterruptionFrame())
        await asyncio.sleep(FIRST_AUDIO_S)
        assert not loud_since(conversation, asked), "nothing said for the cancelled turn"
        assert len(said(conversation)) == 1 and health.describe()["llm"] == failing_since

        llm.mode = "answer"
        asked = await ask(conversation, "What is Visage?")
        latency2 = await first_audio_after(conversation, asked, FIRST_AUDIO_S + 2)
        replies = await wait_said(conversation, 2)
        assert words(replies[1]) == words("".join(ANSWER))
        assert health.describe()["llm"] == "ok"
    print(f"stall: fallback after {latency:.2f} s; answer after {latency2:.2f} s")


async def test_a_reply_that_stalls_midway_keeps_what_was_said_then_the_fallback() -> None:
    health = DependencyHealth()
    async with fake_llm("midway") as llm, call(llm_settings(llm.base_url), health) as conversation:
        connected = time.monotonic()
        await _transport(conversation).connect()
        # "Hello there." is spoken while the rest of the reply is awaited.
        latency = await first_audio_after(conversation, connected, FIRST_AUDIO_S)
        assert latency < 1.5
        (reply,) = await wait_said(conversation, 1)
    assert words(reply) == words("".join(PARTIAL)) + words(FALLBACK), reply
    assert health.describe()["llm"].startswith("stalled for 2.5 s mid-reply since")


async def test_a_dropped_stream_keeps_the_partial_reply_in_the_context() -> None:
    """What pipecat's assistant aggregator does with a reply cut by an error: it commits
    the text that came before it, and here the fallback after it, as one turn."""
    health = DependencyHealth()
    context = LLMContext([{"role": "user", "content": "hi"}])
    aggregators = LLMContextAggregatorPair(context)
    seen = Timestamps()
    async with fake_llm("drop") as fake:
        llm, _ = create_llm_service(llm_settings(fake.base_url), health)
        started = time.monotonic()
        await run_test(
            Pipeline([llm, seen, aggregators.assistant()]),
            frames_to_send=[LLMContextFrame(context)],
        )
    elapsed = time.monotonic() - started
    reply = [f for _, f in seen.seen if isinstance(f, RESPONSE_FRAMES)]
    assert isinstance(reply[0], LLMFullResponseStartFrame)
    assert isinstance(reply[-1], LLMFullResponseEndFrame)
    assert [f.text for f in reply[1:-1]] == [*PARTIAL, "... " + FALLBACK]  # type: ignore[attr-defined]
    assert context.get_messages()[-1] == {
        "role": "assistant",
        "content": "".join(PARTIAL) + "... " + FALLBACK,
    }
    assert health.describe()["llm"].startswith("broke off mid-reply since")
    assert elapsed < 2.0, "an error mid-stream falls back at once, without the deadline"


async def test_a_real_call_hears_the_fallback_and_health_says_degraded_then_ok() -> None:
    """Over HTTP and WebRTC: an unreachable LLM gives the fallback greeting and a degraded
    /health; once the LLM is up on that port, a spoken question is answered and /health
    is ok again."""
    port = closed_port()
    settings = Settings()
    settings.llm = llm_settings(f"http://127.0.0.1:{port}/v1")
    settings.avatar = AvatarSettings(width=128, height=128, face=FLAT_DRAWER, motion="procedural")
    async with running_server(settings) as (url, _sessions), httpx.AsyncClient() as http:
        client = AvatarClient(url)
        try:
            # From before the offer, so signalling and ICE count too: an upper bound.
            calling = time.monotonic()
            await client.connect()
            heard = await _heard_after(client, calling)
            assert heard < FIRST_AUDIO_S, f"fallback heard {heard:.2f} s after calling"
            response = await http.get(f"{url}/health")
            assert response.status_code == 200
            body = response.json()
            assert body["status"] == "degraded" and body["sessions"] == 1
            assert body["dependencies"]["llm"].startswith("unreachable since 20")
            assert "max_sessions" in body

            async with fake_llm("answer", port=port) as llm:
                await _quiet(client, 0.5, timeout_s=10)  # the fallback line has ended
                pcm, rate = synthesize("Hello, who are you?")
                client.mic.say(np.asarray(pcm, np.int16), rate)
                assert await wait_until(lambda: bool(llm.arrivals), 15), "the turn reached the LLM"
                answered = await _heard_after(client, llm.arrivals[0])
                assert answered < FIRST_AUDIO_S
                response = await http.get(f"{url}/health")
            body = response.json()
            assert body["status"] == "ok" and body["dependencies"]["llm"] == "ok", body
        finally:
            await client.close()
    print(f"real call, closed port: fallback {heard:.2f} s after calling; answer {answered:.2f} s")


async def _heard_after(client: AvatarClient, since: float, timeout_s: float = 5) -> float:
    """Seconds from ``since`` to the first audible audio the client received."""

    def loud() -> list[float]:
        return [t for t, pcm, _, _ in client.received.audio if t >= since and pcm.max() > LOUD]

    assert await wait_until(lambda: bool(loud()), timeout_s, every_s=0.02), "nothing heard"
    return loud()[0] - since


async def _quiet(client: AvatarClient, for_s: float, timeout_s: float) -> None:
    """Wait until nothing audible has arrived for ``for_s`` seconds."""

    def quiet() -> bool:
        loud = [t for t, pcm, _, _ in client.received.audio if pcm.max() > LOUD]
        return not loud or time.monotonic() - loud[-1] > for_s

    assert await wait_until(quiet, timeout_s), "the avatar kept talking"


# TTS and STT are bounded too


class RecordingHealth(DependencyHealth):
    """A DependencyHealth that also keeps every report, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[tuple[str, str]] = []

    def ok(self, name: str) -> None:
        self.reports.append((name, "ok"))
        super().ok(name)

    def failed(self, name: str, why: str) -> None:
        self.reports.append((name, why))
        super().failed(name, why)


class StuckSpeech:
    """A synthesis that never yields a chunk and never ends."""

    aborted = False
    exhausted = False

    def poll(self) -> None:
        return None

    def abort(self) -> None:
        self.aborted = True

    def join(self, timeout: float | None = None) -> bool:
        return True


class OnceStuckEngine(EspeakEngine):
    """espeak-ng, except that its first synthesis gets stuck."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    def stream(self, text: str, *args: Any, **kwargs: Any) -> SpeechStream:
        self.streams += 1
        if self.streams == 1:
            return StuckSpeech()  # type: ignore[return-value]
        return super().stream(text, *args, **kwargs)


async def test_a_stuck_tts_is_abandoned_and_reported_and_the_next_reply_speaks() -> None:
    health = RecordingHealth()
    engine = OnceStuckEngine()
    tts = EspeakTTSService(TTSSettings(), engine=engine, chunk_timeout_s=0.3, health=health)
    started = time.monotonic()
    down, up = await run_test(
        tts,
        frames_to_send=[
            TTSSpeakFrame("This is never heard."),
            SleepFrame(0.6),
            TTSSpeakFrame("This is heard."),
            SleepFrame(0.5),
        ],
    )
    errors = [f.error for f in up if isinstance(f, ErrorFrame)]
    assert any("no audio from espeak-ng within 0.3 s" in e for e in errors), errors
    assert health.reports == [("tts", "no audio from espeak-ng within 0.3 s"), ("tts", "ok")]
    assert any(isinstance(f, TTSAudioRawFrame) for f in down), "the next reply is spoken"
    assert engine.streams == 2 and time.monotonic() - started < 5


async def test_a_stuck_transcript_restarts_the_decoder_and_the_next_turn_is_heard() -> None:
    health = RecordingHealth()
    stt = PocketsphinxSTTService(transcript_timeout_s=0.3, health=health)
    stuck = stt._worker

    async def hang() -> str:
        # Only this wait is short: the fresh decoder's first one includes loading its model.
        stt._transcript_timeout_s = 10.0
        await asyncio.sleep(3600)
        return ""

    stuck.finish_async = hang  # type: ignore[method-assign]
    pcm, rate = synthesize("Hello, how are you today?")
    speech = np.asarray(soxr.resample(pcm, rate, 16000), np.int16)
    step = 16000 // 50

    def utterance() -> list[Frame]:
        audio = [
            InputAudioRawFrame(speech[i : i + step].tobytes(), 16000, 1)
            for i in range(0, len(speech), step)
        ]
        return [VADUserStartedSpeakingFrame(), *audio, VADUserStoppedSpeakingFrame(stop_secs=0.2)]

    down, _ = await run_test(
        stt,
        frames_to_send=[*utterance(), SleepFrame(0.6), *utterance(), SleepFrame(1.0)],
        pipeline_params=PipelineParams(audio_in_sample_rate=16000),
    )
    assert stt._worker is not stuck, "a fresh decoder took over"
    assert health.reports[0] == ("stt", "no transcript within 0.3 s")
    assert health.reports[-1] == ("stt", "ok")
    assert len([f for f in down if isinstance(f, TranscriptionFrame)]) == 1, "turn two heard"
