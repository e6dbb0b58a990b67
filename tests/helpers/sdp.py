"""SDP offers for signalling tests, shaped like a browser's."""

from __future__ import annotations

import json

#: A body sent to the signalling routes must say it is JSON.
JSON_HEADERS = {"content-type": "application/json"}

#: An offer with everything the server checks for (ICE credentials, a DTLS fingerprint,
#: audio), whose candidates lead nowhere: the call it starts never connects.
OFFER_SDP = (
    "v=0\r\n"
    "o=- 4215775240449105457 2 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "t=0 0\r\n"
    "a=group:BUNDLE 0\r\n"
    "a=msid-semantic: WMS\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\n"
    "a=rtcp:9 IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:8hhY\r\n"
    "a=ice-pwd:asd88fgpdd777uzjYhagZg0T\r\n"
    "a=ice-options:trickle\r\n"
    "a=fingerprint:sha-256 49:66:12:17:0D:1C:91:AE:57:4C:C6:36:DD:D5:97:D2:7D:62:C9:9A:"
    "7F:B9:A3:45:10:31:E3:C2:4E:9B:12:4A\r\n"
    "a=setup:actpass\r\n"
    "a=mid:0\r\n"
    "a=sendrecv\r\n"
    "a=rtcp-mux\r\n"
    "a=rtpmap:111 opus/48000/2\r\n"
)


def offer_body(sdp: str = OFFER_SDP, **extra: object) -> bytes:
    """A ``POST /api/offer`` body for ``sdp``."""
    return json.dumps({"sdp": sdp, "type": "offer", **extra}).encode()
