"""TURN for real: coturn's turnserver on loopback accepts the credentials Visage derives,
and a call from Chromium restricted to relay candidates connects and carries the avatar's
voice and face through the relay.

Needs Debian's coturn (``make test`` installs it); without ``turnserver`` these tests
are skipped, and say so.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import stun, turn

from agent.browser import chromium_page, page_snapshot, running_server, write_speech_wav
from agent.config import load_settings
from agent.server.ice import turn_credential
from tests.helpers.coturn import TURNSERVER, Coturn, running_coturn
from tests.helpers.waiting import wait_until

if TURNSERVER is None:
    pytest.skip(
        "TURN RELAY TESTS NOT RUN: coturn's `turnserver` is not installed "
        "(`make test` installs it; or `apt-get install coturn`)",
        allow_module_level=True,
    )

#: What the page reads from its RTCPeerConnection: the selected candidate pair and the
#: media received.
PEER_STATS_JS = """async () => {
  const pc = window.visage.call.pc;
  if (!pc) return null;
  const stats = await pc.getStats();
  const byId = new Map();
  stats.forEach((s) => byId.set(s.id, s));
  let pair = null;
  const localTypes = [], inbound = {};
  stats.forEach((s) => {
    if (s.type === "transport" && s.selectedCandidatePairId) {
      pair = byId.get(s.selectedCandidatePairId);
    }
    if (s.type === "local-candidate") localTypes.push(s.candidateType);
    if (s.type === "inbound-rtp") inbound[s.kind] = {
      bytes: s.bytesReceived, packets: s.packetsReceived,
      framesDecoded: s.framesDecoded ?? null, audioEnergy: s.totalAudioEnergy ?? null,
    };
  });
  const candidate = (id) => {
    const c = id && byId.get(id);
    return c ? {type: c.candidateType, address: c.address, port: c.port,
                relayProtocol: c.relayProtocol ?? null, url: c.url ?? null} : null;
  };
  return {
    connection: pc.connectionState,
    policy: pc.getConfiguration().iceTransportPolicy,
    pair: pair ? {state: pair.state, bytesReceived: pair.bytesReceived} : null,
    local: candidate(pair && pair.localCandidateId),
    remote: candidate(pair && pair.remoteCandidateId),
    localTypes, inbound,
  };
}"""


#: coturn's line, when a relay is released, on what it carried from and to the peers.
PEER_USAGE = re.compile(
    r"peer usage: realm=<[^>]*>, username=<(?P<user>[^>]*)>, "
    r"rp=(?P<rp>\d+), rb=(?P<rb>\d+), sp=(?P<sp>\d+), sb=(?P<sb>\d+)"
)


def _browser_relay_bytes(log: str) -> tuple[int, int]:
    """The bytes the busiest of the browser's relays got from the peer (the server) and
    sent to it, from coturn's log; (0, 0) before a relay was released."""
    carried = [
        (int(m["rb"]), int(m["sb"]))
        for m in PEER_USAGE.finditer(log)
        if ":visage-web-" in m["user"]
    ]
    return max(carried, default=(0, 0))


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    with running_coturn(tmp_path) as server:
        yield server


class _Sink(asyncio.DatagramProtocol):
    """A protocol for the relayed socket; nothing is sent to it here."""


async def _allocate(coturn: Coturn, username: str, password: str) -> tuple[str, int]:
    """Open a relay on ``coturn`` with these credentials (aioice's TURN client); returns
    the relayed address, or raises what the server answered."""
    transport, _ = await asyncio.wait_for(
        turn.create_turn_endpoint(_Sink, ("127.0.0.1", coturn.port), username, password), 5
    )
    try:
        address: tuple[str, int] = transport.get_extra_info("sockname")
        return address
    finally:
        transport.close()


async def test_coturn_accepts_a_derived_credential_and_refuses_bad_ones(coturn: Coturn) -> None:
    good = turn_credential(coturn.secret, 600, "unit")
    host, port = await _allocate(coturn, good.username, good.credential)
    assert host == "127.0.0.1" and port > 0

    tampered = good.credential[:-6] + ("AAAAA=" if good.credential[-6:] != "AAAAA=" else "BBBBB=")
    other_secret = turn_credential("not-the-secret", 600, "unit")
    expired = turn_credential(coturn.secret, 600, "unit", now=time.time() - 601)
    longer = f"{good.username[:-4]}unit2"  # the user changed, the credential did not
    for username, password in (
        (good.username, tampered),
        (other_secret.username, other_secret.credential),
        (expired.username, expired.credential),
        (longer, good.credential),
    ):
        with pytest.raises(stun.TransactionFailed, match="401"):
            await _allocate(coturn, username, password)


