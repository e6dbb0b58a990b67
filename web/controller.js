// CallController: a call as a user interface shows it, shared by the call page (app.js)
// and the embeddable widget (embed.js). It wraps VisageCall with what both need:
//   - a session token (POST /api/session) and fresh ICE servers for every connection;
//   - reconnection with backoff after a dropped connection, never after the user hung
//     up or the server ended the session;
//   - RTVI messages turned into a status line, captions and transcripts.
// Events (CustomEvent, detail in braces):
//   status {state, text}      state: idle | connecting | connected | reconnecting | ended | error
//   connected {}              media flows (again, after a reconnect)
//   disconnected {reason, reconnecting, message?}
//   transcript {role: "user"|"bot", text, final}
//   caption {role, text, live, turn}  what the captions show now (live: still being
//                             said; turn: a new number for each new utterance)
//   error {message}
//   track, mic, rtvi          VisageCall's own, passed on
import { VisageCall } from "./call.js";

const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 8000, 8000];
const ENDED_TEXT = {
  idle: "The call ended after a while without activity.",
  "max-length": "The call reached its maximum length.",
};

/** An Error carrying the HTTP status a server refused with. */
function refused(body, status, what) {
  const error = new Error(body.error || `${what}: the server answered ${status}`);
  error.status = status;
  return error;
}

/**
 * A single-use session token from the Visage server (POST /api/session); null from a
 * server without sessions (404) or one whose tokens only its API key mints (401: where
 * calls need no token the call goes ahead, and where they do the offer's refusal says
 * so). A refusal (403 origin not allowed, 429 too many) throws with the server's reason.
 */
export async function mintSessionToken(serverUrl = "") {
  const response = await fetch(`${serverUrl}/api/session`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
  });
  if (response.status === 404 || response.status === 401) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw refused(body, response.status, "session");
  return body.token || null;
}

/**
 * A token from the host site's own backend (the customer's server mints tokens with its
 * API key): POST ``url``, answered with ``{"token": ...}``.
 */
