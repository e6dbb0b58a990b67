"""A real call on loopback: each data-channel message reaches the server exactly once.

The avatar's transport used to build a second SmallWebRTC client next to pipecat's own;
both listened to the connection, so every RTVI message was handled twice.
"""

from __future__ import annotations

from collections import Counter

from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

from agent.browser import running_server
from agent.client import AvatarClient
from agent.config import Settings
from agent.server.sessions import SessionManager, default_factory
from pipelines.conversation import Conversation
from pipelines.transports.smallwebrtc import (
    AvatarVideoTrack,
    AvatarWebRTCTransport,
    ReplyAudioTrack,
)
from tests.helpers.waiting import wait_until


def _light_settings() -> Settings:
    settings = Settings()
    settings.avatar.width = settings.avatar.height = 64
    settings.avatar.motion = "procedural"
    settings.vad.smart_turn = False
    return settings


async def test_each_rtvi_message_is_handled_once_and_the_avatar_tracks_are_ready() -> None:
    handled: Counter[str] = Counter()
    tracks_at_connect: list[tuple[object, object]] = []

    def factory(connection: SmallWebRTCConnection, settings: Settings) -> Conversation:
        conversation = default_factory(connection, settings)
        transport = conversation.transport
        assert isinstance(transport, AvatarWebRTCTransport)

        @transport.event_handler("on_app_message")
        async def _count(_transport: object, message: object, _sender: str) -> None:
            if isinstance(message, dict):
                handled[str(message.get("id"))] += 1

        @transport.event_handler("on_client_connected")
        async def _tracks(_transport: object, _client: object) -> None:
            tracks_at_connect.append((transport.output().reply_track, transport.video_track))

        return conversation

    settings = _light_settings()
    async with running_server(settings, SessionManager(settings, factory)) as (url, sessions):
        client = AvatarClient(url)
        try:
            await client.connect()
            assert await wait_until(lambda: bool(tracks_at_connect), 10), "no client connected"
            ids = ("first", "second")
            for message_id in ids:
                client.send_rtvi("client-message", {"t": "note", "d": {}}, message_id=message_id)
            assert await wait_until(lambda: all(handled[i] for i in ids), 5), handled
            # A second delivery would follow the first at once; give it time to show up.
            await wait_until(lambda: max(handled.values()) > 1, 0.5)
        finally:
            await client.close()
        assert await wait_until(lambda: sessions.count == 0, 10), sessions.describe()
    assert handled["first"] == handled["second"] == 1, handled
    assert all(count == 1 for count in handled.values()), handled  # client-ready too
    (audio, video), *_ = tracks_at_connect
    assert isinstance(audio, ReplyAudioTrack), "the greeting writes to the avatar's track"
    assert isinstance(video, AvatarVideoTrack)
