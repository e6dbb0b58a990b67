"""The embeddable widget (web/embed.js) in a real headless Chromium, on host pages served
from other loopback origins than the Visage server: one the server allows, one it does
not. The widget mints a session token (server.auth = "token"), connects, and answers a
spoken and a typed question out loud with a moving mouth and captions."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import uvicorn
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame

from agent.browser import chromium_page, free_port, write_speech_wav
from agent.config import Settings
from agent.server.app import create_app
from agent.server.limits import NOTICE_S, SessionEnd
from agent.server.sessions import SessionManager
from speech.wer import normalize
from tests.helpers.mouth import mouth_activity, mouth_box
from tests.helpers.waiting import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
DOCS = ROOT / "docs"
SIZE = 256
SPOKEN = "Hello, what is your name?"
SPOKEN_KEY_WORDS = {"what", "your", "name"}
TYPED = "What can you do?"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Test-only instrumentation, run before the host page's scripts: the widget's closed
# shadow root is opened (so the test can look inside it, as a user looks at the screen),
# microphone requests are counted, and the widget's DOM events are recorded at the
# document, which they reach only because they bubble out of the element.
INSTRUMENT = """
(() => {
  const attach = Element.prototype.attachShadow;
  Element.prototype.attachShadow = function (init) {
    return attach.call(this, { ...init, mode: "open" });
  };
  window.__micRequests = 0;
  const media = navigator.mediaDevices;
  const getUserMedia = media.getUserMedia.bind(media);
  media.getUserMedia = (constraints) => {
    window.__micRequests += 1;
    return getUserMedia(constraints);
  };
  window.__events = [];
  for (const type of ["connected", "disconnected", "transcript", "error", "status"]) {
    document.addEventListener(`visage:${type}`, (event) => window.__events.push({
      type, t: performance.now(), detail: event.detail, target: event.target.localName,
    }));
  }
})();
"""

# A host site's page; HOSTILE adds global styles that must not reach the widget.
HOSTILE = """<style>
  * { font-family: "Courier New", monospace !important; }
  button { background: rgb(0, 255, 0) !important; border: 4px dashed red !important; }
  p { color: rgb(255, 0, 255); }
</style>"""
HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Northwind Clinic</title>
<style>
  body { margin: 0; font: 17px/1.6 Georgia, serif; color: #1f2933; background: #f6f3ee; }
  header { padding: 22px 48px; background: #fff; border-bottom: 1px solid #e4ded3;
           font-weight: 700; font-size: 20px; }
  main { max-width: 760px; padding: 56px 48px; }
  h1 { font-size: 44px; line-height: 1.15; margin: 0 0 18px; color: #14324a; }
  .inline { margin-top: 32px; }
</style>STYLE</head>
<body>
<header>Northwind Clinic</header>
<main>
  <h1>Care that fits around your day</h1>
  <p>Book a visit, ask about opening hours, or talk to our receptionist right here.</p>
  <div class="inline">BODY</div>
</main>
SCRIPT
</body></html>"""


@dataclass
class Servers:
    """The Visage server and the two host sites, each on its own loopback origin."""

    visage: str
    allowed: str
    refused: str
    sessions: SessionManager
    loop: asyncio.AbstractEventLoop
    pages: dict[str, str]

    def drop_calls(self) -> None:
        """Close every call's peer connection from the server's side (a lost network)."""

        async def drop() -> None:
            for described in self.sessions.describe():
                session = self.sessions.owned(described["pc_id"], "127.0.0.1")
                await session.connection.disconnect()

        asyncio.run_coroutine_threadsafe(drop(), self.loop).result(10)

    def end_calls(self, end: SessionEnd) -> None:
        """End every call as the idle timeout does: tell the page why, then hang up."""

        async def finish() -> None:
            for described in self.sessions.describe():
                worker = self.sessions.owned(described["pc_id"], "127.0.0.1").conversation.worker
                await worker.queue_frame(RTVIServerMessageFrame(data=end.as_message()))
                await asyncio.sleep(NOTICE_S)
                await worker.cancel(reason=f"session ended ({end.reason})")

        asyncio.run_coroutine_threadsafe(finish(), self.loop).result(10)


