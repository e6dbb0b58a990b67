// Visage embed: put the talking avatar on any web page with one script tag.
//
//   <script src="(your Visage server)/embed.js" data-theme="#0f766e" defer></script>
//     adds a floating launcher (a <visage-avatar launcher> appended to <body>);
//   <script src="(your Visage server)/embed.js" data-launcher="off" defer></script>
//   <visage-avatar server="(your Visage server)" mode="voice+text"></visage-avatar>
//     places the avatar inline.
// Attributes (data-* on the script tag for the launcher) and events: README, "Embed in
// your site". No framework and no build step: this file is served as it is.
//
// Isolation: the widget draws into a closed shadow root, so the host page's CSS cannot
// restyle it and its scripts cannot reach inside; the only global it adds is the
// <visage-avatar> element. The call itself is web/call.js and web/controller.js, the
// same modules the server's own page uses, imported from the Visage server.
//
// Origins: this code runs in the host page, so every request it makes to the Visage
// server (POST /api/session, the WebRTC offer) carries the host page's Origin header.
// The browser sets that header and no page script can forge it, which is what lets the
// server refuse sites it does not allow (server.allowed_origins) and bind each session
// token to the site it was minted for.
(() => {
  "use strict";
  const TAG = "visage-avatar";
  const script = document.currentScript;
  const scriptOrigin = script && script.src ? new URL(script.src, location.href).origin : "";

  const SIZES = { small: "300px", medium: "360px", large: "440px" };
  const MODES = ["voice", "voice+text", "text"];
  const GREETING = "Hi! How can I help you today?";
  const HINTS = {
    voice: "Start a call and talk, as on the phone.",
    "voice+text": "Start a call and talk, or type a message below.",
    text: "Type a message below to start.",
  };
  const off = (value) => /^(off|false|no|0)$/i.test(String(value).trim());
  const on = (value) => value !== null && !off(value);

  const icon = (body) =>
    `<svg viewBox="0 0 24 24" aria-hidden="true" focusable="false">${body}</svg>`;
  const ICONS = {
    call: icon(
      '<path fill="currentColor" d="M6.6 10.8a15.2 15.2 0 0 0 6.6 6.6l2.2-2.2a1 1 0 0 1 1-.25c1.1.37 2.3.57 3.6.57a1 1 0 0 1 1 1V20a1 1 0 0 1-1 1A17 17 0 0 1 3 4a1 1 0 0 1 1-1h3.5a1 1 0 0 1 1 1c0 1.25.2 2.45.57 3.57a1 1 0 0 1-.25 1z"/>',
    ),
    hangUp: icon(
      '<path fill="currentColor" d="M12 9c-1.6 0-3.15.25-4.6.72v3.1c0 .39-.23.74-.56.9-.98.49-1.87 1.12-2.66 1.85a1 1 0 0 1-1.41-.01L.29 13.08a1 1 0 0 1 0-1.41C3.34 8.78 7.46 7 12 7s8.66 1.78 11.71 4.67a1 1 0 0 1 0 1.41l-2.48 2.48a1 1 0 0 1-1.41.01 11.3 11.3 0 0 0-2.67-1.85 1 1 0 0 1-.56-.9v-3.1A15 15 0 0 0 12 9z"/>',
    ),
    mic: icon(
      '<path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11z"/>',
    ),
    micOff: icon(
      '<path fill="currentColor" d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11z"/><path stroke="currentColor" stroke-width="2.2" stroke-linecap="round" d="M4 3.5l16 17"/>',
    ),
    send: icon('<path fill="currentColor" d="M3.4 20.4 21 12 3.4 3.6 3.4 10.1 15 12 3.4 13.9z"/>'),
    close: icon(
      '<path stroke="currentColor" stroke-width="2" stroke-linecap="round" d="M6 6l12 12M18 6 6 18"/>',
    ),
    alert: icon(
      '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="1.8"/><path d="M12 7.5v5.5" stroke="currentColor" stroke-width="2.2" stroke-linecap="round"/><circle cx="12" cy="16.6" r="1.3" fill="currentColor"/>',
    ),
    face: icon(
      '<circle cx="12" cy="12" r="9" fill="none" stroke="currentColor" stroke-width="1.8"/><circle cx="9" cy="10" r="1.3" fill="currentColor"/><circle cx="15" cy="10" r="1.3" fill="currentColor"/><path d="M8.5 14.5c1.9 2 5.1 2 7 0" fill="none" stroke="currentColor" stroke-width="1.8" stroke-linecap="round"/>',
    ),
  };

  const STYLE = `
:host { display: block; }
:host([launcher]) { display: block; width: 0; height: 0; }
:host([hidden]) { display: none; }
.root {
  all: initial;
  display: block;
  --accent: #5b8cff;
  --accent-fg: #ffffff;
  --panel: #151a29;
  --raised: #1d2334;
  --fg: #eef1f8;
  --muted: #9aa3ba;
  --line: rgb(255 255 255 / 8%);
  --danger: #e5484d;
  --ok: #30a46c;
  --warn: #f5a623;
  --width: 360px;
  font-family: ui-sans-serif, system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue",
    Arial, sans-serif;
  font-size: 14px;
  line-height: 1.45;
  color: var(--fg);
  text-align: left;
  -webkit-font-smoothing: antialiased;
}
.root *, .root *::before, .root *::after { box-sizing: border-box; }
button, input { font: inherit; color: inherit; margin: 0; letter-spacing: inherit; }
button { cursor: pointer; -webkit-tap-highlight-color: transparent; }
button:disabled { opacity: 0.4; cursor: default; }
button:focus-visible, input:focus-visible {
  outline: 2px solid color-mix(in srgb, var(--accent) 55%, white);
  outline-offset: 2px;
}
[hidden] { display: none !important; }
svg { width: 20px; height: 20px; display: block; }

.panel {
  width: var(--width);
  max-width: 100%;
  display: flex;
  flex-direction: column;
  background: var(--panel);
  border-radius: 20px;
  overflow: hidden;
  box-shadow: 0 24px 60px rgb(6 10 20 / 32%), 0 2px 8px rgb(6 10 20 / 18%);
}
.bar { display: flex; align-items: center; gap: 10px; padding: 12px 12px 12px 16px; }
.dot {
  flex: none; width: 10px; height: 10px; border-radius: 50%;
  background: var(--muted); box-shadow: 0 0 0 3px rgb(255 255 255 / 6%);
}
.dot[data-state="connected"] { background: var(--ok); }
.dot[data-state="connecting"], .dot[data-state="reconnecting"] {
  background: var(--warn); animation: pulse 1.1s ease-in-out infinite;
}
.dot[data-state="error"] { background: var(--danger); }
@keyframes pulse { 50% { opacity: 0.35; } }
.heading { display: flex; flex-direction: column; flex: 1; min-width: 0; }
.name { font-weight: 650; font-size: 15px; line-height: 1.25; }
.status {
  color: var(--muted); font-size: 12.5px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
}
.icon-button {
  flex: none; width: 34px; height: 34px; border: 0; border-radius: 50%;
  display: grid; place-items: center; background: transparent; color: var(--muted);
}
.icon-button:hover { background: var(--raised); color: var(--fg); }

.stage {
  position: relative; aspect-ratio: 1 / 1; overflow: hidden;
  background: radial-gradient(circle at 50% 38%, #222b47, #0b0e18 72%);
}
video {
  position: absolute; inset: 0; width: 100%; height: 100%;
  object-fit: cover; display: block; opacity: 0; transition: opacity 0.35s;
}
.stage.live video { opacity: 1; }
.intro {
  position: absolute; inset: 0; display: flex; flex-direction: column;
  align-items: center; justify-content: center; gap: 18px; padding: 28px; text-align: center;
}
.portrait {
  width: 84px; height: 84px; border-radius: 50%; display: grid; place-items: center;
  color: var(--accent); background: color-mix(in srgb, var(--accent) 14%, transparent);
  box-shadow: 0 0 0 8px color-mix(in srgb, var(--accent) 7%, transparent);
}
.portrait svg { width: 44px; height: 44px; }
.message { margin: 0; max-width: 24em; display: flex; flex-direction: column; gap: 4px; }
.headline { font-size: 17px; font-weight: 650; line-height: 1.3; color: var(--fg); }
.detail { font-size: 14px; color: var(--muted); }
.detail:empty { display: none; }
.intro[data-kind="error"] .detail { color: #ffc2c2; }
.log {
  display: none; flex: 1 1 auto; min-height: 0; overflow-y: auto; margin: 0;
  padding: 14px 12px 6px; list-style: none; flex-direction: column; gap: 8px;
}
.log:empty::before {
  content: "Your conversation appears here."; margin: auto; color: var(--muted); font-size: 14px;
}
.entry {
  max-width: 85%; padding: 8px 12px; border-radius: 16px; background: var(--raised);
  font-size: 15px; line-height: 1.4; overflow-wrap: anywhere;
}
.entry.bot { align-self: flex-start; border-bottom-left-radius: 4px; }
.entry.user {
  align-self: flex-end; border-bottom-right-radius: 4px;
  background: var(--accent); color: var(--accent-fg);
}
.entry.live::after { content: " ▍"; opacity: 0.55; }
.intro[data-kind="error"] .portrait { color: var(--danger); background: rgb(229 72 77 / 14%);
  box-shadow: 0 0 0 8px rgb(229 72 77 / 7%); }
.spinner {
  width: 28px; height: 28px; border-radius: 50%;
  border: 3px solid rgb(255 255 255 / 15%); border-top-color: var(--accent);
  animation: spin 0.9s linear infinite;
}
@keyframes spin { to { transform: rotate(360deg); } }
.start {
  display: inline-flex; align-items: center; gap: 8px; border: 0; border-radius: 999px;
  padding: 10px 20px 10px 16px; font-weight: 600; background: var(--accent);
  color: var(--accent-fg);
  box-shadow: 0 8px 22px color-mix(in srgb, var(--accent) 40%, transparent);
}
.start svg { width: 18px; height: 18px; }
.banner {
  position: absolute; top: 12px; left: 50%; transform: translateX(-50%);
  padding: 6px 12px; border-radius: 999px; font-size: 12.5px; white-space: nowrap;
  background: rgb(14 17 28 / 82%); backdrop-filter: blur(6px);
}
.captions {
  position: absolute; left: 12px; right: 12px; bottom: 12px;
  display: flex; flex-direction: column; gap: 6px; pointer-events: none;
}
.caption {
  margin: 0; padding: 7px 11px; border-radius: 14px; max-width: 88%;
  background: rgb(10 12 20 / 64%); backdrop-filter: blur(6px);
  font-size: 14px; line-height: 1.4; overflow-wrap: anywhere;
}
/* The latest lines only, so a long answer does not cover the face. */
.clip {
  display: flex; flex-direction: column; justify-content: flex-end; overflow: hidden;
  max-height: calc(3 * 1.4em);
}
.caption.user .clip { max-height: calc(2 * 1.4em); }
.caption.bot { align-self: flex-start; border-bottom-left-radius: 4px; }
.caption.user {
  align-self: flex-end; border-bottom-right-radius: 4px; color: var(--accent-fg);
  background: color-mix(in srgb, var(--accent) 82%, black);
}
.caption.live .words::after { content: " ▍"; opacity: 0.55; }
.sound {
  position: absolute; top: 12px; right: 12px; border: 0; border-radius: 999px;
  padding: 6px 12px; font-size: 12.5px; background: rgb(255 255 255 / 90%); color: #111;
}

.dock { display: flex; align-items: center; gap: 8px; padding: 12px; }
.round {
  flex: none; width: 42px; height: 42px; border: 0; border-radius: 50%;
  display: grid; place-items: center; background: var(--raised); color: var(--fg);
  transition: background 0.15s, transform 0.1s;
}
.round:not(:disabled):active { transform: scale(0.94); }
.round.mute[aria-pressed="true"] { background: #f4f5f8; color: #141824; }
.round.send { background: transparent; color: var(--accent); }
.round.call { background: var(--accent); color: var(--accent-fg); }
.round.call.active { background: var(--danger); color: #fff; }
.text {
  flex: 1; min-width: 0; height: 42px; padding: 0 16px; border-radius: 999px;
  border: 1px solid rgb(255 255 255 / 10%); background: var(--raised); color: var(--fg);
}
.text::placeholder { color: var(--muted); opacity: 1; }
.text:focus-visible { outline: none; border-color: var(--accent);
  box-shadow: 0 0 0 3px color-mix(in srgb, var(--accent) 30%, transparent); }
.spacer { flex: 1; }
.brand { text-align: center; font-size: 11px; color: var(--muted); padding: 0 0 10px; opacity: 0.8; }

.launcher {
  position: fixed; z-index: 2147483000; right: 20px; bottom: 20px;
  display: flex; align-items: center; gap: 10px; border: 0; border-radius: 999px;
  padding: 8px 18px 8px 8px; font-size: 15px; font-weight: 600;
  background: var(--accent); color: var(--accent-fg);
  box-shadow: 0 10px 28px rgb(6 10 20 / 28%);
}
.launcher .badge {
  width: 36px; height: 36px; border-radius: 50%; display: grid; place-items: center;
  background: rgb(255 255 255 / 18%);
}
.root.is-launcher .panel {
  position: fixed; z-index: 2147483001; right: 20px; bottom: 84px;
  max-height: calc(100vh - 104px);
}
.root.is-launcher .stage { flex: 0 1 auto; min-height: 120px; }
.root.is-left .launcher, .root.is-left .panel { right: auto; left: 20px; }
.root.is-top .launcher { bottom: auto; top: 20px; }
.root.is-top .panel { bottom: auto; top: 84px; }
@media (max-width: 520px) {
  .root.is-launcher .panel {
    inset: 0; width: 100%; height: 100%; height: 100dvh; max-height: none; border-radius: 0;
  }
  .root.is-launcher .stage { aspect-ratio: auto; flex: none; height: min(100vw, 52dvh); }
  .root.is-launcher .captions { display: none; }
  .root.is-launcher .log { display: flex; }
  .root.is-launcher .dock { border-top: 1px solid var(--line); }
  .root.is-launcher.is-open .launcher { display: none; }
  .root:not(.is-launcher) .panel { border-radius: 16px; }
}
@media (prefers-reduced-motion: reduce) {
  .dot, .spinner { animation: none; }
  video, .round { transition: none; }
}
`;

  const TEMPLATE = `
<style>${STYLE}</style>
<div class="root">
  <button class="launcher" type="button" aria-expanded="false" hidden>
    <span class="badge">${ICONS.face}</span><span class="launcher-label"></span>
  </button>
  <section class="panel" aria-label="Avatar">
    <header class="bar">
      <span class="dot" data-state="idle"></span>
      <div class="heading">
        <span class="name"></span>
        <span class="status" role="status" aria-live="polite">Ready</span>
      </div>
      <button class="icon-button close" type="button" aria-label="Close" hidden>${ICONS.close}</button>
    </header>
    <div class="stage">
      <video playsinline autoplay></video>
      <div class="intro" data-kind="idle">
        <div class="portrait">${ICONS.face}</div>
        <div class="spinner" hidden></div>
        <p class="message"><span class="headline"></span><span class="detail"></span></p>
        <button class="start" type="button">${ICONS.call}<span>Start call</span></button>
      </div>
      <div class="banner" role="status" hidden></div>
      <div class="captions" aria-live="polite">
        <p class="caption bot" hidden><span class="clip"><span class="words"></span></span></p>
        <p class="caption user" hidden><span class="clip"><span class="words"></span></span></p>
      </div>
      <button class="sound" type="button" hidden>Tap to turn the sound on</button>
    </div>
    <ol class="log" aria-label="Conversation" aria-live="polite"></ol>
    <form class="dock">
      <button class="round mute" type="button" aria-label="Mute microphone" aria-pressed="false" title="Mute microphone" disabled>${ICONS.mic}</button>
      <input class="text" type="text" name="message" autocomplete="off" enterkeyhint="send"
        maxlength="500" placeholder="Type a message…" aria-label="Message to the avatar">
      <button class="round send" type="submit" aria-label="Send message" title="Send">${ICONS.send}</button>
      <span class="spacer" hidden></span>
      <button class="round call" type="button" aria-label="Start call" title="Start call">${ICONS.call}</button>
    </form>
  </section>
</div>`;

  /** A readable text colour on ``background`` (any CSS colour). */
  function contrastOn(background, probe) {
    probe.style.color = background;
    const [r, g, b] = (getComputedStyle(probe).color.match(/[\d.]+/g) || [0, 0, 0]).map(Number);
    probe.style.color = "";
    const lin = (c) => ((c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
    const luminance = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    return luminance > 0.4 ? "#10131c" : "#ffffff";
  }

  class VisageAvatar extends HTMLElement {
    static observedAttributes = [
      "theme", "size", "position", "greeting", "captions", "mode", "name", "label", "server",
    ];

    #root;
    #$ = {};
    #controller = null;
    #loading = null;
    #muted = false;
    #open = false;
    #state = "idle";

    // A page may set ``element.getToken = async () => token`` (its own backend's token,
    // asked for each connection). Not declared as a field: a field would overwrite a
    // function the page set before this element was upgraded.

    constructor() {
      super();
      this.#root = this.attachShadow({ mode: "closed" });
      this.#root.innerHTML = TEMPLATE;
      const q = (selector) => this.#root.querySelector(selector);
      for (const name of [
        "root", "launcher", "panel", "dot", "name", "status", "close", "stage", "intro",
        "spinner", "message", "start", "banner", "captions", "sound", "dock", "mute",
        "text", "send", "spacer", "call", "portrait", "headline", "detail", "log", "badge",
      ]) {
        this.#$[name] = q(`.${name}`);
      }
      this.#$.video = q("video");
      this.#$.botCaption = q(".caption.bot");
      this.#$.userCaption = q(".caption.user");
      this.#$.launcherLabel = q(".launcher-label");
      // Keep the newest message in view when the layout changes (a phone turned, say).
      const log = this.#$.log;
      new ResizeObserver(() => (log.scrollTop = log.scrollHeight)).observe(log);
      this.#wire();
    }

    connectedCallback() {
      this.#render();
      if (on(this.getAttribute("autostart")) || this.getAttribute("autostart") === "") {
        if (this.#isLauncher) this.open();
        this.start();
      }
    }

    disconnectedCallback() {
      if (this.#controller) this.#controller.hangUp();
    }

    attributeChangedCallback(name) {
      if ((name === "mode" || name === "server") && this.#controller && this.#state === "idle") {
        this.#controller = null; // the next call is built with the new value
        this.#loading = null;
      }
      this.#render();
    }

    get #isLauncher() {
      return this.hasAttribute("launcher");
    }

    get #mode() {
      const mode = (this.getAttribute("mode") || "voice+text").trim().toLowerCase();
      return MODES.includes(mode) ? mode : "voice+text";
    }

    get #server() {
      return (this.getAttribute("server") || scriptOrigin || location.origin).replace(/\/$/, "");
    }

    // Public API: start(), hangUp(), sendText(text), open(), close().

    /** Start the call (the launcher's panel opens too). */
    async start() {
      if (this.#isLauncher && !this.#open) this.open();
      const controller = await this.#load();
      if (controller) controller.start();
    }

    hangUp() {
      if (this.#controller) this.#controller.hangUp();
    }

    /** Type a message to the avatar (starts the call when there is none). */
    async sendText(text) {
      if (this.#isLauncher && !this.#open) this.open();
      const controller = await this.#load();
      if (controller) controller.sendText(String(text));
    }

    open() {
      if (!this.#isLauncher || this.#open) return;
      this.#open = true;
      this.#render();
      requestAnimationFrame(() => {
        const target = this.#$.start.offsetParent ? this.#$.start : this.#$.call;
        target.focus();
      });
    }

    close() {
      if (!this.#isLauncher || !this.#open) return;
      this.hangUp();
      this.#open = false;
      this.#render();
      this.#$.launcher.focus();
    }

    #emit(type, detail) {
      this.dispatchEvent(new CustomEvent(`visage:${type}`, { detail, bubbles: true, composed: true }));
    }

    #load() {
      if (this.#controller) return Promise.resolve(this.#controller);
      if (!this.#loading) {
        const server = this.#server;
        this.#showStatus({ state: "connecting", text: "Connecting…" });
        this.#loading = import(`${server}/static/controller.js`).then(
          (module) => (this.#controller = this.#makeController(module, server)),
          (error) => {
            this.#loading = null;
            console.error("visage: could not load the widget from", server, error);
            this.#failed(`Cannot reach the avatar server at ${server}.`);
            return null;
          },
        );
      }
      return this.#loading;
    }

    #makeController(module, server) {
      const tokenUrl = this.getAttribute("token-url");
      const avatar = this.getAttribute("avatar");
      const controller = new module.CallController({
        serverUrl: server,
        mode: this.#mode,
        requestData: avatar ? { avatar } : {},
        getToken: () => {
          if (typeof this.getToken === "function") return this.getToken();
          if (tokenUrl) return module.fetchTokenFrom(new URL(tokenUrl, location.href).href);
          return module.mintSessionToken(server);
        },
      });
      controller.addEventListener("status", ({ detail }) => this.#showStatus(detail));
      controller.addEventListener("connected", () => {
        this.#muted = false; // a new connection has a new, live microphone
        this.#renderMute();
        this.#emit("connected", {});
      });
      controller.addEventListener("disconnected", ({ detail }) => {
        if (!detail.reconnecting) this.#stopVideo();
        this.#emit("disconnected", detail);
      });
      controller.addEventListener("transcript", ({ detail }) => this.#emit("transcript", detail));
      controller.addEventListener("error", ({ detail }) => this.#emit("error", detail));
      controller.addEventListener("caption", ({ detail }) => this.#caption(detail));
      controller.addEventListener("track", ({ detail }) => this.#play(detail.stream));
      return controller;
    }

    #failed(message) {
      this.#showStatus({ state: "error", text: message });
      this.#emit("error", { message });
    }

    #wire() {
      const $ = this.#$;
      $.launcher.addEventListener("click", () => (this.#open ? this.close() : this.open()));
      $.close.addEventListener("click", () => this.close());
      $.start.addEventListener("click", () => this.start());
      $.call.addEventListener("click", () => (this.#state === "idle" || this.#state === "error"
        || this.#state === "ended" ? this.start() : this.hangUp()));
      $.mute.addEventListener("click", () => {
        this.#muted = !this.#muted;
        if (this.#controller) this.#controller.setMicEnabled(!this.#muted);
        this.#renderMute();
      });
      $.dock.addEventListener("submit", (event) => {
        event.preventDefault();
        const text = $.text.value.trim();
        if (!text) return;
        $.text.value = "";
        this.sendText(text);
      });
      $.sound.addEventListener("click", () => {
        $.video.muted = false;
        $.video.play().catch(() => {});
        $.sound.hidden = true;
      });
      this.#root.addEventListener("keydown", (event) => {
        if (event.key === "Escape" && this.#isLauncher && this.#open) this.close();
      });
    }

    #play(stream) {
      const video = this.#$.video;
      if (video.srcObject !== stream) video.srcObject = stream;
      video.muted = false;
      // Without a click on this page first, a browser may refuse sound: play muted and
      // offer to turn it on.
      video.play().catch(() => {
        video.muted = true;
        this.#$.sound.hidden = false;
        video.play().catch(() => {});
      });
      this.#$.stage.classList.add("live");
      this.#renderIntro();
    }

    #stopVideo() {
      this.#$.stage.classList.remove("live");
      this.#$.video.srcObject = null;
      this.#$.sound.hidden = true;
      for (const role of ["bot", "user"]) this.#caption({ role, text: "", live: false });
    }

    #caption({ role, text, live, turn }) {
      const element = role === "bot" ? this.#$.botCaption : this.#$.userCaption;
      element.querySelector(".words").textContent = text;
      element.hidden = !text;
      element.classList.toggle("live", !!live && !!text);
      if (!text) return;
      // The conversation so far (shown where there is room: the phone layout).
      const log = this.#$.log;
      let entry = log.lastElementChild;
      if (!entry || entry.dataset.turn !== String(turn)) {
        entry = document.createElement("li");
        entry.className = `entry ${role}`;
        entry.dataset.turn = String(turn);
        log.append(entry);
        while (log.children.length > 100) log.firstElementChild.remove();
      }
      entry.textContent = text;
      entry.classList.toggle("live", !!live);
      log.scrollTop = log.scrollHeight;
    }

    #showStatus({ state, text }) {
      this.#state = state;
      this.#statusText = text;
      this.#render();
      this.#emit("status", { state, text });
    }

    #statusText = "Ready";

    #render() {
      const $ = this.#$;
      const mode = this.#mode;
      const launcher = this.#isLauncher;
      const state = this.#state;
      const inCall = state === "connecting" || state === "connected" || state === "reconnecting";
      const name = this.getAttribute("name") || "Live avatar";

      // Looks: theme colour, size, position.
      const theme = this.getAttribute("theme");
      if (theme && CSS.supports("color", theme)) {
        $.root.style.setProperty("--accent", theme);
        $.root.style.setProperty("--accent-fg", contrastOn(theme, $.spacer));
      } else {
        $.root.style.removeProperty("--accent");
        $.root.style.removeProperty("--accent-fg");
      }
      const size = (this.getAttribute("size") || "medium").trim();
      const width = SIZES[size] || (/^\d+$/.test(size) ? `${size}px` : size);
      if (CSS.supports("width", width)) $.root.style.setProperty("--width", width);
      const position = (this.getAttribute("position") || "bottom-right").toLowerCase();
      $.root.classList.toggle("is-launcher", launcher);
      $.root.classList.toggle("is-open", launcher && this.#open);
      $.root.classList.toggle("is-left", launcher && position.includes("left"));
      $.root.classList.toggle("is-top", launcher && position.includes("top"));

      // Launcher and panel.
      $.launcher.hidden = !launcher;
      $.launcherLabel.textContent = this.getAttribute("label") || "Talk to us";
      $.launcher.setAttribute("aria-expanded", String(launcher && this.#open));
      $.panel.hidden = launcher && !this.#open;
      $.panel.setAttribute("role", launcher ? "dialog" : "region");
      $.panel.setAttribute("aria-label", `${name}: video call`);
      $.close.hidden = !launcher;
      $.name.textContent = name;
      $.dot.dataset.state = state;
      $.status.textContent = state === "error" || state === "ended" ? "Not connected" : this.#statusText;

      // Controls for the mode and state.
      $.text.hidden = $.send.hidden = mode === "voice";
      $.mute.hidden = mode === "text";
      $.spacer.hidden = mode !== "voice";
      $.mute.disabled = state !== "connected";
      $.call.classList.toggle("active", inCall);
      const callLabel = inCall ? "End call" : "Start call";
      $.call.setAttribute("aria-label", callLabel);
      $.call.title = callLabel;
      $.call.innerHTML = inCall ? ICONS.hangUp : ICONS.call;
      $.captions.hidden = $.log.hidden = off(this.getAttribute("captions") ?? "on");
      $.badge.innerHTML = launcher && this.#open ? ICONS.close : ICONS.face;
      $.banner.hidden = state !== "reconnecting";
      $.banner.textContent = state === "reconnecting" ? this.#statusText : "";
      this.#renderMute();
      this.#renderIntro();
    }

    #renderMute() {
      const $ = this.#$;
      $.mute.setAttribute("aria-pressed", String(this.#muted));
      const label = this.#muted ? "Unmute microphone" : "Mute microphone";
      $.mute.setAttribute("aria-label", label);
      $.mute.title = label;
      $.mute.innerHTML = this.#muted ? ICONS.micOff : ICONS.mic;
    }

    #renderIntro() {
      const $ = this.#$;
      const state = this.#state;
      const live = $.stage.classList.contains("live");
      const connecting = state === "connecting" || (state === "reconnecting" && !live);
      $.intro.hidden = live && (state === "connected" || state === "reconnecting");
      $.intro.dataset.kind = state === "error" ? "error" : state;
      if (state === "error") $.intro.setAttribute("role", "alert");
      else $.intro.removeAttribute("role");
      $.spinner.hidden = !connecting;
      $.portrait.hidden = connecting;
      $.start.hidden = connecting || state === "connected";
      $.start.querySelector("span").textContent =
        state === "error" || state === "ended" ? "Try again" : "Start call";
      if (this.#mode === "text") $.start.hidden = true;
      $.portrait.innerHTML = state === "error" ? ICONS.alert : ICONS.face;
      let [headline, detail] = [this.getAttribute("greeting") || GREETING, HINTS[this.#mode]];
      if (state === "connecting") [headline, detail] = [this.#statusText, ""];
      else if (connecting) [headline, detail] = ["Connection lost", this.#statusText];
      else if (state === "error") [headline, detail] = ["Can't connect", this.#statusText];
      else if (state === "ended") [headline, detail] = ["Call ended", this.#statusText];
      else if (state === "connected") [headline, detail] = ["Connected", "Waiting for the video…"];
      $.headline.textContent = headline;
      $.detail.textContent = detail;
    }
  }

  if (!customElements.get(TAG)) customElements.define(TAG, VisageAvatar);

  // The script tag's own launcher, unless data-launcher="off" (inline elements only).
  function addLauncher() {
    if (!script || off(script.dataset.launcher ?? "on")) return;
    const element = document.createElement(TAG);
    element.setAttribute("launcher", "");
    for (const [key, value] of Object.entries(script.dataset)) {
      if (key === "launcher") continue;
      element.setAttribute(key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), value);
    }
    if (!element.hasAttribute("server")) element.setAttribute("server", scriptOrigin);
    document.body.appendChild(element);
  }
  if (document.body) addLauncher();
  else document.addEventListener("DOMContentLoaded", addLauncher, { once: true });
})();
