"""A second face drawer plugs in through settings alone: the factory, the player, and a
scripted call through the real conversation on an in-memory transport."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soxr
from pipecat.workers.runner import WorkerRunner

from agent.config import Settings, load_settings
from pipelines.conversation import AUDIO_IN_SAMPLE_RATE, build_conversation
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.frames import FrameDrawer, build_drawer
from renderer.player import AvatarPlayer
from speech.espeak import synthesize
from tests.helpers.drawers import FLAT_DRAWER, FlatDrawer, jaw_of
from tests.helpers.memory_transport import MemoryTransport
from tests.helpers.waiting import wait_until

SIZE = 64


def test_the_factory_builds_the_drawer_the_settings_name() -> None:
    settings = load_settings(overrides={"avatar": {"face": FLAT_DRAWER, "width": 96}})
    drawer = build_drawer(settings.avatar)
    assert isinstance(drawer, FlatDrawer) and isinstance(drawer, FrameDrawer)
    assert (drawer.width, drawer.height) == (96, 512)
    assert isinstance(build_drawer(AvatarSettings(device="cpu"), 64, 64), FrameDrawer)


@pytest.mark.parametrize(
    ("face", "message"),
    [
        ("cartoon", "unknown face drawer 'cartoon'; use one of stylised or an import path"),
        ("tests.helpers.nothing:drawer", "could not be imported"),
        ("tests.helpers.drawers:FLAT_DRAWER", "is not callable"),
    ],
)
def test_an_unknown_drawer_is_a_clear_error(face: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_drawer(AvatarSettings(face=face, device="cpu"))


async def test_the_player_draws_with_the_configured_drawer() -> None:
    settings = AvatarSettings(width=SIZE, height=SIZE, device="cpu", face=FLAT_DRAWER)
    player = AvatarPlayer(AvatarCore(settings, sample_rate=24000))
    pcm, rate = synthesize("Hello there, nice to meet you.")
    player.push_audio(np.asarray(pcm, np.int16).tobytes(), rate)
    player.flush()
    reply_frames = round(len(pcm) / rate * 25 + 0.5)
    try:
        frames = [frame async for frame in _take(player, reply_frames + 10)]
    finally:
        await player.aclose()
    assert all(f.size == (SIZE, SIZE) and _flat(f.image) for f in frames), "FlatDrawer's"
    speech = [jaw_of(f.image) for f in frames if f.audio]
    assert abs(len(speech) - reply_frames) <= 1, "one audio slice per frame period"
    assert max(speech) > 0.3, "the mouth opened with the voice"
    assert jaw_of(frames[-1].image) < 0.1, "and closed after it"


def _flat(image: bytes) -> bool:
    """One colour with FlatDrawer's green level: the stylised face has many colours."""
    pixels = np.frombuffer(image, np.uint8).reshape(-1, 3)
    return pixels[0, 1] == 128 and bool((pixels == pixels[0]).all())


async def _take(player: AvatarPlayer, n: int):  # type: ignore[no-untyped-def]
    async for frame in player:
        yield frame
        n -= 1
        if n == 0:
            return


@pytest.mark.slow
async def test_a_scripted_call_runs_with_a_second_drawer_and_no_other_change() -> None:
    """Timeline: the caller arrives (greeting), then asks a question at 5 s."""
    settings = Settings()
    settings.avatar = AvatarSettings(width=SIZE, height=SIZE, face=FLAT_DRAWER)
    conversation = build_conversation(
        MemoryTransport,
        stt=settings.stt,
        llm=settings.llm,
        tts=settings.tts,
        vad=settings.vad,
        avatar=settings.avatar,
    )
    transport = conversation.transport
    assert isinstance(transport, MemoryTransport)
    output = transport.output()
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(conversation.worker)
    run = asyncio.create_task(runner.run(), name="scripted-call")
    try:
        assert await wait_until(lambda: len(output.images) > 5, 20), "video started"
        await transport.connect()
        assert await wait_until(lambda: len(output.audio) > 50, 20), "the greeting is heard"
        await asyncio.sleep(5.0)
        heard_before = len(output.audio)
        pcm, rate = synthesize("Hello, who are you?")
        question = soxr.resample(np.asarray(pcm, np.int16), rate, AUDIO_IN_SAMPLE_RATE)
        transport.input().say(question)
        assert await wait_until(lambda: len(output.audio) > heard_before + 50, 20), "answered"
        await asyncio.sleep(1.0)
    finally:
        await conversation.worker.cancel(reason="test over")
        await asyncio.wait_for(run, 10)
    images = [frame for _, frame in output.images]
    assert all(f.size == (SIZE, SIZE) and _flat(f.image) for f in images), "FlatDrawer's"
    jaws = [jaw_of(f.image) for f in images]
    assert max(jaws) > 0.2, "the mouth moved with the voice"
    assert conversation.avatar.frames_drawn > 25