class _HostPages(BaseHTTPRequestHandler):
    pages: ClassVar[dict[str, str]] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path.split("?")[0])
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.end_headers()
        self.wfile.write((body or "not found").encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def _host_site(pages: dict[str, str]) -> Iterator[str]:
    handler = type("Pages", (_HostPages,), {"pages": pages})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="host-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """One Visage server for the module, on its own event loop in a thread, allowing
    one host site's origin and requiring session tokens."""
    pages: dict[str, str] = {}
    with _host_site(pages) as allowed, _host_site(pages) as refused:
        port = free_port()
        settings = Settings()
        settings.server.host, settings.server.port = "127.0.0.1", port
        settings.server.allowed_origins = [allowed]
        settings.server.auth = "token"
        settings.server.max_sessions = 2  # a reconnect's call may start as the old one ends
        settings.avatar.width = settings.avatar.height = SIZE
        app = create_app(settings)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=loop.run_until_complete, args=(server.serve(),), name="visage", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        try:
            yield Servers(
                f"http://127.0.0.1:{port}", allowed, refused, app.state.sessions, loop, pages
            )
        finally:
            server.should_exit = True
            thread.join(20)
            loop.close()


def host_page(
    servers: Servers, name: str, *, body: str = "", script: str = "", style: str = ""
) -> str:
    """Serve a host page (on both host sites) with the widget's script tag and elements."""
    html = HOST_PAGE.replace("BODY", body).replace("SCRIPT", script).replace("STYLE", style)
    servers.pages[f"/{name}.html"] = html.replace("VISAGE", servers.visage)
    return f"/{name}.html"


async def events(page: Any, kind: str | None = None) -> list[dict]:
    found = await page.evaluate("() => window.__events")
    return [e for e in found if kind is None or e["type"] == kind]


async def wait_for(page: Any, expression: str, timeout_s: float) -> bool:
    """Poll a JavaScript expression in the page until it is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await page.evaluate(expression):
            return True
        await asyncio.sleep(0.25)
    return False


async def start_media_stats(page: Any, servers: Servers) -> None:
    """Measure what reaches the widget's video element (web/stats.js, as the call page's
    tests do): decoded frames, the mouth region's change per frame, the reply's loudness."""
    mouth = list(mouth_box(SIZE))
    assert await wait_for(
        page,
        "() => !!document.querySelector('visage-avatar').shadowRoot"
        ".querySelector('video').srcObject",
        20,
    ), "no media reached the widget"
    await page.evaluate(
        """async ([server, mouth]) => {
          const { MediaStats } = await import(`${server}/static/stats.js`);
          const video = document.querySelector("visage-avatar").shadowRoot.querySelector("video");
          window.__stats = new MediaStats(video, { mouthRegion: mouth });
          const watch = () => window.__stats.watchReply(video.srcObject);
          watch();
          // The audio track may arrive after the video track.
          window.__watchTimer = setInterval(watch, 200);
        }""",
        [servers.visage, mouth],
    )


async def media(page: Any) -> dict:
    return await page.evaluate(
        """() => { const s = window.__stats; return {
          frames: s.frames, fps: s.fps(),
          reply: s.reply ? {peakRms: s.reply.peakRms, onsets: s.reply.onsets,
                            offsets: s.reply.offsets} : null }; }"""
    )


def final(found: list[dict], role: str, since: float = 0.0) -> list[dict]:
    return [
        e
        for e in found
        if e["type"] == "transcript"
        and e["detail"]["role"] == role
        and e["detail"]["final"]
        and e["t"] > since
    ]


async def _spoken_answer_after(page: Any, since: float, timeout_s: float) -> dict:
    """Wait until reply audio starts after ``since`` (page time) and a bot sentence is
    said after it; returns the media figures."""

    async def answered() -> bool:
        m = await media(page)
        found = await events(page, "transcript")
        onsets = m["reply"]["onsets"] if m["reply"] else []
        return any(on > since for on in onsets) and bool(final(found, "bot", since))

    for _ in range(round(timeout_s / 0.3)):
        if await answered():
            break
        await asyncio.sleep(0.3)
    return await media(page)


async def test_a_widget_on_an_allowed_site_answers_spoken_and_typed_questions(
    servers: Servers, tmp_path: Path
) -> None:
    wav = tmp_path / "question.wav"
    write_speech_wav(wav, [SPOKEN], lead_s=9.0, gap_s=0.0, tail_s=30.0)
    script = (
        '<script src="VISAGE/embed.js" data-name="Ava · Northwind" data-label="Ask Ava" '
        'data-theme="#0f766e" data-greeting="Hi, I\'m Ava. Ask me anything about your visit." '
        "defer></script>"
    )
    path = host_page(servers, "launcher", script=script)
    async with chromium_page(wav) as page:
        await page.add_init_script(INSTRUMENT)
        await page.set_viewport_size(DESKTOP)
        await page.goto(servers.allowed + path)

        await page.locator("visage-avatar .launcher").click()
        await page.locator("visage-avatar .start").click()
        assert await wait_for(
            page, "() => window.__events.some((e) => e.type === 'connected')", 20
        ), await events(page)
        await start_media_stats(page, servers)

        # The spoken question: transcribed, answered out loud.
        assert await wait_for(
            page,
            """() => window.__events.some((e) => e.type === 'transcript'
                 && e.detail.role === 'user' && e.detail.final)""",
            30,
        ), await events(page, "transcript")
        found = await events(page, "transcript")
        heard = final(found, "user")
        assert SPOKEN_KEY_WORDS <= set(normalize(" ".join(e["detail"]["text"] for e in heard)))
        spoken_answer = await _spoken_answer_after(page, heard[0]["t"], 20)
        assert final(await events(page), "bot", heard[0]["t"]), "no bot transcript"
        # Let the answer finish and leave a quiet stretch before typing.
        await wait_for(
            page,
            """() => { const r = window.__stats.reply; return r && r.offsets.length
                 && r.offsets[r.offsets.length - 1] > r.onsets[r.onsets.length - 1]
                 && performance.now() - r.offsets[r.offsets.length - 1] > 2500; }""",
            20,
        )

        # The typed question: RTVI send-text, answered out loud, captioned.
        typed_at = await page.evaluate("() => performance.now()")
        box = page.locator("visage-avatar .text")
        await box.fill(TYPED)
        await box.press("Enter")
        typed_answer = await _spoken_answer_after(page, typed_at, 20)
        found = await events(page)
        assert [e["detail"]["text"] for e in final(found, "user", typed_at)] == [TYPED]
        assert final(found, "bot", typed_at), "no bot transcript for the typed question"
        await asyncio.sleep(2.5)  # some of the answer, for the mouth and the screenshots
        caption_user = await page.locator("visage-avatar .caption.user").inner_text()
        caption_bot = await page.locator("visage-avatar .caption.bot").inner_text()

        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "widget-desktop.png"))
        await page.set_viewport_size(PHONE)
        await asyncio.sleep(0.4)
        await page.screenshot(path=str(ARTIFACTS / "widget-phone.png"))
        figures = await media(page)

        await page.locator("visage-avatar .call").click()  # hang up
        assert await wait_for(
            page, "() => window.__events.some((e) => e.type === 'disconnected')", 10
        )
        found = await events(page)

    # Answers were heard: loud reply audio after each question.
    assert spoken_answer["reply"]["peakRms"] > 0.05, spoken_answer["reply"]
    assert any(on > heard[0]["t"] for on in spoken_answer["reply"]["onsets"])
    assert any(on > typed_at for on in typed_answer["reply"]["onsets"])
    # Captions: the typed question and the answer being spoken.
    assert caption_user == TYPED and caption_bot, (caption_user, caption_bot)
    # The mouth moves with the voice: far more change while the reply is loud than in
    # silence away from speech (a shared machine's frame rate is tolerated).
    talking, silent = mouth_activity(figures["frames"])
    assert len(talking) > 20 and len(silent) > 10, (len(talking), len(silent), figures["fps"])
    assert np.median(talking) > 2.5 * np.median(silent), (np.median(talking), np.median(silent))
    # The events a host page listens to, from the element the script tag made.
    kinds = {e["type"] for e in found}
    assert {"connected", "transcript", "disconnected", "status"} <= kinds, kinds
    assert all(e["target"] == "visage-avatar" for e in found)
    assert [e["detail"]["reason"] for e in found if e["type"] == "disconnected"] == ["hung up"]
    assert not [e for e in found if e["type"] == "error"], found
    assert await wait_until(lambda: servers.sessions.count == 0, timeout_s=10)
    for name in ("widget-desktop.png", "widget-phone.png"):
        shutil.copy(ARTIFACTS / name, DOCS / name)


async def test_text_mode_asks_for_no_microphone_reconnects_after_a_drop_and_ends_when_told(
    servers: Servers,
) -> None:
    body = '<visage-avatar server="VISAGE" mode="text" name="Ava" size="large"></visage-avatar>'
    script = '<script src="VISAGE/embed.js" data-launcher="off" defer></script>'
    path = host_page(servers, "text", body=body, script=script, style=HOSTILE)
    async with chromium_page() as page:
        await page.add_init_script(INSTRUMENT)
        await page.set_viewport_size(DESKTOP)
        await page.goto(servers.allowed + path)
        # The host page's global CSS does not reach into the widget.
        styles = await page.evaluate(
            """() => { const root = document.querySelector("visage-avatar").shadowRoot;
              const look = (s) => getComputedStyle(root.querySelector(s));
              return { button: look(".call").backgroundColor, border: look(".call").borderStyle,
                       font: look(".message").fontFamily, color: look(".message").color }; }"""
        )
        assert styles["button"] != "rgb(0, 255, 0)" and styles["border"] != "dashed", styles
        assert "Courier" not in styles["font"] and styles["color"] != "rgb(255, 0, 255)", styles
        assert await page.locator(".launcher").count() == 1  # the element's, hidden
        assert not await page.locator(".launcher").is_visible()

        # Typing starts the call: no microphone, a spoken answer.
        typed_at = await page.evaluate("() => performance.now()")
        box = page.locator("visage-avatar .text")
        await box.fill(TYPED)
        await box.press("Enter")
        assert await wait_for(
            page, "() => window.__events.some((e) => e.type === 'connected')", 20
        ), await events(page)
        await start_media_stats(page, servers)
        answer = await _spoken_answer_after(page, typed_at, 25)
        found = await events(page)
        assert [e["detail"]["text"] for e in final(found, "user", typed_at)] == [TYPED]
        assert final(found, "bot", typed_at)
        assert answer["reply"] and answer["reply"]["peakRms"] > 0.05, answer["reply"]
        assert await page.evaluate("() => window.__micRequests") == 0
        assert not await page.locator("visage-avatar .mute").is_visible()

        # The network drops: the widget says so, reconnects with a fresh token, goes on.
        servers.drop_calls()
        assert await wait_for(
            page,
            "() => window.__events.filter((e) => e.type === 'connected').length >= 2",
            25,
        ), [e for e in await events(page) if e["type"] != "transcript"]
        found = await events(page)
        drops = [e["detail"] for e in found if e["type"] == "disconnected"]
        assert drops and drops[0]["reconnecting"], drops
        statuses = [e["detail"]["text"] for e in found if e["type"] == "status"]
        assert any("Reconnecting" in text for text in statuses), statuses

        # The server ends the session (as its idle timeout does): the widget says why
        # and does not reconnect.
        servers.end_calls(SessionEnd("idle", "The call ended after 5 minutes of quiet."))
        assert await wait_for(
            page,
            "() => window.__events.some((e) => e.type === 'disconnected'"
            " && !e.detail.reconnecting)",
            10,
        )
        await asyncio.sleep(2.0)  # a reconnection would have started by now
        found = await events(page)
        ended = [e["detail"] for e in found if e["type"] == "disconnected"][-1]
        assert ended["reason"] == "idle" and "5 minutes" in ended["message"], ended
        assert len([e for e in found if e["type"] == "connected"]) == 2
        assert "5 minutes of quiet" in await page.locator("visage-avatar .message").inner_text()
        assert await wait_until(lambda: servers.sessions.count == 0, timeout_s=10)


async def test_a_site_the_server_does_not_allow_is_refused_and_told_why(
    servers: Servers,
) -> None:
    body = '<visage-avatar server="VISAGE" name="Ava"></visage-avatar>'
    script = '<script src="VISAGE/embed.js" data-launcher="off" defer></script>'
    path = host_page(servers, "inline", body=body, script=script, style=HOSTILE)
    async with chromium_page() as page:
        await page.add_init_script(INSTRUMENT)
        await page.set_viewport_size(DESKTOP)
        await page.goto(servers.refused + path)
        await page.locator("visage-avatar .start").click()
        reason = f"origin {servers.refused} is not allowed to use this server"
        message = page.locator("visage-avatar .message")
        assert await wait_for(
            page,
            "() => window.__events.some((e) => e.type === 'error')",
            15,
        ), await events(page)
        assert await message.is_visible()
        assert reason in await message.inner_text()
        errors = [e["detail"]["message"] for e in await events(page, "error")]
        assert any(reason in text for text in errors), errors
        assert await page.evaluate("() => window.__micRequests") == 0, "asked for the mic"
        await page.screenshot(path=str(ARTIFACTS / "widget-refused.png"))
    assert servers.sessions.count == 0
