"""The server under the abuse the internet brings: hijack attempts, half-open offers,
corrupt SDP, vanished callers, oversized and malformed bodies, a full house. Real HTTP and
WebRTC on loopback throughout."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from agent.browser import running_server
from agent.client import AvatarClient
from agent.config import Settings
from tests.helpers.drawers import SLOW_DRAWER
from tests.helpers.sdp import JSON_HEADERS, OFFER_SDP, offer_body
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[1]


def _settings(**server: object) -> Settings:
    settings = Settings()
    settings.avatar.width = settings.avatar.height = 256
    settings.server = settings.server.model_copy(update={"max_sessions": 4, **server})
    return settings


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _fd_kinds() -> list[str]:
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            kinds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return sorted(Counter(k.split(":")[0] for k in kinds).items())


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _post_offer(url: str, body: bytes = offer_body()) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{url}/api/offer", content=body, headers=JSON_HEADERS)


async def test_another_caller_cannot_restart_or_patch_a_call() -> None:
    async with running_server(_settings()) as (url, sessions):
        victim = AvatarClient(url)
        # Linux routes all of 127/8 to loopback: the attacker calls from another address.
        attacker_net = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        try:
            await victim.connect()
            pc_id = victim.pc_id
            assert pc_id is not None and re.search(r"[0-9a-f]{32}$", pc_id), pc_id
            async with httpx.AsyncClient(transport=attacker_net, timeout=10) as attacker:
                for path in ("/api/sessions", "/health", f"/api/calls/{quote(pc_id, safe='')}"):
                    response = await attacker.get(f"{url}{path}")
                    assert pc_id not in response.text and "turns" not in response.text, path
                restart = await attacker.post(
                    f"{url}/api/offer",
                    content=offer_body(pc_id=pc_id, restart_pc=True),
                    headers=JSON_HEADERS,
                )
                assert restart.status_code == 404, restart.text
                candidate = "candidate:1 1 udp 2122260223 203.0.113.9 40000 typ host"
                patch = await attacker.patch(
                    f"{url}/api/offer",
                    json={
                        "pc_id": pc_id,
                        "candidates": [
                            {"candidate": candidate, "sdp_mid": "0", "sdp_mline_index": 0}
                        ],
                    },
                )
                assert patch.status_code == 404, patch.text
            # The victim's call goes on, and its owner can still signal on it.
            heard = victim.received.audio_seconds()
            assert await wait_until(lambda: victim.received.audio_seconds() > heard + 1.0, 10)
            assert sessions.count == 1
            async with httpx.AsyncClient(timeout=10) as owner:
                own = await owner.get(f"{url}/api/calls/{quote(pc_id, safe='')}")
                assert own.status_code == 200 and own.json()["pc_id"] == pc_id
                end_of_candidates = {"candidate": "", "sdp_mid": "0", "sdp_mline_index": 0}
                own_patch = await owner.patch(
                    f"{url}/api/offer", json={"pc_id": pc_id, "candidates": [end_of_candidates]}
                )
                assert own_patch.status_code == 200, own_patch.text
        finally:
            await victim.close()
        assert await wait_until(lambda: sessions.count == 0, 10)


async def test_offers_that_never_connect_are_torn_down_and_leave_nothing_behind() -> None:
    settings = _settings(max_sessions=12, connect_timeout_s=3.0)
    async with running_server(settings) as (url, sessions):
        warm = AvatarClient(url)  # lazily made pools and imports exist before the baseline
        await warm.connect()
        await warm.close()
        assert await wait_until(lambda: sessions.count == 0, 10)
        await asyncio.sleep(0.5)
        fds, tasks = _open_fds(), len(asyncio.all_tasks())

        answers = await asyncio.gather(*(_post_offer(url) for _ in range(10)))
        assert [a.status_code for a in answers] == [200] * 10
        offered = time.monotonic()
        assert sessions.count == 10
        assert await wait_until(lambda: sessions.count == 0, settings.server.connect_timeout_s + 2)
        torn_down_s = time.monotonic() - offered
        assert torn_down_s <= settings.server.connect_timeout_s + 2
        assert await wait_until(lambda: _open_fds() <= fds, 2), (_open_fds(), fds, _fd_kinds())
        assert await wait_until(lambda: len(asyncio.all_tasks()) <= tasks, 2), [
            t.get_coro() for t in asyncio.all_tasks()
        ]

        caller = AvatarClient(url)
        try:
            await caller.connect()
            assert await wait_until(lambda: caller.received.audio_seconds() > 0.5, 10)
        finally:
            await caller.close()
        assert await wait_until(lambda: sessions.count == 0, 10)


def _without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


@pytest.mark.parametrize(
    ("sdp", "reason"),
    [
        (_without(OFFER_SDP, "a=fingerprint:"), "no DTLS fingerprint"),
        (OFFER_SDP.replace("a=mid:0", "a=mid:\x00\x00"), "control characters"),
        (OFFER_SDP.split("m=audio")[0], "no media section"),
    ],
)
async def test_corrupt_offers_get_400_and_no_call(sdp: str, reason: str) -> None:
    async with running_server(_settings()) as (url, sessions):
        response = await _post_offer(url, offer_body(sdp))
        assert response.status_code == 400 and reason in response.json()["error"]
        assert sessions.count == 0


async def test_a_caller_killed_mid_reply_is_freed_within_10_s() -> None:
    async with running_server(_settings()) as (url, sessions):
        caller = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.helpers.vanishing_caller",
            url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert caller.stdout is not None
            line = await asyncio.wait_for(caller.stdout.readline(), 60)
            assert line.strip() == b"HEARING", line
            assert sessions.count == 1
        finally:
            caller.send_signal(signal.SIGKILL)
            await caller.wait()
        killed = time.monotonic()
        assert await wait_until(lambda: sessions.count == 0, 10), sessions.describe()
        print(f"vanished caller freed after {time.monotonic() - killed:.1f} s")


async def test_a_declared_10_gb_body_is_refused_at_once_without_reading_it() -> None:
    async with running_server(_settings()) as (url, _sessions):
        host, port = url.removeprefix("http://").split(":")
        rss = _rss_mb()
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            sent = time.monotonic()
            writer.write(
                b"POST /api/offer HTTP/1.1\r\nHost: visage\r\n"
                b"Content-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n"
                + b"{"
                * 65536
            )
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 1.0)
            assert time.monotonic() - sent < 1.0
            assert status.split()[1] == b"413", status
        finally:
            writer.close()
        assert _rss_mb() - rss < 20


def _fuzz_bodies(rng: random.Random, count: int) -> list[tuple[bytes, str]]:
    """Malformed signalling bodies, with the content type each is sent as."""
    valid = offer_body(OFFER_SDP)
    lines = OFFER_SDP.splitlines(keepends=True)
    kinds = ["application/json"] * 6 + ["text/plain", ""]
    bodies: list[tuple[bytes, str]] = []
    junk_values: list[object] = [None, 0, -1, 1e308, True, "", "x" * 5000, [], {}, [[[]]]]
    for i in range(count):
        pick = i % 6
        if pick == 0:  # a truncated valid body
            body = valid[: rng.randrange(len(valid))]
        elif pick == 1:  # random bytes
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        elif pick == 2:  # right shape, wrong types
            data: dict[str, object] = {"sdp": OFFER_SDP, "type": "offer", "pc_id": None}
            data[rng.choice([*data, "candidates", "restart_pc"])] = rng.choice(junk_values)
            body = json.dumps(data).encode()
        elif pick == 3:  # SDP lines dropped, repeated or garbled
            mutated = list(lines)
            for _ in range(rng.randrange(1, 4)):
                j = rng.randrange(len(mutated))
                action = rng.randrange(3)
                if action == 0:
                    del mutated[j]
                elif action == 1:
                    mutated.insert(j, mutated[j])
                else:
                    chars = list(mutated[j])
                    chars[rng.randrange(len(chars))] = chr(rng.randrange(32, 0x3000))
                    mutated[j] = "".join(chars)
            body = offer_body("".join(mutated))
        elif pick == 4:  # bad trickle ICE
            candidate = rng.choice(["candidate:", "candidate:x y z", "a" * 300, "", None, 5])
            patch = {"pc_id": rng.choice(["x", "", None]), "candidates": [{"candidate": candidate}]}
            body = json.dumps(patch).encode()
        else:  # deep or huge JSON
            depth = rng.randrange(10, 3000)
            body = rng.choice([b"[" * depth + b"]" * depth, b'{"n": ' + b"7" * depth + b"}"])
        bodies.append((body, rng.choice(kinds)))
    return bodies


async def test_fuzzed_bodies_on_every_route_never_get_a_5xx() -> None:
    settings = _settings(max_sessions=256, connect_timeout_s=1.0)
    async with running_server(settings) as (url, sessions):
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            start_id = (await http.post("/start", json={})).json()["sessionId"]
            routes = [
                ("POST", "/api/offer"),
                ("PATCH", "/api/offer"),
                ("POST", f"/sessions/{start_id}/api/offer"),
                ("PATCH", f"/sessions/{start_id}/api/offer"),
                ("POST", "/start"),
                ("GET", "/api/calls/x"),
            ]
            statuses: dict[int, int] = {}
            for i, (body, kind) in enumerate(_fuzz_bodies(random.Random(11), 360)):
                method, path = routes[i % len(routes)]
                headers = {"content-type": kind} if kind else {}
                response = await http.request(method, path, content=body, headers=headers)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                assert response.status_code < 500, (method, path, body[:200], response.text)
                assert "Traceback" not in response.text
            print(f"fuzz statuses: {dict(sorted(statuses.items()))}")
        assert await wait_until(lambda: sessions.count == 0, 5)


async def test_one_call_over_the_limit_gets_503_with_retry_after() -> None:
    async with running_server(_settings(max_sessions=1)) as (url, sessions):
        first = await _post_offer(url)
        assert first.status_code == 200 and sessions.count == 1
        second = await _post_offer(url)
        assert second.status_code == 503
        assert int(second.headers["retry-after"]) > 0
        assert "max_sessions" not in second.text
        await sessions.close_all()


async def test_no_call_is_admitted_while_one_renders_late_at_the_lowest_quality() -> None:
    settings = _settings()
    settings.avatar.face = SLOW_DRAWER
    async with running_server(settings) as (url, sessions):
        caller = AvatarClient(url)
        try:
            await caller.connect()
            assert caller.pc_id is not None
            session = sessions.owned(caller.pc_id, "127.0.0.1")
            ladder = session.conversation.avatar.ladder
            assert ladder is not None
            assert await wait_until(lambda: ladder.saturated, 30), ladder.level.describe()
            refused = await _post_offer(url)
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
            assert sessions.count == 1
        finally:
            await caller.close()
        assert await wait_until(lambda: sessions.count == 0, 10)
