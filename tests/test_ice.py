"""ICE servers: settings from every source, TURN credentials derived as coturn expects, and
what the browser (GET /api/ice-servers) and the server's peer connections get."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import httpx
import pytest
from aiortc.rtcicetransport import connection_kwargs

from agent.config import ConfigError, ServerSettings, Settings, describe_settings, load_settings
from agent.server.app import create_app
from agent.server.ice import (
    browser_ice_servers,
    resolve_ice_servers,
    server_ice_servers,
    turn_credential,
)

TURN = "turn:turn.example.com:3478?transport=udp"
STUN = "stun:stun.example.com:3478"


def _server(**values: object) -> ServerSettings:
    return load_settings(None, {"server": values}, {}).server


def test_a_derived_credential_is_coturns_rest_api_formula() -> None:
    # Pinned: `echo -n 1700000600:alice | openssl dgst -sha1 -hmac north -binary | base64`.
    cred = turn_credential("north", 600, "alice", now=1_700_000_000.7)
    assert cred.username == "1700000600:alice"
    assert cred.credential == "gthUwOpcRoLI0MMCziCEBOWYnpo="
    assert cred.expires_at == 1_700_000_600
    # The same formula spelt out: base64(HMAC-SHA1(secret, "<expiry>:<label>")).
    digest = hmac.new(b"s3cret", b"1700000060:x", hashlib.sha1).digest()
    assert turn_credential("s3cret", 60, "x", now=1_700_000_000).credential == (
        base64.b64encode(digest).decode()
    )


def test_turn_servers_get_fresh_credentials_stun_and_static_ones_are_kept() -> None:
    server = _server(
        ice_servers=[
            {"urls": STUN},
            {"urls": [TURN, "turn:turn.example.com:3478?transport=tcp"]},
            {"urls": ["turns:other.example.com:5349"], "username": "u", "credential": "pw"},
        ],
        turn_secret="north",
        turn_ttl_s=300,
    )
    stun, turn, static = resolve_ice_servers(server, "label", now=1_000_000)
    assert (stun.urls, stun.username, stun.credential) == ([STUN], None, None)
    assert turn.username == "1000300:label"
    assert turn.credential == turn_credential("north", 300, "label", now=1_000_000).credential
    assert (static.username, static.credential) == ("u", "pw")

    body = browser_ice_servers(server, now=1_000_000)
    assert body["expires_in"] == 300
    assert body["ice_servers"][0] == {"urls": [STUN]}
    browser_turn = body["ice_servers"][1]
    assert browser_turn["urls"] == [TURN, "turn:turn.example.com:3478?transport=tcp"]
    assert browser_turn["username"].startswith("1000300:visage-web-")
    assert body["ice_servers"][2] == {
        "urls": ["turns:other.example.com:5349"],
        "username": "u",
        "credential": "pw",
    }
    # Each request is a user of its own in the TURN server's logs.
    again = browser_ice_servers(server, now=1_000_000)["ice_servers"][1]["username"]
    assert again != browser_turn["username"]


def test_the_servers_peer_connections_get_them_in_aiortcs_form() -> None:
    server = _server(ice_servers=[{"urls": [STUN]}, {"urls": [TURN]}], turn_secret="north")
    ice = server_ice_servers(server, now=1_000_000)
    assert ice[1].username == "1000600:visage-server"
    # aiortc reads them as it will for each call: its first STUN and first TURN server.
    kwargs = connection_kwargs(ice)
    assert kwargs["stun_server"] == ("stun.example.com", 3478)
    assert kwargs["turn_server"] == ("turn.example.com", 3478)
    assert (kwargs["turn_username"], kwargs["turn_transport"]) == (ice[1].username, "udp")
    assert kwargs["turn_password"] == turn_credential("north", 600, "visage-server", 1e6).credential
    assert server_ice_servers(ServerSettings()) == []


@pytest.mark.parametrize(
    "value",
    [
        '[{"urls": ["turn:turn.example.com:3478?transport=udp"]}]',  # JSON
        '[{urls = ["turn:turn.example.com:3478?transport=udp"]}]',  # a TOML value
    ],
)
def test_env_and_set_flags_take_a_list_as_json_or_toml(value: str) -> None:
    from_env = load_settings(
        None,
        None,
        {"VISAGE_SERVER__ICE_SERVERS": value, "VISAGE_SERVER__TURN_SECRET": "north"},
    )
    from_flag = load_settings(None, {"server": {"ice_servers": value, "turn_secret": "x"}}, {})
    for settings in (from_env, from_flag):
        assert settings.server.ice_servers[0].urls == [TURN]


def test_a_toml_file_configures_them_and_config_show_masks_the_secrets(tmp_path: Path) -> None:
    config = tmp_path / "visage.toml"
    config.write_text(
        "[server]\n"
        f'ice_servers = [{{urls = ["{STUN}"]}}, {{urls = "{TURN}"}},\n'
        '  {urls = ["turn:b.example.com"], username = "static", credential = "hunter2"}]\n'
        'turn_secret = "north-secret"\n'
        "turn_ttl_s = 3600\n"
    )
    settings = load_settings(config, None, {})
    assert [s.urls for s in settings.server.ice_servers] == [
        [STUN],
        [TURN],
        ["turn:b.example.com"],
    ]
    assert settings.server.turn_ttl_s == 3600
    text = describe_settings(settings)
    assert "north-secret" not in text and "hunter2" not in text
    assert "turn_secret = '***'" in text


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"ice_servers": [{"urls": [TURN]}]}, r"TURN server without username and credential"),
        ({"ice_servers": [{"urls": ["http://x"]}]}, r"'http://x' is not a STUN/TURN URL"),
        ({"ice_servers": [{"urls": ["turn:x:0"]}]}, r"port 0 is not between 1 and 65535"),
        ({"ice_servers": [{"urls": ["stun:x?transport=udp"]}]}, r"STUN URL takes no"),
        ({"ice_servers": [{"urls": ["turn:x?transport=sctp"]}]}, r"udp or tcp, not 'sctp'"),
        ({"ice_servers": [{"urls": []}]}, r"ice_servers\.0\.urls: List should have at least"),
        (
            {"ice_servers": [{"urls": [TURN], "username": "u"}]},
            r"give both username and credential",
        ),
        ({"ice_servers": "[{urls = "}, r"server\.ice_servers: '\[\{urls = ' is neither JSON"),
        ({"turn_ttl_s": 10}, r"server\.turn_ttl_s: Input should be greater than or equal"),
    ],
)
def test_a_bad_ice_setting_says_what_is_wrong(server: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, {"server": server}, {})


async def test_the_route_mints_fresh_credentials_for_each_request() -> None:
    settings = Settings()
    settings.server = _server(ice_servers=[{"urls": [TURN]}], turn_secret="north")
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://visage.test") as http:
        first, second = await http.get("/api/ice-servers"), await http.get("/api/ice-servers")
        empty = create_app(Settings())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=empty), base_url="http://visage.test"
        ) as bare:
            none = await bare.get("/api/ice-servers")
    assert first.status_code == second.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    one, two = first.json()["ice_servers"][0], second.json()["ice_servers"][0]
    assert one["urls"] == [TURN] and one["username"] != two["username"]
    expiry, _, label = one["username"].partition(":")
    assert label.startswith("visage-web-") and int(expiry) > 0
    assert one["credential"] == turn_credential("north", 0, label, now=int(expiry)).credential
    assert first.json()["expires_in"] == 600
    assert none.json() == {"ice_servers": [], "expires_in": 600}
