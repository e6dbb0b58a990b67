"""Session ids of pipecat's /start flow: signed and expiring, nothing stored."""

from __future__ import annotations

from agent.server.start_ids import StartSessionIds


def test_an_issued_id_is_valid_until_it_expires() -> None:
    now = [100.0]
    ids = StartSessionIds(ttl_s=300.0, clock=lambda: now[0])
    session_id = ids.issue()
    assert ids.valid(session_id) and session_id != ids.issue()
    now[0] += 299.0
    assert ids.valid(session_id)
    now[0] += 2.0
    assert not ids.valid(session_id)


def test_forged_tampered_and_foreign_ids_are_refused() -> None:
    ids = StartSessionIds()
    session_id = ids.issue()
    nonce, expires, signature = session_id.split("-")
    later = f"{nonce}-{int(expires) + 10**9}-{signature}"
    flipped = session_id[:-1] + ("0" if session_id[-1] != "0" else "1")
    for bad in (later, flipped, "nope", "", "-", "ü-1-ü", StartSessionIds().issue()):
        assert not ids.valid(bad), bad
