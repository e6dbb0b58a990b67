"""A real WebRTC call on loopback: the pipeline starts on the offer and is gone after hang-up."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from agent.browser import running_server
from agent.client import AvatarClient
from agent.config import Settings
from tests.helpers.waiting import wait_until


async def test_call_streams_avatar_and_tears_down(tmp_path) -> None:
    settings = Settings()
    settings.avatar.width = settings.avatar.height = 256
    async with running_server(settings) as (url, sessions):
        client = AvatarClient(url)
        try:
            await client.connect()
            assert sessions.count == 1
            async with httpx.AsyncClient() as http:
                assert (await http.get(f"{url}/health")).json()["sessions"] == 1
            # The greeting arrives as audio, and video flows at the avatar's rate.
            assert await wait_until(lambda: client.received.audio_seconds() > 3.0, 20)
            await asyncio.sleep(2.0)
            video = client.received.video
            span = video[-1][0] - video[0][0]
            assert (len(video) - 1) / span > 20, f"{len(video)} frames in {span:.1f}s"
            loud = [np.abs(pcm).max() for _, pcm, _, _ in client.received.audio]
            assert max(loud) > 3000, "the greeting should be audible"
        finally:
            await client.close()
        assert await wait_until(lambda: sessions.count == 0, 10), sessions.describe()
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/health")).json()["sessions"] == 0