export async function fetchTokenFrom(url) {
  const response = await fetch(url, { method: "POST", credentials: "same-origin" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.token) throw refused(body, response.status, "token");
  return body.token;
}

export class CallController extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.serverUrl] the Visage server ("" = this page's origin)
   * @param {"voice"|"voice+text"|"text"} [options.mode] text: no microphone at all
   * @param {() => Promise<string|null>} [options.getToken] mints a token per connection
   *   (default: POST /api/session on the server)
   * @param {object} [options.requestData] more fields for the offer's request_data
   * @param {boolean} [options.reconnect] reconnect after a dropped connection
   * @param {object} [options.callOptions] more VisageCall options (audioProcessing, ...)
   */
  constructor({
    serverUrl = "",
    mode = "voice+text",
    getToken = null,
    requestData = {},
    reconnect = true,
    callOptions = {},
  } = {}) {
    super();
    this.serverUrl = serverUrl.replace(/\/$/, "");
    this.mode = mode;
    this.reconnect = reconnect;
    this.call = new VisageCall({
      ...callOptions,
      serverUrl: this.serverUrl,
      audioInput: mode !== "text",
      askIceServers: true,
      requestData,
      getToken: getToken || (() => mintSessionToken(this.serverUrl)),
    });
    this.status = { state: "idle", text: "Ready" };
    this._wanted = false; // the user wants a call: reconnect when it drops
    this._ended = null; // the server's session-ended message
    this._attempt = 0;
    this._retryTimer = null;
    this._everConnected = false;
    this._pendingText = [];
    this._ready = false; // the bot said bot-ready: typed text can go
    this._botWords = [];
    this._caption = { role: null, text: "", turn: 0, final: false, botTurnPending: false };
    this.call.addEventListener("state", ({ detail }) => this._onState(detail));
    this.call.addEventListener("rtvi", ({ detail }) => this._onRtvi(detail));
    for (const type of ["track", "mic"]) {
      this.call.addEventListener(type, ({ detail }) => this._emit(type, detail));
    }
  }

  /** "idle", "connecting" or "connected": the underlying call's state. */
  get state() {
    return this.call.state;
  }

  _emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setStatus(state, text) {
    this.status = { state, text };
    this._emit("status", this.status);
  }

  /** Start a call (if none is running or starting). */
  async start() {
    if (this.call.state !== "idle" || this._wanted) return;
    this._wanted = true;
    this._ended = null;
    this._attempt = 0;
    this._everConnected = false;
    await this._connect();
  }

  async _connect() {
    this._ready = false;
    this._up = false;
    this._starting = true;
    this._setStatus(this._attempt ? "reconnecting" : "connecting", this._connectingText());
    try {
      // The call fetches fresh TURN credentials for each connection (askIceServers).
      if (this._wanted) await this.call.start();
    } catch (error) {
      this._failed(error);
    } finally {
      this._starting = false;
    }
  }

  _connectingText() {
    if (!this._attempt) return "Connecting…";
    return `Connection lost. Reconnecting… (attempt ${this._attempt} of ${RECONNECT_DELAYS_MS.length})`;
  }

  /** A connection attempt failed before the call was up. */
  _failed(error) {
    let message = (error && error.message) || String(error);
    if (error instanceof TypeError) message = `cannot reach the avatar server (${message})`;
    const status = error && error.status;
    // A refusal (origin not allowed, bad token) will not change by retrying; a busy
    // server (429, 503) or an unreachable one might.
    const retry =
      this._everConnected && this._wanted && !(status >= 400 && status < 500 && status !== 429);
    if (retry && this._attempt < RECONNECT_DELAYS_MS.length) {
      this._scheduleReconnect();
      return;
    }
    this._wanted = false;
    const text = this._everConnected ? `Could not reconnect: ${message}` : message;
    this._setStatus("error", text);
    this._emit("error", { message: text });
  }

  _scheduleReconnect() {
    const delay = RECONNECT_DELAYS_MS[this._attempt];
    this._attempt += 1;
    this._setStatus("reconnecting", this._connectingText());
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._wanted && this._connect(), delay);
  }

  _onState({ state, reason }) {
    if (state === "connected") {
      this._everConnected = this._up = true;
      this._attempt = 0;
      this._setStatus("connected", "Connected");
      this._emit("connected");
      return;
    }
    if (state !== "idle") return;
    this._ready = false;
    this._setCaption("user", "", false);
    if (this._ended) {
      const { reason: why, message } = this._ended;
      this._wanted = false;
      this._setStatus("ended", message);
      this._emit("disconnected", { reason: why, reconnecting: false, message });
    } else if (reason === "hung up" || !this._wanted) {
      this._wanted = false;
      this._setStatus("idle", "Call ended");
      this._emit("disconnected", { reason: "hung up", reconnecting: false });
    } else if (this._starting) {
      // start() failed: it throws, and _failed() reports it.
    } else if (!this._up) {
      this._failed(new Error(`could not connect (${reason})`));
    } else if (this.reconnect) {
      this._emit("disconnected", { reason, reconnecting: true });
      this._scheduleReconnect();
    } else {
      this._wanted = false;
      this._setStatus("error", `Disconnected: ${reason}`);
      this._emit("disconnected", { reason, reconnecting: false });
    }
  }

  /** Hang up; no reconnection follows. */
  hangUp() {
    this._wanted = false;
    this._pendingText = [];
    clearTimeout(this._retryTimer);
    if (this.call.state !== "idle") this.call.hangUp();
    else if (this.status.state === "reconnecting" || this.status.state === "connecting") {
      this._setStatus("idle", "Call ended");
      this._emit("disconnected", { reason: "hung up", reconnecting: false });
    }
  }

  setMicEnabled(enabled) {
    this.call.setMicEnabled(enabled);
  }

  /** Type to the avatar; starts the call first when there is none. */
  sendText(text) {
    text = text.trim();
    if (!text) return;
    this._setCaption("user", text, false);
    if (this._ready && this.call.sendText(text)) return;
    this._pendingText.push(text);
    if (this.call.state === "idle" && !this._wanted) this.start();
  }

  _flushText() {
    while (this._ready && this._pendingText.length) this.call.sendText(this._pendingText.shift());
  }

  _setCaption(role, text, live) {
    const c = this._caption;
    if (text) {
      const same = role === c.role && text === c.text;
      const newTurn = role !== c.role || (role === "bot" ? c.botTurnPending : c.final);
      if (newTurn && !same) c.turn += 1;
      if (role === "bot") c.botTurnPending = false;
      Object.assign(c, { role, text, final: !live });
    }
    this._emit("caption", { role, text, live, turn: c.turn });
  }

  /** The status line while connected: who is talking. */
  _talking(text) {
    if (this.status.state === "connected") this._setStatus("connected", text);
  }

  _onRtvi(message) {
    this._emit("rtvi", message);
    const data = message.data || {};
    switch (message.type) {
      case "bot-ready":
        this._ready = true;
        this._flushText();
        break;
      case "user-transcription":
        this._setCaption("user", data.text, !data.final);
        this._emit("transcript", { role: "user", text: data.text, final: !!data.final });
        break;
      case "user-input":
        // Typed text as the server took it (speech also comes as user-transcription).
        if (data.input_type === "chat") {
          this._setCaption("user", data.text, false);
          this._emit("transcript", { role: "user", text: data.text, final: true });
        }
        break;
      case "bot-llm-started":
        this._botWords = [];
        this._caption.botTurnPending = true;
        break;
      case "bot-started-speaking":
        this._talking("Speaking…");
        break;
      case "user-started-speaking":
        this._talking("Hearing you…");
        break;
      case "user-stopped-speaking":
        this._talking("Listening…");
        break;
      case "bot-tts-text":
        this._botWords.push(data.text);
        this._setCaption("bot", this._botWords.join(" "), true);
        break;
      case "bot-stopped-speaking":
        this._setCaption("bot", this._botWords.join(" "), false);
        this._talking(this.mode === "text" ? "Connected" : "Listening…");
        break;
      case "bot-output":
        // One message per sentence as it is spoken, then "completed" once said.
        if (data.spoken_status === "completed") {
          this._emit("transcript", { role: "bot", text: data.text, final: true });
        } else if (data.spoken_status === "in-progress" && data.spoken_progress) {
          const text = data.spoken_progress.accumulated_text;
          this._emit("transcript", { role: "bot", text, final: false });
        }
        break;
      case "server-message":
        if (data.type === "session-ended") {
          const message = data.message || ENDED_TEXT[data.reason] || "The call has ended.";
          this._ended = { reason: data.reason || "ended", message };
          this._wanted = false;
          this.call.hangUp();
        }
        break;
      case "error":
        this._emit("error", { message: data.error || data.message || "unknown error" });
        break;
    }
  }
}
