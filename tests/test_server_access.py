"""Who may use the server: origins (CORS, frame-ancestors), session tokens as data, and the
per-address rate limit on minting them. HTTP through the app in-process; calls that
spend tokens are in test_session_tokens.py."""

from __future__ import annotations

import httpx
import pytest

from agent.config import ConfigError, Settings, load_settings
from agent.server.access import (
    OriginPolicy,
    RateLimiter,
    SessionTokens,
    TokenError,
    normalise_origin,
)
from agent.server.app import create_app
from agent.server.gate import open_server_warning

SITE = "https://shop.example"
EVIL = "https://evil.example"
SELF = "http://visage.test"  # the origin the in-process client talks to


class Clock:
    """A hand-moved clock."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(**server: object) -> Settings:
    return load_settings(overrides={"server": server}, environ={})


async def _client(settings: Settings, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(settings), client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url=SELF)


# --- origins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443/", "https://shop.example"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("*", "*"),
    ],
)
def test_origins_are_normalised_as_browsers_send_them(given: str, expected: str) -> None:
    assert normalise_origin(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("https://shop.example/widget", "more than an origin"),
        ("https://*.example", "wildcards are not supported"),
        ("shop.example", "not an origin"),
        ("ftp://shop.example", "not an origin"),
        ("https://shop.example:99999", "not an origin"),
        ("https://user@shop.example", "more than an origin"),
    ],
)
def test_a_setting_that_is_not_an_origin_is_refused_with_the_reason(
    given: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=reason):
        _settings(allowed_origins=[given])


def test_origins_can_be_given_as_one_comma_separated_string() -> None:
    settings = load_settings(
        environ={"VISAGE_SERVER__ALLOWED_ORIGINS": "https://a.example, https://B.example:443"}
    )
    assert settings.server.allowed_origins == ["https://a.example", "https://b.example"]


def test_the_policy_allows_its_own_origin_listed_ones_and_non_browsers() -> None:
    policy = OriginPolicy([SITE])
    assert policy.allows("", SELF)  # no Origin: not a browser
    assert policy.allows(SELF, SELF)
    assert policy.allows(SITE, SELF)
    assert not policy.allows(EVIL, SELF)
    assert not policy.allows("null", SELF)
    assert policy.frame_ancestors() == f"'self' {SITE}"
    assert OriginPolicy(["*"]).allows(EVIL, SELF)
    assert OriginPolicy(["*"]).frame_ancestors() == "*"


async def test_a_disallowed_origin_is_refused_with_a_reason_the_page_can_read() -> None:
    async with await _client(_settings(allowed_origins=[SITE])) as http:
        for method, path in (("POST", "/api/session"), ("POST", "/api/offer"), ("POST", "/start")):
            response = await http.request(method, path, headers={"Origin": EVIL}, json={})
            assert response.status_code == 403, (path, response.text)
            assert response.json() == {"error": f"origin {EVIL} is not allowed to use this server"}
            # Without this header the browser would hide the reason from the widget.
            assert response.headers["access-control-allow-origin"] == EVIL


async def test_by_default_only_the_servers_own_origin_may_call() -> None:
    async with await _client(Settings()) as http:
        own = await http.post("/api/session", headers={"Origin": SELF})
        assert own.status_code == 200, own.text
        other = await http.post("/api/session", headers={"Origin": SITE})
        assert other.status_code == 403
        assert (await http.post("/api/session")).status_code == 200  # curl, a backend


async def test_an_allowed_origin_gets_cors_headers_and_a_preflight() -> None:
    async with await _client(_settings(allowed_origins=[SITE])) as http:
        preflight = await http.options(
            "/api/offer",
            headers={
                "Origin": SITE,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == SITE
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "content-type" in allowed and "authorization" in allowed

        minted = await http.post("/api/session", headers={"Origin": SITE})
        assert minted.status_code == 200
        assert minted.headers["access-control-allow-origin"] == SITE
        assert "origin" in minted.headers["vary"].lower()
        assert "access-control-allow-credentials" not in minted.headers


async def test_a_refused_origins_preflight_is_answered_so_the_refusal_can_be_read() -> None:
    async with await _client(_settings(allowed_origins=[SITE])) as http:
        preflight = await http.options(
            "/api/session", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == EVIL


async def test_only_allowed_sites_may_frame_the_page_and_anyone_may_load_the_scripts() -> None:
    async with await _client(_settings(allowed_origins=[SITE])) as http:
        page = await http.get("/")
        assert page.headers["content-security-policy"] == f"frame-ancestors 'self' {SITE}"
        for script in ("/static/call.js", "/embed.js"):
            response = await http.get(script, headers={"Origin": EVIL})
            assert response.status_code == 200, script
            assert response.headers["access-control-allow-origin"] == "*", script
            assert "content-security-policy" not in response.headers
    async with await _client(Settings()) as http:
        assert (await http.get("/")).headers["content-security-policy"] == "frame-ancestors 'self'"


# --- tokens as data ----------------------------------------------------------------------


def test_a_token_works_once_from_its_origin() -> None:
    tokens = SessionTokens(b"k" * 32, ttl_s=60)
    token = tokens.mint(SITE)
    with pytest.raises(TokenError, match=r"minted for https://shop\.example") as wrong:
        tokens.redeem(token, EVIL)
    assert wrong.value.status == 403
    tokens.check(token, SITE)  # checking does not use it
    tokens.redeem(token, SITE)
    with pytest.raises(TokenError, match="already used") as again:
        tokens.redeem(token, SITE)
    assert again.value.status == 401


def test_an_expired_or_altered_token_is_refused() -> None:
    clock = Clock()
    tokens = SessionTokens(b"k" * 32, ttl_s=60, clock=clock)
    token = tokens.mint(SITE)
    body, _, signature = token.partition(".")
    forged = SessionTokens(b"x" * 32, ttl_s=60).mint(SITE)
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for bad in (f"{body}.{flipped}", forged, body, "", "a.b.c", token[:-3]):
        with pytest.raises(TokenError, match="not valid") as refused:
            tokens.redeem(bad, SITE)
        assert refused.value.status == 401
    clock.now += 61
    with pytest.raises(TokenError, match="expired 1 s ago"):
        tokens.redeem(token, SITE)


def test_used_tokens_are_forgotten_once_expired_and_their_number_is_bounded() -> None:
    clock = Clock()
    tokens = SessionTokens(b"k" * 32, ttl_s=60, clock=clock, max_used=3)
    for _ in range(3):
        tokens.redeem(tokens.mint(""), "")
    with pytest.raises(TokenError, match="too many calls") as full:
        tokens.redeem(tokens.mint(""), "")
    assert full.value.status == 503
    clock.now += 61
    tokens.redeem(tokens.mint(""), "")
    assert tokens.remembered == 1


def test_tokens_from_one_secret_work_on_every_node_that_shares_it() -> None:
    token = SessionTokens(b"shared" * 6, ttl_s=60).mint(SITE)
    SessionTokens(b"shared" * 6, ttl_s=60).redeem(token, SITE)


# --- the rate limit on minting ---------------------------------------------------------


def test_the_rate_limiter_slides_and_says_how_long_to_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(3, window_s=60, clock=clock)
    assert [limiter.hit("a") for _ in range(3)] == [None, None, None]
    assert limiter.hit("a") == 60
    assert limiter.hit("b") is None  # another address has its own budget
    clock.now += 30
    assert limiter.hit("a") == 30
    clock.now += 30
    assert limiter.hit("a") is None


def test_the_rate_limiter_tracks_a_bounded_number_of_addresses() -> None:
    clock = Clock()
    limiter = RateLimiter(2, window_s=60, clock=clock, max_keys=100)
    for i in range(10_000):
        limiter.hit(f"10.0.{i // 256}.{i % 256}")
    assert limiter.tracked <= 100
    clock.now += 61
    limiter.hit("192.0.2.1")
    assert limiter.tracked == 1  # the idle ones are forgotten


async def test_minting_over_the_rate_gets_429_with_retry_after() -> None:
    settings = _settings(session_rate_per_minute=3)
    app = create_app(settings)
    transports = {
        address: httpx.ASGITransport(app=app, client=(address, 40000))
        for address in ("127.0.0.1", "127.0.0.2")
    }
    async with httpx.AsyncClient(transport=transports["127.0.0.1"], base_url=SELF) as http:
        statuses = [(await http.post("/api/session")).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        refused = await http.post("/api/session")
        assert refused.status_code == 429
        wait = int(refused.headers["retry-after"])
        assert 0 < wait <= 60
        assert refused.json()["retry_after"] == wait
        assert f"try again in {wait} s" in refused.json()["error"]
    async with httpx.AsyncClient(transport=transports["127.0.0.2"], base_url=SELF) as other:
        assert (await other.post("/api/session")).status_code == 200


async def test_a_minted_token_says_when_it_expires_and_is_not_cached() -> None:
    async with await _client(_settings(token_ttl_s=30)) as http:
        response = await http.post("/api/session")
        body = response.json()
        assert set(body) == {"token", "expires_in"} and body["expires_in"] == 30
        assert response.headers["cache-control"] == "no-store"


# --- the start-up warning ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "auth", "warns"),
    [
        ("127.0.0.1", "none", False),
        ("localhost", "none", False),
        ("::1", "none", False),
        ("0.0.0.0", "none", True),
        ("visage.example.com", "none", True),
        ("0.0.0.0", "token", False),
    ],
)
def test_serving_beyond_loopback_without_auth_is_warned_about(
    host: str, auth: str, warns: bool
) -> None:
    warning = open_server_warning(_settings(host=host, auth=auth).server)
    assert (warning is not None) == warns
    if warning:
        assert "server.auth = 'token'" in warning
