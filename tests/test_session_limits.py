"""A call ends after ``server.idle_timeout_s`` without the user speaking or typing, and at
``server.max_session_s``; the page is told why before the connection closes. Real calls
over WebRTC on loopback with a light avatar."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from agent.browser import running_server
from agent.client import AvatarClient
from agent.config import Settings
from agent.server.limits import SessionEnd, wait_for_limit
from pipelines.activity import UserActivityObserver
from tests.helpers.drawers import FLAT_DRAWER
from tests.helpers.waiting import wait_until


def _settings(idle_timeout_s: float, max_session_s: float) -> Settings:
    settings = Settings()
    settings.avatar.width = settings.avatar.height = 64
    settings.avatar.motion = "procedural"
    settings.avatar.face = FLAT_DRAWER
    settings.vad.smart_turn = False
    settings.server = settings.server.model_copy(
        update={"idle_timeout_s": idle_timeout_s, "max_session_s": max_session_s}
    )
    return settings


def _session_ended(client: AvatarClient) -> list[tuple[float, dict[str, Any]]]:
    """The session-ended server messages the client received, with their arrival times."""
    return [
        (t, m["data"])
        for t, m in client.received.messages
        if m.get("label") == "rtvi-ai"
        and m.get("type") == "server-message"
        and isinstance(m.get("data"), dict)
        and m["data"].get("type") == "session-ended"
    ]


async def _call_until_ended(
    settings: Settings, during_call: Any = None
) -> tuple[float, float, dict[str, Any]]:
    """Call, run ``during_call(client)`` if given, and wait for the server to end the call:
    (seconds from connected to the message, from the message to the server's count of 0,
    the message's data)."""
    async with running_server(settings) as (url, sessions):
        client = AvatarClient(url)
        try:
            await client.connect()
            connected = time.monotonic()
            if during_call is not None:
                await during_call(client)
            assert await wait_until(lambda: bool(_session_ended(client)), 15), [
                m.get("type") for _, m in client.received.messages
            ]
            (arrived, data), *_ = _session_ended(client)
            assert await wait_until(lambda: sessions.count == 0, 10), sessions.describe()
            freed = time.monotonic()
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{url}/health")).json()["sessions"] == 0
        finally:
            await client.close()
    return arrived - connected, freed - arrived, data


async def test_a_call_without_speech_or_typing_ends_and_the_page_is_told_why() -> None:
    sent: list[float] = []

    async def type_once(client: AvatarClient) -> None:
        await asyncio.sleep(1.0)
        client.send_rtvi("send-text", {"content": "Hello there"})
        sent.append(time.monotonic())

    after_s, freed_s, data = await _call_until_ended(_settings(2.0, 60.0), type_once)
    assert data["reason"] == "idle" and data["type"] == "session-ended"
    assert "2 seconds without speech or typed messages" in data["message"]
    # The typed message restarted the idle clock.
    assert after_s >= 1.0 + 2.0 - 0.2, after_s
    assert after_s < 1.0 + 2.0 + 3.0, after_s
    assert freed_s < 5.0, f"the call was freed {freed_s:.1f} s after the message"


async def test_a_call_that_reaches_its_maximum_length_ends_and_the_page_is_told_why() -> None:
    after_s, freed_s, data = await _call_until_ended(_settings(60.0, 2.0))
    assert data == {
        "type": "session-ended",
        "reason": "max-length",
        "message": "The call reached its maximum length of 2 seconds.",
    }
    assert 2.0 - 0.3 <= after_s < 2.0 + 3.0, after_s
    assert freed_s < 5.0


@pytest.mark.parametrize(
    ("idle_s", "max_s", "reason"), [(0.3, 0.0, "idle"), (0.0, 0.3, "max-length")]
)
async def test_either_limit_can_be_turned_off(idle_s: float, max_s: float, reason: str) -> None:
    activity = UserActivityObserver()
    started = time.monotonic()
    end = await asyncio.wait_for(wait_for_limit(activity, idle_s, max_s), 5.0)
    assert isinstance(end, SessionEnd) and end.reason == reason
    assert 0.3 <= time.monotonic() - started < 1.0
    never = asyncio.create_task(wait_for_limit(activity, 0.0, 0.0))
    await asyncio.sleep(0.4)
    assert not never.done()
    never.cancel()
    await asyncio.gather(never, return_exceptions=True)
