"""Signalling bodies: every malformed input gets a SignallingError with a clear message."""

from __future__ import annotations

import json
import random

import pytest

from agent.server.signalling import (
    SignallingError,
    UnsupportedMediaTypeError,
    check_json_content_type,
    parse_offer,
    parse_patch,
)
from tests.helpers.sdp import OFFER_SDP, offer_body

SDP = OFFER_SDP


def _without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def test_valid_offer_parses() -> None:
    request = parse_offer(json.dumps({"sdp": SDP, "type": "offer", "pc_id": "abc"}).encode())
    assert request.sdp == SDP and request.type == "offer" and request.pc_id == "abc"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (json.dumps({"type": "offer"}).encode(), "missing field 'sdp'"),
        (json.dumps({"sdp": SDP}).encode(), "missing field 'type'"),
        (json.dumps({"sdp": 5, "type": "offer"}).encode(), "'sdp' must be a string"),
        (json.dumps({"sdp": SDP, "type": "answer"}).encode(), "must be 'offer'"),
        (json.dumps({"sdp": "hello", "type": "offer"}).encode(), "not an SDP"),
        (json.dumps({"sdp": "v=0\r\ns=-\r\n", "type": "offer"}).encode(), "no media section"),
        (
            json.dumps({"sdp": SDP.replace("m=audio", "m=video"), "type": "offer"}).encode(),
            "offers no audio",
        ),
        (json.dumps({"sdp": SDP, "type": "offer", "restart_pc": "y"}).encode(), "restart_pc"),
        (offer_body(_without(SDP, "a=fingerprint:")), "no DTLS fingerprint"),
        (offer_body(SDP.replace("sha-256 49:66", "sha-256 zz:66")), "malformed 'a=fingerprint'"),
        (offer_body(_without(SDP, "a=ice-ufrag:")), "no ICE credentials"),
        (offer_body(_without(SDP, "a=ice-pwd:")), "no ICE credentials"),
        (offer_body(_without(SDP, "a=setup:")), "'a=setup:' line"),
        (offer_body(SDP.replace("a=setup:actpass", "a=setup:x")), "cannot be parsed"),
        (offer_body(SDP.replace("s=-", "s=\x00-")), "control characters"),
        (offer_body(SDP + "a=x:\x00\x00\r\n"), "control characters"),
        (b"x" * 300_000, "larger than"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper than 16 levels"),
        (b'{"sdp": "[[[[[[[[[[[[[[[[[[[[", "type": "offer", "a": [[[1]]]}', "not an SDP"),
        (b'{"n": ' + b"9" * 5000 + b"}", "number longer than 32"),
        (b'{"n": 1.' + b"5" * 100 + b"}", "number longer than 32"),
    ],
)
def test_bad_offer_is_rejected_with_reason(body: bytes, message: str) -> None:
    with pytest.raises(SignallingError, match=message):
        parse_offer(body)


def test_every_truncated_offer_is_rejected() -> None:
    body = json.dumps({"sdp": SDP, "type": "offer"}).encode()
    for cut in range(len(body)):
        with pytest.raises(SignallingError):
            parse_offer(body[:cut])


def test_random_bytes_are_rejected() -> None:
    rng = random.Random(7)
    for _ in range(200):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        with pytest.raises(SignallingError):
            parse_offer(blob)


def test_patch_parses_and_validates() -> None:
    good = {
        "pc_id": "p",
        "candidates": [
            {
                "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
                "sdp_mid": "0",
                "sdp_mline_index": 0,
            }
        ],
    }
    request = parse_patch(json.dumps(good).encode())
    assert request.pc_id == "p" and request.candidates[0].sdp_mline_index == 0
    for bad, message in [
        ({"candidates": []}, "missing field 'pc_id'"),
        ({"pc_id": "p"}, "'candidates' must be a list"),
        ({"pc_id": "p", "candidates": [5]}, r"candidates\[0\] must be an object"),
        ({"pc_id": "p", "candidates": [{"candidate": 1}]}, "must be a string"),
        ({"pc_id": "p", "candidates": [{"candidate": "", "sdp_mid": 0}]}, "sdp_mline_index"),
    ]:
        with pytest.raises(SignallingError, match=message):
            parse_patch(json.dumps(bad).encode())


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_declared_json_is_refused(content_type: str | None) -> None:
    # Browsers send these cross-origin without a CORS preflight; JSON needs one.
    with pytest.raises(UnsupportedMediaTypeError, match="application/json"):
        check_json_content_type(content_type)
    check_json_content_type("application/json; charset=utf-8")
