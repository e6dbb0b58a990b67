"""Typed chat on the server: RTVI's ``send-text`` client message (what the widget and
pipecat's own client SDKs send) is a user turn. pipecat's RTVIProcessor turns it into an
LLMMessagesAppendFrame that our context stage (the user aggregator) adds and runs, so the
avatar answers it out loud, and the client is told what was typed (``user-input``) for
its captions."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from pipecat.frames.frames import InputTransportMessageFrame
from pipecat.workers.runner import WorkerRunner

from agent.config import Settings
from pipelines.conversation import build_conversation
from renderer.config import AvatarSettings
from tests.helpers.drawers import FLAT_DRAWER
from tests.helpers.memory_transport import MemoryTransport
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

TYPED = "What can you do?"
LOUD = 1000  # int16 peak of speech; idle frames are silent


def _send_text(content: str, message_id: str) -> InputTransportMessageFrame:
    """The message as the transport delivers it from the data channel."""
    message = {
        "label": "rtvi-ai",
        "type": "send-text",
        "id": message_id,
        "data": {"content": content, "options": {"run_immediately": True, "audio_response": True}},
    }
    return InputTransportMessageFrame(message=message)


async def test_a_typed_message_is_a_user_turn_with_a_spoken_answer_and_a_caption() -> None:
    settings = Settings()
    conversation = build_conversation(
        MemoryTransport,
        stt=settings.stt,
        llm=settings.llm,
        tts=settings.tts,
        vad=settings.vad,
        avatar=AvatarSettings(
            width=64, height=64, device="cpu", face=FLAT_DRAWER, motion="procedural"
        ),
    )
    transport = conversation.transport
    assert isinstance(transport, MemoryTransport) and conversation.context is not None
    output = transport.output()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(conversation.worker)
    run = asyncio.create_task(runner.run(), name="typed-chat-call")

    def loud_since(since: float) -> list[float]:
        return [
            t
            for t, pcm in output.audio
            if t >= since and np.abs(np.frombuffer(pcm, np.int16)).max(initial=0) > LOUD
        ]

    try:
        assert await wait_until(lambda: len(output.images) > 5, 20), "the pipeline started"
        # No greeting (the caller never "connects"): the typed message is the first turn.
        typed_at = time.monotonic()
        await conversation.worker.queue_frame(_send_text(TYPED, "typed-1"))
        assert await wait_until(lambda: bool(loud_since(typed_at)), 10), "no spoken answer"
        assert await wait_until(lambda: len(conversation.context.get_messages()) >= 2, 10)  # type: ignore[union-attr]
        messages = conversation.context.get_messages()
    finally:
        await conversation.worker.cancel(reason="test over")
        await asyncio.wait_for(run, 10)

    # The context holds the typed text as the user's turn, then the avatar's answer.
    roles = [(m.get("role"), m.get("content")) for m in messages]  # type: ignore[union-attr]
    assert roles[0] == ("user", TYPED), roles
    assert roles[1][0] == "assistant" and roles[1][1], roles
    # The first reply audio came within a few seconds of the message.
    assert loud_since(typed_at)[0] - typed_at < 3.0
    # The client was told what was typed (its caption), with the message's id.
    sent = [m for _, m in output.messages if isinstance(m, dict)]
    inputs = [m["data"] for m in sent if m.get("type") == "user-input"]
    assert inputs and inputs[0]["text"] == TYPED, inputs
    assert inputs[0]["input_type"] == "chat" and inputs[0]["msg_id"] == "typed-1"
    # ...and what the avatar said, as it said it.
    assert any(m.get("type") == "bot-output" for m in sent), [m.get("type") for m in sent]
