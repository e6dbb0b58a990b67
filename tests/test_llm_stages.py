"""The LLM stage in real pipecat pipelines: the persona responder and a real OpenAI client."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    MetricsFrame,
)
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.tests.utils import SleepFrame, run_test
from pydantic import SecretStr

from pipelines.config import LLMSettings
from pipelines.persona import PersonaError, load_persona
from pipelines.stages.llm import (
    PersonaLLMService,
    create_llm_service,
    last_user_text,
    split_pieces,
)

RESPONSE_FRAMES = (LLMFullResponseStartFrame, LLMTextFrame, LLMFullResponseEndFrame)


def _context(*user_lines: str) -> LLMContext:
    messages: list = []
    for line in user_lines:
        messages += [{"role": "user", "content": line}, {"role": "assistant", "content": "ok"}]
    return LLMContext(messages[:-1] if messages else [])


def _response(frames: Sequence[Frame]) -> list[Frame]:
    return [f for f in frames if isinstance(f, (*RESPONSE_FRAMES, InterruptionFrame))]


def _text(frames: Sequence[Frame]) -> str:
    return "".join(f.text for f in frames if isinstance(f, LLMTextFrame))


# The persona responder


async def test_persona_streams_its_answer_in_pieces() -> None:
    llm = PersonaLLMService(load_persona())
    heard = "oh how are you done to you"
    down, _ = await run_test(
        llm,
        frames_to_send=[LLMContextFrame(_context("hello", heard))],
        pipeline_params=PipelineParams(enable_metrics=True),
    )
    frames = _response(down)
    assert isinstance(frames[0], LLMFullResponseStartFrame)
    assert isinstance(frames[-1], LLMFullResponseEndFrame)
    pieces = frames[1:-1]
    assert len(pieces) >= 2 and all(isinstance(f, LLMTextFrame) for f in pieces)
    assert _text(pieces) == llm.persona.answer(heard)
    ttfb = [
        d
        for f in down
        if isinstance(f, MetricsFrame)
        for d in f.data
        if isinstance(d, TTFBMetricsData) and d.value > 0
    ]
    assert len(ttfb) == 1 and ttfb[0].model == "persona:Ava" and ttfb[0].value < 0.5


async def test_persona_greets_before_the_user_speaks() -> None:
    llm = PersonaLLMService(load_persona())
    context = LLMContext([{"role": "system", "content": "be nice"}])
    down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context)])
    assert _text(down) == llm.persona.greeting


async def test_interruption_stops_the_pieces_and_the_next_turn_still_answers() -> None:
    llm = PersonaLLMService(load_persona(), words_per_piece=1, piece_delay_s=0.05)
    first, second = "how does this work", "tell me a joke"
    down, _ = await run_test(
        llm,
        frames_to_send=[
            LLMContextFrame(_context(first)),
            SleepFrame(0.3),
            InterruptionFrame(),
            SleepFrame(0.3),
            LLMContextFrame(_context(first, second)),
        ],
    )
    frames = _response(down)
    cut = next(i for i, f in enumerate(frames) if isinstance(f, InterruptionFrame))
    before, after = frames[:cut], frames[cut + 1 :]
    partial = _text(before)
    assert 0 < len(partial) < len(llm.persona.answer(first))
    assert llm.persona.answer(first).startswith(partial)
    # Nothing of the interrupted reply after the interruption: the next frame opens turn two.
    assert isinstance(after[0], LLMFullResponseStartFrame)
    assert _text(after) == llm.persona.answer(second)


def test_last_user_text_skips_later_assistant_messages() -> None:
    assert last_user_text(_context()) is None
    assert last_user_text(_context("first", "second")) == "second"
    parts = [{"type": "text", "text": "what is"}, {"type": "text", "text": "visage"}]
    assert last_user_text(LLMContext([{"role": "user", "content": parts}])) == "what is visage"


@pytest.mark.parametrize("text", ["Hi, I'm Ava.  Ask me\nanything! ", "one", ""])
def test_split_pieces_joins_back_exactly(text: str) -> None:
    assert "".join(split_pieces(text, 2)) == text
    assert all(p.strip() for p in split_pieces(text, 2) if text.strip())


# Choosing the service


def test_no_base_url_gives_the_persona(tmp_path: Path) -> None:
    llm, why = create_llm_service(LLMSettings())
    assert isinstance(llm, PersonaLLMService)
    assert "Ava" in why and "base_url" in why
    with pytest.raises(PersonaError, match=r"missing\.toml does not exist"):
        create_llm_service(LLMSettings(persona_file=tmp_path / "missing.toml"))


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="base_url must be an http"):
        create_llm_service(LLMSettings(base_url="localhost:11434/v1"))


# The real OpenAI client against a local OpenAI-compatible server


@dataclass
class StubServer:
    """A local OpenAI-compatible streaming endpoint that records what it was asked."""

    reply_pieces: list[str]
    requests: list[dict] = field(default_factory=list)
    base_url: str = ""

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/chat/completions with stream: true, answered as SSE chunks."""
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": p} for p in self.reply_pieces
        ]
        for i, delta in enumerate([*deltas, {}]):
            choice = {"index": 0, "delta": delta, "finish_reason": None if delta else "stop"}
            await response.write(_sse(_chunk(body["model"], i, choices=[choice])))
        usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
        await response.write(_sse(_chunk(body["model"], len(deltas) + 1, choices=[], usage=usage)))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _chunk(model: str, n: int, **fields) -> dict:
    head = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": n, "model": model}
    return head | fields


def _sse(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


@asynccontextmanager
async def stub_openai_server(reply_pieces: list[str]) -> AsyncIterator[StubServer]:
    """Serve a StubServer on a free 127.0.0.1 port for the duration of the block."""
    stub = StubServer(reply_pieces)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", stub.chat_completions)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        stub.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        yield stub
    finally:
        await runner.cleanup()
        sock.close()


async def test_openai_service_streams_from_a_compatible_server() -> None:
    pieces = ["Hello", " from", " the", " stub", " server."]
    async with stub_openai_server(pieces) as stub:
        settings = LLMSettings(
            base_url=stub.base_url,
            model="stub-model",
            api_key=SecretStr("sk-test"),
            system_prompt="Be brief.",
        )
        llm, why = create_llm_service(settings)
        assert isinstance(llm, OpenAILLMService)
        assert "stub-model" in why and stub.base_url in why
        context = LLMContext([{"role": "user", "content": "hi"}])
        down, _ = await run_test(llm, frames_to_send=[LLMContextFrame(context)])

    frames = _response(down)
    assert isinstance(frames[0], LLMFullResponseStartFrame)
    assert isinstance(frames[-1], LLMFullResponseEndFrame)
    assert [f.text for f in frames[1:-1]] == pieces
    (request,) = stub.requests
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "stub-model"
    assert request["body"]["stream"] is True
    assert request["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
