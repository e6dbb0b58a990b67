"""At the default log level the log holds no API key, no session token and nothing that
was said or typed in a call; debug logging, turned on explicitly, does show the text."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from loguru import logger

from agent.browser import running_server
from agent.client import AvatarClient
from agent.config import load_settings
from agent.log_privacy import add_log_sink
from speech.espeak import synthesize
from tests.helpers.drawers import FLAT_DRAWER
from tests.helpers.waiting import wait_until

API_KEY = "sk-planted-7f3a9c1e55d04b2a"
TYPED = "My locker code is purple walrus seventeen"
SPOKEN = "Please tell me about the weather in Paris today"


def _texts(client: AvatarClient, kind: str) -> list[str]:
    return [
        str(m["data"]["text"])
        for _, m in client.received.messages
        if m.get("type") == kind and isinstance(m.get("data"), dict) and m["data"].get("text")
    ]


async def test_the_default_log_level_keeps_keys_tokens_and_conversation_out() -> None:
    settings = load_settings(
        overrides={"server": {"auth": "token", "api_key": API_KEY}}, environ={}
    )
    settings.avatar.width = settings.avatar.height = 64
    settings.avatar.motion = "procedural"
    settings.avatar.face = FLAT_DRAWER
    settings.vad.smart_turn = False
    info: list[str] = []
    debug: list[str] = []
    sinks = [add_log_sink(info.append, "INFO"), add_log_sink(debug.append, "DEBUG")]
    try:
        async with running_server(settings) as (url, sessions):
            async with httpx.AsyncClient(base_url=url) as http:
                minted = await http.post(
                    "/api/session", headers={"Authorization": f"Bearer {API_KEY}"}
                )
            assert minted.status_code == 200, minted.text
            token = minted.json()["token"]
            client = AvatarClient(url)
            try:
                await client.connect(token=token)
                assert await wait_until(lambda: bool(_texts(client, "bot-transcription")), 20)
                client.send_rtvi("send-text", {"content": TYPED})
                assert await wait_until(lambda: TYPED in _texts(client, "user-llm-text"), 10)
                pcm, rate = synthesize(SPOKEN)
                client.mic.say(np.asarray(pcm, np.int16), rate)
                assert await wait_until(lambda: bool(_texts(client, "user-transcription")), 30)
                heard = _texts(client, "user-transcription")[-1]
                replies = _texts(client, "bot-output")
                assert await wait_until(
                    lambda: len(_texts(client, "bot-output")) > len(replies), 10
                )
            finally:
                await client.close()
            assert await wait_until(lambda: sessions.count == 0, 10)
    finally:
        for sink in sinks:
            logger.remove(sink)

    said = {str(text) for text in _texts(client, "bot-output") if len(text.split()) >= 4}
    assert len(heard.split()) >= 4, f"the STT heard too little to look for: {heard!r}"
    planted = {"api key": API_KEY, "token": token, "typed": TYPED, "heard": heard}
    planted |= {f"said {i}": text for i, text in enumerate(sorted(said))}
    info_log = "".join(info)
    counts = {name: info_log.count(text) for name, text in planted.items()}
    assert counts == dict.fromkeys(planted, 0), counts
    # The same call, logged at DEBUG: what was typed and heard is there, so the counts
    # above could have found it.
    debug_log = "".join(debug)
    assert debug_log.count(TYPED) > 0 and debug_log.count(heard) > 0
    assert len(info) > 5, "the default level logs the call (so it was captured at all)"


def _log_as(module: str, level: str, message: str) -> None:
    """Log ``message`` as if from ``module`` (loguru names a record after its caller's
    module)."""
    exec("logger.log(level, message)", {"__name__": module, "logger": logger, **locals()})


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            "pipecat.services.tts_service",
            "PiperTTSService#0: service is no longer usable, not speaking [{secret}]",
        ),
        (
            "pipecat.transports.smallwebrtc.connection",
            "Error parsing JSON message {secret}, Expecting value: line 1 column 1 (char 0)",
        ),
        (
            "pipecat.processors.frameworks.rtvi.processor",
            "Invalid message: 1 validation error for SendTextData\ncontent\n  Input should be "
            "a valid string [type=string_type, input_value={{'x': '{secret}'}}, "
            "input_type=dict]",
        ),
        (
            "pipecat.pipeline.worker",
            "PipelineWorker#0: Something went wrong: TranscriptionFrame#3(user: , "
            "text: [{secret}], language: None)",
        ),
    ],
)
def test_pipecats_lines_that_quote_the_conversation_are_withheld_above_debug(
    module: str, message: str
) -> None:
    secret = "my card number is 4111 1111"
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, str(m))), level="DEBUG")
    try:
        for level in ("WARNING", "DEBUG"):
            _log_as(module, level, message.format(secret=secret))
    finally:
        logger.remove(sink)
    (warning_level, warning), (debug_level, debug) = lines
    assert (warning_level, debug_level) == ("WARNING", "DEBUG")
    assert secret not in warning and "withheld" in warning
    assert secret in debug


def _record_names(lines: list[Any]) -> list[str]:
    return [line.record["name"] for line in lines]


def test_a_record_from_elsewhere_is_left_alone() -> None:
    lines: list[Any] = []
    sink = logger.add(lines.append, level="INFO")
    try:
        _log_as("agent.server.sessions", "INFO", "session x: text: [kept as is]")
    finally:
        logger.remove(sink)
    assert _record_names(lines) == ["agent.server.sessions"]
    assert "[kept as is]" in str(lines[0])
