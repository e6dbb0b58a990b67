"""Conversation text, tokens and keys stay out of the log unless debug logging is on.

Our own code logs what was said at DEBUG only. A few of pipecat's lines above DEBUG carry
text we cannot change at the source (a TTS service that is no longer usable names the
text it drops; a malformed data-channel message is logged as sent; pydantic errors quote
their input), so :func:`redact_conversation` rewrites those before any sink sees them.
"""

from __future__ import annotations

import re
from typing import Any

from loguru import logger

#: Levels at which conversation text may be logged (explicit debug logging).
DEBUG_LEVELS = ("TRACE", "DEBUG")
_INFO = 20

#: (record name prefix, pattern, replacement) applied to records at INFO and above.
_REDACTIONS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    # Frames' own descriptions ("TranscriptionFrame(... text: [hello])") and pipecat's
    # "not speaking [text]": the brackets' content, up to the last bracket.
    ("pipecat", re.compile(r"(text: |speaking )\[.*\]", re.S), r"\1[text withheld]"),
    # pydantic's "[type=..., input_value='what the client sent', input_type=str]"
    ("pipecat", re.compile(r"input_value=.*?(?=, input_type=)", re.S), "input_value=<withheld>"),
    (
        "pipecat.transports.smallwebrtc.connection",
        re.compile(r"^Error parsing JSON message .*", re.S),
        "Error parsing JSON message (a data-channel message that is not JSON; withheld)",
    ),
)


def redact_conversation(record: dict[str, Any]) -> None:
    """A loguru patcher: withhold conversation text from pipecat's records above DEBUG."""
    if record["level"].no < _INFO:
        return
    name = record["name"] or ""
    message = record["message"]
    for prefix, pattern, replacement in _REDACTIONS:
        if name.startswith(prefix):
            message = pattern.sub(replacement, message)
    record["message"] = message


def install_log_redaction() -> None:
    """Apply :func:`redact_conversation` to every record, process-wide. Idempotent."""
    logger.configure(patcher=redact_conversation)  # type: ignore[arg-type]


def add_log_sink(sink: Any, level: str) -> int:
    """Add a log sink at ``level``. Tracebacks show variable values (which may hold what
    was said) only at the debug levels."""
    return logger.add(sink, level=level, diagnose=level in DEBUG_LEVELS)
