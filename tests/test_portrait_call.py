"""A real call with a portrait avatar: the photo, not the stylised face, talks to the caller
at the avatar's frame rate, and a missing portrait stops `visage serve` before it listens."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skdata
from PIL import Image

from agent.browser import running_server
from agent.cli import main
from agent.client import AvatarClient
from agent.config import Settings
from renderer.portrait.avatar import load_avatar, prepare_avatar, save_avatar
from tests.helpers.waiting import wait_until

SIZE = 256


@pytest.fixture(scope="module")
def avatars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("avatars")
    photo = folder.parent / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    save_avatar(folder, prepare_avatar(photo, "astronaut"))
    return folder


async def test_a_call_streams_the_portrait_talking(avatars: Path) -> None:
    settings = Settings()
    settings.avatar.width = settings.avatar.height = SIZE
    settings.avatar.face = "astronaut"
    settings.avatar.dir = avatars
    async with running_server(settings) as (url, sessions):
        client = AvatarClient(url, keep_video=True)
        try:
            await client.connect()
            assert await wait_until(lambda: client.received.audio_seconds() > 2.0, 20)
            await asyncio.sleep(1.0)
            video = client.received.video
            span = video[-1][0] - video[0][0]
            # 25 fps sent; the bound is loose because this test also decodes every frame
            # (speed is measured by `visage bench render` and `visage bench load`).
            assert (len(video) - 1) / span > 15, f"{len(video)} frames in {span:.1f} s"
            frames = [rgb for _, _, rgb, _, _ in video[-25:] if rgb is not None]
        finally:
            await client.close()
        assert await wait_until(lambda: sessions.count == 0, 10)
    # The frames are the avatar's photo (the crop around her face that it stores), moving.
    stored = load_avatar(avatars, "astronaut").image
    photo = np.asarray(Image.fromarray(stored).resize((SIZE, SIZE)), dtype=np.float32)
    first = frames[0].astype(np.float32)
    assert np.abs(first - photo).mean() < 12, np.abs(first - photo).mean()
    changes = [np.abs(a.astype(np.int16) - b).mean() for a, b in pairwise(frames)]
    assert max(changes) > 0.5, "the portrait should move while it speaks"


def test_serve_stops_at_once_for_a_missing_portrait(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--avatar", "nobody", "--set", f"avatar.dir={tmp_path}"]) == 2
    assert "unknown face drawer 'nobody'" in capsys.readouterr().err
