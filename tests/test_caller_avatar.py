"""A caller may choose the face of its call (``request_data.avatar``, the widget's
``avatar`` attribute): the built-in stylised face or a stored portrait, never anything else."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from agent.browser import running_server
from agent.config import Settings, load_settings
from agent.server.sessions import call_settings
from agent.server.signalling import SignallingError
from tests.helpers.sdp import OFFER_SDP


def _settings(avatars: Path, **server: object) -> Settings:
    return load_settings(overrides={"server": server, "avatar": {"dir": str(avatars)}}, environ={})


def _store(avatars: Path, name: str) -> None:
    (avatars / name).mkdir(parents=True)
    (avatars / name / "avatar.json").write_text("{}")


def test_a_stored_avatar_or_the_stylised_face_may_be_chosen(tmp_path: Path) -> None:
    _store(tmp_path, "astronaut")
    settings = _settings(tmp_path)
    assert call_settings(settings, None) is settings
    assert call_settings(settings, {"token": "x"}) is settings
    assert call_settings(settings, {"avatar": "stylised"}) is settings  # already the face
    chosen = call_settings(settings, {"avatar": "astronaut"})
    assert chosen.avatar.face == "astronaut" and settings.avatar.face == "stylised"
    assert chosen.server == settings.server and chosen.avatar.dir == settings.avatar.dir
    back = call_settings(chosen, {"avatar": "stylised"})
    assert back.avatar.face == "stylised"


@pytest.mark.parametrize(
    ("wanted", "error"),
    [
        ("nobody", "no avatar named 'nobody'"),
        ("tests.helpers.drawers:FlatDrawer", "is not an avatar name"),  # never an import
        ("../etc", "is not an avatar name"),
        (42, "must be the name of an avatar"),
    ],
)
def test_anything_else_is_refused(tmp_path: Path, wanted: object, error: str) -> None:
    with pytest.raises(SignallingError, match=error):
        call_settings(_settings(tmp_path), {"avatar": wanted})


def test_the_operator_can_keep_the_face_fixed(tmp_path: Path) -> None:
    _store(tmp_path, "astronaut")
    settings = _settings(tmp_path, caller_avatar=False)
    assert call_settings(settings, {"avatar": "astronaut"}) is settings
    assert call_settings(settings, {"avatar": "nobody"}) is settings


async def test_an_offer_for_an_unknown_avatar_gets_a_400_and_no_call(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_sessions=2, connect_timeout_s=2.0)
    settings.avatar.width = settings.avatar.height = 64
    async with running_server(settings) as (url, sessions):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            offer = {"sdp": OFFER_SDP, "type": "offer", "request_data": {"avatar": "nobody"}}
            response = await http.post("/api/offer", json=offer)
            assert response.status_code == 400
            assert "no avatar named 'nobody'" in response.json()["error"]
            assert sessions.count == 0
        await sessions.close_all()
