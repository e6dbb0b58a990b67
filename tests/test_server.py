"""The HTTP side: page, health, and signalling that answers bad input with 400, never 500."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import web
from agent.config import Settings
from agent.server.app import create_app
from agent.server.sessions import SessionLimitError
from tests.helpers.sdp import JSON_HEADERS, OFFER_SDP

WEB_DIR = Path(web.__file__).parent
#: Passes the server's checks; aiortc refuses it (no codec it knows).
SDP_WITHOUT_CODEC = OFFER_SDP.replace("opus/48000/2", "nonsense/1")


@pytest.fixture
async def http() -> httpx.AsyncClient:
    app = create_app(Settings())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://visage.test"
    ) as client:
        yield client


async def test_page_and_health(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200 and "<video" in page.text
    for asset in (
        "/static/app.js",
        "/static/call.js",
        "/static/controller.js",
        "/static/stats.js",
        "/static/style.css",
    ):
        assert (await http.get(asset)).status_code == 200, asset
    embed = await http.get("/embed.js")
    assert embed.headers["content-type"].startswith("text/javascript")
    assert "customElements.define" in embed.text
    assert (await http.get("/widget.js")).text == embed.text  # the older snippet's address
    health = (await http.get("/health")).json()
    assert health["status"] == "ok" and health["sessions"] == 0 and health["max_sessions"] >= 1


def test_web_files_load_nothing_from_outside() -> None:
    pattern = re.compile(r"""(?:src|href)\s*=\s*["']https?://|import\s+.*from\s+["']https?://""")
    for path in WEB_DIR.iterdir():
        if path.suffix in (".html", ".js", ".css"):
            text = path.read_text()
            assert not pattern.search(text), f"{path.name} loads a remote resource"
            assert "cdn" not in text.lower(), f"{path.name} mentions a CDN"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"type": "offer"}',
        b'{"sdp": "hello", "type": "offer"}',
        b'{"sdp": "v=0", "type": "answer"}',
    ],
)
async def test_malformed_offer_gets_400_json(http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post("/api/offer", content=body, headers=JSON_HEADERS)
    assert response.status_code == 400
    assert response.json()["error"]
    assert (await http.get("/health")).status_code == 200


async def test_sdp_the_webrtc_stack_rejects_gets_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/offer", json={"sdp": SDP_WITHOUT_CODEC, "type": "offer"})
    assert response.status_code == 400, response.text
    assert "could not be negotiated" in response.json()["error"]
    assert (await http.get("/health")).json()["sessions"] == 0


async def test_patch_for_unknown_peer_is_404(http: httpx.AsyncClient) -> None:
    response = await http.patch("/api/offer", json={"pc_id": "nope", "candidates": []})
    assert response.status_code == 404 and "no call with this pc_id" in response.json()["error"]


async def test_pipecat_start_flow_routes(http: httpx.AsyncClient) -> None:
    session_id = (await http.post("/start", json={})).json()["sessionId"]
    bad = await http.post(f"/sessions/{session_id}/api/offer", content=b"{}", headers=JSON_HEADERS)
    assert bad.status_code == 400 and "missing field 'sdp'" in bad.json()["error"]
    unknown = await http.post("/sessions/nope/api/offer", content=b"{}", headers=JSON_HEADERS)
    assert unknown.status_code == 404 and "POST /start" in unknown.json()["error"]


class _BrokenSessions:
    """Stands in for the session manager: every call fails the way a bug or a full server
    would, with details the caller must not see."""

    count = 0

    def owned(self, _pc_id: str, _owner: str) -> object:
        raise RuntimeError("cannot read /srv/visage/secret.toml")

    async def offer(self, _request: object, _owner: str) -> dict[str, str]:
        raise SessionLimitError("all 4 call slots are busy; raise server.max_sessions")

    async def close_all(self) -> None:
        pass


@pytest.fixture
async def broken() -> httpx.AsyncClient:
    app = create_app(Settings(), sessions=_BrokenSessions())  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
        base_url="http://visage.test",
    ) as client:
        yield client


async def test_an_internal_error_shows_an_error_id_and_nothing_else(broken) -> None:  # type: ignore[no-untyped-def]
    response = await broken.get("/api/calls/someone")
    assert response.status_code == 500
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{12}", body["error_id"])
    assert body["error_id"] in body["error"]
    assert "secret" not in response.text and "RuntimeError" not in response.text


async def test_a_full_server_says_when_to_retry_and_not_how_it_is_set_up(broken) -> None:  # type: ignore[no-untyped-def]
    offer = {"sdp": SDP_WITHOUT_CODEC, "type": "offer"}
    response = await broken.post("/api/offer", json=offer)
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    assert "max_sessions" not in response.text and "slots" not in response.text


async def test_an_oversized_body_is_refused_from_its_declared_length(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "/api/offer", content=b"{}", headers={**JSON_HEADERS, "content-length": str(10 * 1024**3)}
    )
    assert response.status_code == 413 and "larger than" in response.json()["error"]


async def test_an_oversized_body_without_a_length_is_cut_off_while_read(
    http: httpx.AsyncClient,
) -> None:
    sent = 0

    async def endless():  # type: ignore[no-untyped-def]
        nonlocal sent
        while sent < 50 * 1024**2:
            sent += 64 * 1024
            yield b" " * (64 * 1024)

    response = await http.post("/api/offer", content=endless(), headers=JSON_HEADERS)
    assert response.status_code == 413
    assert sent < 2 * 1024**2, f"stopped reading early, not after {sent} bytes"
