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

from aiortc.sdp import SessionDescription
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


class UnsupportedMediaTypeError(SignallingError):
    """The request body is not declared as JSON (a 415 answer)."""


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's JSON body, refused as soon as it is known to be over ``limit`` bytes:
    from its declared ``Content-Length`` before reading, else while it streams in."""
    check_json_content_type(request.headers.get("content-type"))
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


#: Characters an SDP may contain besides printable ASCII (RFC 8866 is UTF-8 text by lines).
_SDP_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FINGERPRINT = re.compile(r"a=fingerprint:[A-Za-z0-9-]+ [0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2})+$")
DTLS_SETUP = ("actpass", "active", "passive")


def _sections(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """Split SDP lines into the session part and one list per media section."""
    session: list[str] = []
    media: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    return session, media


def _has(prefix: str, session: list[str], section: list[str]) -> bool:
    """Whether a media section has an attribute, itself or from the session level."""
    return any(line.startswith(prefix) for line in (*section, *session))


def validate_sdp(sdp: str) -> None:
    """Check that ``sdp`` is a WebRTC offer the server can answer: an SDP description
    whose audio section has ICE credentials and a DTLS fingerprint. Anything else would
    take a call slot for a connection that can never come up."""
    if _SDP_CONTROL.search(sdp):
        raise SignallingError("field 'sdp' contains control characters (e.g. NUL bytes)")
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if not lines or lines[0] != "v=0":
        raise SignallingError("field 'sdp' is not an SDP session description (no 'v=0' line)")
    try:
        SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc's parser fails on bad input in many ways
        raise SignallingError(f"field 'sdp' cannot be parsed ({type(exc).__name__})") from None
    session, media = _sections(lines)
    if not media:
        raise SignallingError("field 'sdp' has no media section ('m=' line)")
    audio = [m for m in media if m[0].startswith("m=audio ")]
    if not audio:
        raise SignallingError("field 'sdp' offers no audio; the call needs the microphone")
    for section in audio:
        for attribute in ("a=ice-ufrag:", "a=ice-pwd:"):
            if not _has(attribute, session, section):
                raise SignallingError(
                    f"field 'sdp' has no ICE credentials ('{attribute[:-1]}' line); "
                    "it is not a WebRTC offer"
                )
        prints = [line for line in (*section, *session) if line.startswith("a=fingerprint:")]
        if not prints:
            raise SignallingError(
                "field 'sdp' has no DTLS fingerprint ('a=fingerprint' line); "
                "it is not a WebRTC offer"
            )
        if not all(_FINGERPRINT.match(line) for line in prints):
            raise SignallingError("field 'sdp' has a malformed 'a=fingerprint' line")
        setups = [line for line in (*section, *session) if line.startswith("a=setup:")]
        if not setups or not all(line[8:] in DTLS_SETUP for line in setups):
            raise SignallingError(
                "field 'sdp' needs an 'a=setup:' line of actpass, active or passive (the DTLS role)"
            )


def check_json_content_type(content_type: str | None) -> None:
    """Signalling bodies are JSON. Insisting on the type means a browser on another site
    cannot send them without a CORS preflight, which the server does not grant."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise UnsupportedMediaTypeError(
            f"signalling requests must be sent as application/json, not {kind or 'untyped'}"
        )


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


def parse_session_request(body: bytes) -> str | None:
    """Parse a ``POST /api/session`` body sent with the API key: ``{"origin": ...}``, the
    browser origin the token is for; None when the body or the field is absent."""
    if not body.strip():
        return None
    return _string(_load_object(body), "origin", required=False)


def token_in(data: Any) -> str | None:
    """The session token a client sent in its request data (pipecat's clients send
    ``request_data``), if any: ``{"token": ...}``."""
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None


def parse_start_token(body: bytes) -> str | None:
    """The session token in a ``POST /start`` body: ``token``, or ``token`` inside
    ``body``, ``request_data`` or ``requestData`` (the shapes pipecat's clients send)."""
    if not body.strip():
        return None
    data = _load_object(body)
    for where in (data, *(data.get(key) for key in ("body", "request_data", "requestData"))):
        token = token_in(where)
        if token is not None:
            return token
    return None