@pytest.mark.browser
@pytest.mark.slow
async def test_a_relay_only_call_connects_and_carries_media_through_turn(
    coturn: Coturn, tmp_path: Path
) -> None:
    started = time.monotonic()
    # Configured the way a user would with --set: a TOML value, the secret coturn has.
    settings = load_settings(
        None,
        {
            "server": {
                "ice_servers": f'[{{urls = ["{coturn.url}"]}}]',
                "turn_secret": coturn.secret,
            },
            "avatar": {"width": "256", "height": "256"},
            "tts": {"engine": "espeak"},
        },
        {},
    )
    wav = tmp_path / "quiet.wav"
    write_speech_wav(wav, [], lead_s=40.0, gap_s=0.0)  # a silent microphone: the greeting plays
    async with running_server(settings) as (url, sessions), chromium_page(wav) as page:
        # ?relay=1: the page asks for iceTransportPolicy "relay": the browser offers and
        # uses only candidates on the TURN server, so nothing flows unless it relays.
        await page.goto(f"{url}/?autostart=1&relay=1&audio_processing=0")
        peer: dict[str, Any] | None = None
        snapshot: dict[str, Any] = {}
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            peer = await page.evaluate(PEER_STATS_JS)
            snapshot = await page_snapshot(page)
            inbound = (peer or {}).get("inbound", {})
            if (snapshot["reply"] or {}).get("peakRms", 0) > 0.05 and (
                inbound.get("video") or {}
            ).get("framesDecoded", 0) >= 50:
                break
        pc_id = await page.evaluate("() => window.visage.call.pcId")
        server_ice = sessions.owned(pc_id, "127.0.0.1").connection.ice_servers
        await page.evaluate("() => window.visage.call.hangUp()")
        assert await wait_until(lambda: sessions.count == 0, timeout_s=10)
        # coturn logs what each relay carried when it is released (the browser releases
        # its relays when the call hangs up; the unused ones may go first).
        counted = ((peer or {}).get("pair") or {}).get("bytesReceived") or 1
        await wait_until(
            lambda: _browser_relay_bytes(coturn.log_text())[0] >= 0.9 * counted, timeout_s=10
        )

    assert peer is not None, snapshot
    print(f"\nrelay call: {peer}\nreply: {snapshot['reply']}, fps {snapshot['fps']:.1f}")
    assert peer["policy"] == "relay"
    assert peer["connection"] == "connected", peer
    # The pair ICE chose runs from the browser's relay on our coturn: every packet of the
    # call went through it. The browser gathered nothing else.
    assert peer["local"]["type"] == "relay", peer
    assert peer["local"]["url"] and f":{coturn.port}" in peer["local"]["url"], peer
    assert set(peer["localTypes"]) == {"relay"}, peer
    # The avatar's voice (its greeting, loud) and face arrived.
    assert peer["inbound"]["audio"]["bytes"] > 10_000, peer
    assert snapshot["reply"]["peakRms"] > 0.05, snapshot["reply"]
    assert peer["inbound"]["video"]["framesDecoded"] >= 50, peer
    assert peer["pair"]["bytesReceived"] > 50_000, peer
    # The server's own peer connection had a TURN credential derived for it.
    assert [s.urls for s in server_ice] == [[coturn.url]], server_ice
    assert (server_ice[0].username or "").endswith(":visage-server"), server_ice

    # coturn's side: the browser's allocation, its permission to reach the server, and
    # what the relay carried (logged when the browser released it): from the server, at
    # least what the browser had counted on the pair when it was measured.
    log = coturn.log_text()
    from_server, to_server = _browser_relay_bytes(log)
    print(f"coturn relayed {from_server} bytes from the server, {to_server} to it")
    assert from_server >= 0.9 * peer["pair"]["bytesReceived"], (from_server, peer["pair"])
    assert to_server > 1_000, to_server  # the microphone's audio and RTCP
    assert re.search(
        r"user <\d+:visage-web-[0-9a-f]+>: incoming packet ALLOCATE processed, success", log
    )
    assert re.search(r"incoming packet (CREATE_PERMISSION|CHANNEL_BIND) processed, success", log)
    took = time.monotonic() - started
    print(f"relay test took {took:.1f} s")
