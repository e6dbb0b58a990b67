"""With ``server.auth = "token"`` a call starts only with a valid, unused session token from
its own origin. Real HTTP on loopback; the offers' candidates lead nowhere, so the calls
they start never connect and are torn down."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from agent.browser import running_server
from agent.config import Settings, load_settings
from agent.server.access import SessionTokens
from agent.server.sessions import SessionManager
from tests.helpers.sdp import OFFER_SDP
from tests.helpers.waiting import wait_until

SITE = "https://shop.example"
OTHER = "https://blog.example"
SECRET = "a shared secret for every node"
API_KEY = "sk-visage-test-key-0123456789"
OFFER = {"sdp": OFFER_SDP, "type": "offer"}


def _settings(**server: object) -> Settings:
    overrides = {
        "auth": "token",
        "allowed_origins": [SITE, OTHER],
        "token_secret": SECRET,
        "max_sessions": 8,
        "connect_timeout_s": 2.0,
        **server,
    }
    settings = load_settings(overrides={"server": overrides}, environ={})
    settings.avatar.width = settings.avatar.height = 64
    return settings


@pytest.fixture
async def server() -> AsyncIterator[tuple[httpx.AsyncClient, SessionManager]]:
    async with running_server(_settings()) as (url, sessions):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield http, sessions
        await sessions.close_all()


async def _mint(http: httpx.AsyncClient, origin: str | None = SITE) -> str:
    response = await http.post("/api/session", headers={"Origin": origin} if origin else {})
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


async def _offer(
    http: httpx.AsyncClient, token: str | None, origin: str | None = SITE, **extra: object
) -> httpx.Response:
    body: dict[str, object] = {**OFFER, **extra}
    if token is not None:
        body["request_data"] = {"token": token}
    headers = {"Origin": origin} if origin else {}
    return await http.post("/api/offer", json=body, headers=headers)


async def test_without_a_token_no_call_starts(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    response = await _offer(http, None)
    assert response.status_code == 401
    error = response.json()["error"]
    assert "POST /api/session" in error and "Authorization: Bearer" in error
    assert sessions.count == 0


async def test_a_valid_token_starts_one_call_and_only_one(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    token = await _mint(http)
    first = await _offer(http, token)
    assert first.status_code == 200, first.text
    assert sessions.count == 1
    replay = await _offer(http, token)
    assert replay.status_code == 401 and "already used" in replay.json()["error"]
    assert sessions.count == 1
    # The call's own follow-ups need no new token: its pc_id and address are its owner's.
    pc_id = first.json()["pc_id"]
    end_of_candidates = {"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0}
    patch = await http.patch(
        "/api/offer",
        json={"pc_id": pc_id, "candidates": [end_of_candidates]},
        headers={"Origin": SITE},
    )
    assert patch.status_code == 200, patch.text
    assert await wait_until(lambda: sessions.count == 0, 5)


async def test_a_token_whose_call_did_not_start_can_be_used_again(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    token = await _mint(http)
    # Passes the server's checks; aiortc refuses it (no codec it knows): no call starts.
    refused = await _offer(http, token, sdp=OFFER_SDP.replace("opus/48000/2", "nonsense/1"))
    assert refused.status_code == 400 and "could not be negotiated" in refused.text
    assert (await _offer(http, token)).status_code == 200
    assert (await _offer(http, token)).status_code == 401
    assert sessions.count == 1


async def test_the_token_may_come_as_a_bearer_header(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    token = await _mint(http)
    response = await http.post(
        "/api/offer", json=OFFER, headers={"Origin": SITE, "Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200, response.text
    assert sessions.count == 1


async def test_turn_credentials_go_only_to_a_caller_holding_a_token(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    refused = await http.get("/api/ice-servers", headers={"Origin": SITE})
    assert refused.status_code == 401
    token = await _mint(http)
    bearer = {"Origin": SITE, "Authorization": f"Bearer {token}"}
    given = await http.get("/api/ice-servers", headers=bearer)
    assert given.status_code == 200 and given.json()["ice_servers"] == []
    # Checked, not spent: the offer that follows still starts the call.
    assert (await _offer(http, token)).status_code == 200
    assert sessions.count == 1


async def test_an_altered_token_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    token = await _mint(http)
    body, _, signature = token.partition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    # Re-signed for another origin by someone without the secret:
    other_body = SessionTokens(b"guess", ttl_s=60).mint(OTHER).partition(".")[0]
    for bad in (f"{body}.{flipped}", f"{other_body}.{signature}", "not-a-token"):
        response = await _offer(http, bad)
        assert response.status_code == 401, response.text
        assert "not valid" in response.json()["error"]
    assert sessions.count == 0
    assert (await _offer(http, token)).status_code == 200  # the real one still works


async def test_an_expired_token_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    minted_long_ago = SessionTokens(SECRET.encode(), ttl_s=60, clock=lambda: time.time() - 120)
    response = await _offer(http, minted_long_ago.mint(SITE))
    assert response.status_code == 401
    assert re.search(r"expired 6\d s ago", response.json()["error"]), response.text
    assert sessions.count == 0


async def test_a_token_from_another_origin_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    response = await _offer(http, await _mint(http, SITE), origin=OTHER)
    assert response.status_code == 403
    assert response.json()["error"] == (f"the session token was minted for {SITE}, not for {OTHER}")
    # A token minted by curl (no origin) cannot be used by a web page either.
    response = await _offer(http, await _mint(http, None), origin=SITE)
    assert response.status_code == 403 and "not a browser" in response.json()["error"]
    assert sessions.count == 0


async def test_pipecats_start_flow_needs_the_token_too(server) -> None:  # type: ignore[no-untyped-def]
    http, sessions = server
    refused = await http.post("/start", json={}, headers={"Origin": SITE})
    assert refused.status_code == 401 and "POST /api/session" in refused.json()["error"]
    token = await _mint(http)
    started = await http.post("/start", json={"body": {"token": token}}, headers={"Origin": SITE})
    assert started.status_code == 200, started.text
    path = f"/sessions/{started.json()['sessionId']}/api/offer"
    offer = {**OFFER, "requestData": {"token": token}}
    answered = await http.post(path, json=offer, headers={"Origin": SITE})
    assert answered.status_code == 200, answered.text
    again = await http.post(path, json=offer, headers={"Origin": SITE})
    assert again.status_code == 401 and "already used" in again.json()["error"]
    assert sessions.count == 1


async def test_with_an_api_key_only_the_sites_backend_mints_tokens() -> None:
    settings = _settings(api_key=API_KEY, session_rate_per_minute=2)
    async with running_server(settings) as (url, sessions):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            key = {"Authorization": f"Bearer {API_KEY}"}
            # A browser cannot mint its own, nor can a wrong key.
            for headers in ({"Origin": SITE}, {"Authorization": "Bearer guess"}):
                refused = await http.post("/api/session", headers=headers)
                assert refused.status_code == 401, refused.text
                assert "API key" in refused.json()["error"]
            # The backend names the origin; it must be one the server allows.
            evil = await http.post(
                "/api/session", json={"origin": "https://evil.example"}, headers=key
            )
            assert evil.status_code == 403, evil.text
            bad = await http.post("/api/session", json={"origin": "https://a/b"}, headers=key)
            assert bad.status_code == 400 and "field 'origin'" in bad.json()["error"]
            # The backend serves many users from one address: it is not rate limited.
            tokens = []
            for _ in range(4):
                minted = await http.post("/api/session", json={"origin": SITE}, headers=key)
                assert minted.status_code == 200, minted.text
                tokens.append(minted.json()["token"])
            assert (await _offer(http, tokens[0], origin=SITE)).status_code == 200
            assert (await _offer(http, tokens[1], origin=OTHER)).status_code == 403
            # Key guesses count against the address's rate limit.
            assert (await http.post("/api/session")).status_code == 429
        await sessions.close_all()
