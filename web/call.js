// VisageCall: one WebRTC call to a Visage (or any pipecat SmallWebRTC) server.
// Speaks pipecat's signalling (POST/PATCH /api/offer) and the RTVI protocol over the
// data channel, so the same server also works with pipecat's own client SDKs.

const RTVI_LABEL = "rtvi-ai";
const RTVI_VERSION = "2.2.0";
const ICE_GATHER_TIMEOUT_MS = 2000;
const PING_INTERVAL_MS = 1000;
const LOST_MS = 4000; // "disconnected" this long ends the call (a caller may reconnect)

export class VisageCall extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.serverUrl] base URL of the server ("" = this page's origin)
   * @param {boolean} [options.audioProcessing] browser echo cancellation, noise
   *   suppression and gain control on the mic (keep on for real users)
   * @param {RTCIceServer[]} [options.iceServers] STUN/TURN servers (what the server's
   *   GET /api/ice-servers gives: see fetchIceServers)
   * @param {boolean} [options.askIceServers] fetch them from the server at each start,
   *   with this connection's token (fresh TURN credentials; a server with token auth
   *   hands them only to a caller holding a token), instead of using iceServers
   * @param {RTCIceTransportPolicy} [options.iceTransportPolicy] "all", or "relay" to
   *   connect only through a TURN relay
   * @param {string} [options.token] a session token (POST /api/session) for one connection
   * @param {() => Promise<string|null>} [options.getToken] mints a token for each
   *   connection (tokens are single-use: a reconnect needs a new one)
   * @param {boolean} [options.audioInput] send the microphone; false: a receive-only
   *   audio line instead, and no microphone permission is asked (typed chat only)
   * @param {object} [options.requestData] more fields for the offer's request_data
   */
  constructor({
    serverUrl = "",
    audioProcessing = true,
    iceServers = [],
    askIceServers = false,
    iceTransportPolicy = "all",
    token = null,
    getToken = null,
    audioInput = true,
    requestData = {},
  } = {}) {
    super();
    this.serverUrl = serverUrl.replace(/\/$/, "");
    this.audioProcessing = audioProcessing;
    this.iceServers = iceServers;
    this.askIceServers = askIceServers;
    this.iceTransportPolicy = iceTransportPolicy;
    this.getToken = getToken || (token ? async () => token : null);
    this.audioInput = audioInput;
    this.requestData = requestData;
    this._token = null; // minted by start(), spent by the first offer
    this.pc = null;
    this.pcId = null;
    this.channel = null;
    this.mic = null;
    this.remoteStream = null;
    this.state = "idle";
    this._pingTimer = null;
    this._msgId = 0;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, reason = "") {
    this.state = state;
    this._emit("state", { state, reason });
  }

  async start() {
    if (this.pc) return;
    this._setState("connecting");
    try {
      // The token first: a server that refuses this page never prompts for the mic.
      this._token = this.getToken ? await this.getToken() : null;
      if (this.askIceServers) {
        // Without them a direct connection may still work: only a warning.
        const auth = this._token ? { headers: { Authorization: `Bearer ${this._token}` } } : {};
        this.iceServers = await fetchIceServers(this.serverUrl, auth).catch((error) => {
          console.warn("visage: no ICE servers from the server:", error);
          return [];
        });
      }
      if (this.audioInput) await this._openMic();
      const pc = new RTCPeerConnection({
        iceServers: this.iceServers,
        iceTransportPolicy: this.iceTransportPolicy,
      });
      this.pc = pc;
      this.remoteStream = new MediaStream();
      if (this.mic) pc.addTransceiver(this.mic.getAudioTracks()[0], { direction: "sendrecv" });
      else pc.addTransceiver("audio", { direction: "recvonly" }); // the server needs an audio line
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.ontrack = (event) => {
        this.remoteStream.addTrack(event.track);
        this._emit("track", { track: event.track, stream: this.remoteStream });
      };
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        clearTimeout(this._lostTimer);
        if (s === "connected") this._setState("connected");
        else if (s === "failed" || s === "closed") this._hangUpLocally(`connection ${s}`);
        // "disconnected" may heal by itself; a few seconds of it is a lost connection.
        else if (s === "disconnected") {
          this._lostTimer = setTimeout(() => this._hangUpLocally("connection lost"), LOST_MS);
        }
      };
      const channel = pc.createDataChannel("visage", { ordered: true });
      this.channel = channel;
      // Closed by the other side (our own hang-up clears this.channel first).
      channel.onclose = () => this.channel === channel && this._hangUpLocally("connection closed");
      this.channel.onopen = () => this._onChannelOpen();
      this.channel.onmessage = (event) => this._onChannelMessage(event.data);
      await this._negotiate(false);
    } catch (error) {
      this._hangUpLocally(String(error && error.message ? error.message : error));
      throw error;
    }
  }

  async _openMic() {
    this.mic = await navigator.mediaDevices.getUserMedia({
      audio: {
        echoCancellation: this.audioProcessing,
        noiseSuppression: this.audioProcessing,
        autoGainControl: this.audioProcessing,
      },
    });
    this._emit("mic", { stream: this.mic, startedAt: performance.now() });
  }

  async _negotiate(restart) {
    const pc = this.pc;
    await pc.setLocalDescription(await pc.createOffer());
    await waitForIceGathering(pc, ICE_GATHER_TIMEOUT_MS);
    const body = { sdp: pc.localDescription.sdp, type: pc.localDescription.type };
    if (this.pcId) {
      body.pc_id = this.pcId;
      body.restart_pc = restart;
    }
    // A token is single-use and admits a new call: the first offer spends the one
    // start() minted; a renegotiation of the call (pc_id) needs none.
    const token = this._token;
    this._token = null;
    const requestData = token ? { ...this.requestData, token } : this.requestData;
    if (Object.keys(requestData).length) body.request_data = requestData;
    const response = await fetch(`${this.serverUrl}/api/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new Error(answer.error || `server answered ${response.status}`);
      error.status = response.status;
      throw error;
    }
    this.pcId = answer.pc_id;
    await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  }

  _onChannelOpen() {
    this._sendRtvi("client-ready", { version: RTVI_VERSION, about: { library: "visage-web" } });
    // pipecat's server treats a peer that stops pinging for 3 s as gone.
    this._pingTimer = setInterval(() => {
      if (this.channel && this.channel.readyState === "open") this.channel.send("ping");
    }, PING_INTERVAL_MS);
  }

  _onChannelMessage(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (message.type === "signalling" && message.message) {
      if (message.message.type === "renegotiate") this._negotiate(false).catch(console.error);
      return;
    }
    if (message.label === RTVI_LABEL) this._emit("rtvi", message);
  }

  _sendRtvi(type, data) {
    if (!this.channel || this.channel.readyState !== "open") return null;
    this._msgId += 1;
    this.channel.send(JSON.stringify({ label: RTVI_LABEL, type, id: String(this._msgId), data }));
    return String(this._msgId);
  }

  /**
   * Type to the avatar: RTVI's own send-text message (what pipecat's client SDKs send),
   * a user turn that interrupts the avatar and gets a spoken answer.
   * @returns {string|null} the message's id, or null when the call is not open
   */
  sendText(text) {
    const options = { run_immediately: true, audio_response: true };
    return this._sendRtvi("send-text", { content: text, options });
  }

  setMicEnabled(enabled) {
    if (!this.mic) return;
    this.mic.getAudioTracks().forEach((track) => (track.enabled = enabled));
    if (this.channel && this.channel.readyState === "open") {
      this.channel.send(
        JSON.stringify({
          type: "signalling",
          message: { type: "trackStatus", receiver_index: 0, enabled },
        }),
      );
    }
    this._emit("mic-enabled", { enabled });
  }

  hangUp() {
    this._hangUpLocally("hung up");
  }

  _hangUpLocally(reason) {
    clearTimeout(this._lostTimer);
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._pingTimer = null;
    if (this.channel) this.channel.close();
    if (this.pc) this.pc.close();
    if (this.mic) this.mic.getTracks().forEach((track) => track.stop());
    this.channel = null;
    this.pc = null;
    this.pcId = null;
    this.mic = null;
    if (this.state !== "idle") this._setState("idle", reason);
  }
}

/**
 * The STUN/TURN servers a Visage server hands out (GET /api/ice-servers), with TURN
 * credentials minted for this call. A server without the route (404) means none.
 * @param {string} [serverUrl] base URL of the server ("" = this page's origin)
 * @param {RequestInit} [init] extra fetch options (headers, credentials)
 * @returns {Promise<RTCIceServer[]>}
 */
export async function fetchIceServers(serverUrl = "", init = {}) {
  const response = await fetch(`${serverUrl.replace(/\/$/, "")}/api/ice-servers`, init);
  if (response.status === 404) return [];
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `ICE servers: server answered ${response.status}`);
  return Array.isArray(body.ice_servers) ? body.ice_servers : [];
}

function waitForIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, timeoutMs);
    pc.addEventListener("icegatheringstatechange", check);
  });
}
