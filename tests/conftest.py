"""Shared fixtures: the process is set up as the server sets it up, and every async test
must leave no asyncio task behind."""

from __future__ import annotations

import asyncio

import pytest

from agent.config import Settings
from agent.process import configure_process


@pytest.fixture(autouse=True, scope="session")
def server_process_settings() -> None:
    """Apply the default process-wide settings once, as ``visage serve`` does at start
    (torch's thread pool, the thread switch interval, loopback ICE candidates), so tests
    that drive the avatar without a server run it the way the server does."""
    configure_process(Settings())


@pytest.fixture(autouse=True)
async def no_leaked_tasks():
    """Fail the test if it leaves asyncio tasks running after it finished."""
    before = set(asyncio.all_tasks())
    yield
    current = asyncio.current_task()
    # Give cancelled tasks a few loop turns to unwind before judging.
    for _ in range(50):
        leaked = {t for t in asyncio.all_tasks() - before if t is not current and not t.done()}
        if not leaked:
            return
        await asyncio.sleep(0.02)
    names = sorted(t.get_name() + ": " + repr(t.get_coro()) for t in leaked)
    for task in leaked:
        task.cancel()
    pytest.fail("test leaked asyncio tasks:\n  " + "\n  ".join(names))
