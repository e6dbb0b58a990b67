"""Parsing and validation of pipecat's SmallWebRTC signalling bodies.

``POST /api/offer`` takes ``{sdp, type, pc_id?, restart_pc?, request_data?}`` and
``PATCH /api/offer`` takes ``{pc_id, candidates: [{candidate, sdp_mid, sdp_mline_index}]}``,
exactly as pipecat's clients send them. Every way a body can be wrong raises
``SignallingError`` with a message that says what was wrong, for a 400 answer; a body over
the size cap raises ``BodyTooLargeError`` (413), checked on the declared length first and
again while it is read, so an oversized body is never held in memory.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pipecat.transports.smallwebrtc.request_handler import (
    IceCandidate,
    SmallWebRTCPatchRequest,
    SmallWebRTCRequest,
)
from starlette.requests import Request

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 16  # a signalling body nests 3 deep; deeper is an attack on the parser
MAX_NUMBER_CHARS = 32  # digits (and sign, point, exponent) of one JSON number
_STRING = re.compile(rb'"(?:\\.|[^"\\])*"')
_BRACKET = re.compile(rb"[\[\]{}]")


class SignallingError(ValueError):
    """A signalling request the server cannot use; the message is safe to show the client."""


class BodyTooLargeError(SignallingError):
    """The request body is over ``MAX_BODY_BYTES`` (a 413 answer)."""


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's body, refused as soon as it is known to be over ``limit`` bytes: from
    its declared ``Content-Length`` before reading, else while it streams in."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise SignallingError("the Content-Length header is not a byte count")
        if int(declared) > limit:
            raise BodyTooLargeError(f"request body is larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(f"request body is larger than {limit} bytes")
    return bytes(body)


def _check_depth(body: bytes) -> None:
    """Refuse JSON nested deeper than ``MAX_JSON_DEPTH`` before the parser recurses into it."""
    depth = 0
    for bracket in _BRACKET.findall(_STRING.sub(b"", body)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            raise SignallingError(f"request body nests deeper than {MAX_JSON_DEPTH} levels")


def _number(text: str) -> float | int:
    if len(text) > MAX_NUMBER_CHARS:
        raise SignallingError(f"request body has a number longer than {MAX_NUMBER_CHARS} chars")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _load_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise BodyTooLargeError(f"request body is larger than {MAX_BODY_BYTES} bytes")
    _check_depth(body)
    try:
        data = json.loads(body, parse_int=_number, parse_float=_number)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SignallingError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SignallingError("request body must be a JSON object")
    return data


def _string(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise SignallingError(f"missing field '{key}'")
        return None
    if not isinstance(value, str):
        raise SignallingError(f"field '{key}' must be a string")
    return value


def validate_sdp(sdp: str) -> None:
    """Check that ``sdp`` looks like a WebRTC session description with an audio section."""
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0":
        raise SignallingError("field 'sdp' is not an SDP session description (no 'v=0' line)")
    media = [line for line in lines if line.startswith("m=")]
    if not media:
        raise SignallingError("field 'sdp' has no media section ('m=' line)")
    if not any(line.startswith("m=audio ") for line in media):
        raise SignallingError("field 'sdp' offers no audio; the call needs the microphone")


def parse_offer(body: bytes) -> SmallWebRTCRequest:
    """Parse and validate a ``POST /api/offer`` body."""
    data = _load_object(body)
    sdp = _string(data, "sdp")
    kind = _string(data, "type")
    assert sdp is not None and kind is not None
    if kind != "offer":
        raise SignallingError(f"field 'type' must be 'offer', got {kind!r}")
    validate_sdp(sdp)
    restart = data.get("restart_pc")
    if restart is not None and not isinstance(restart, bool):
        raise SignallingError("field 'restart_pc' must be true or false")
    return SmallWebRTCRequest(
        sdp=sdp,
        type=kind,
        pc_id=_string(data, "pc_id", required=False),
        restart_pc=restart,
        request_data=data.get("request_data", data.get("requestData")),
    )


def parse_patch(body: bytes) -> SmallWebRTCPatchRequest:
    """Parse and validate a ``PATCH /api/offer`` (trickle ICE) body."""
    data = _load_object(body)
    pc_id = _string(data, "pc_id")
    assert pc_id is not None
    raw = data.get("candidates")
    if not isinstance(raw, list):
        raise SignallingError("field 'candidates' must be a list")
    candidates = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SignallingError(f"candidates[{i}] must be an object")
        candidate = item.get("candidate")
        mid = item.get("sdp_mid", item.get("sdpMid"))
        index = item.get("sdp_mline_index", item.get("sdpMLineIndex"))
        if not isinstance(candidate, str):
            raise SignallingError(f"candidates[{i}].candidate must be a string")
        if not isinstance(mid, str) or not isinstance(index, int) or isinstance(index, bool):
            raise SignallingError(
                f"candidates[{i}] needs a string sdp_mid and an integer sdp_mline_index"
            )
        if candidate and not candidate.removeprefix("candidate:").strip():
            raise SignallingError(f"candidates[{i}].candidate is empty")
        candidates.append(IceCandidate(candidate=candidate, sdp_mid=mid, sdp_mline_index=index))
    return SmallWebRTCPatchRequest(pc_id=pc_id, candidates=candidates)
