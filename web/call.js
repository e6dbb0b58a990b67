// VisageCall: one WebRTC call to a Visage (or any pipecat SmallWebRTC) server.
// Speaks pipecat's signalling (POST/PATCH /api/offer) and the RTVI protocol over the
// data channel, so the same server also works with pipecat's own client SDKs.

const RTVI_LABEL = "rtvi-ai";
const RTVI_VERSION = "2.2.0";
const ICE_GATHER_TIMEOUT_MS = 2000;
const PING_INTERVAL_MS = 1000;

export class VisageCall extends EventTarget {
  /**
   * @param {object} options
   * @param {string} [options.serverUrl] base URL of the server ("" = this page's origin)
   * @param {boolean} [options.audioProcessing] browser echo cancellation, noise
   *   suppression and gain control on the mic (keep on for real users)
   */
  constructor({ serverUrl = "", audioProcessing = true } = {}) {
    super();
    this.serverUrl = serverUrl.replace(/\/$/, "");
    this.audioProcessing = audioProcessing;
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
      this.mic = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: this.audioProcessing,
          noiseSuppression: this.audioProcessing,
          autoGainControl: this.audioProcessing,
        },
      });
      this._emit("mic", { stream: this.mic, startedAt: performance.now() });
      const pc = new RTCPeerConnection({ iceServers: [] });
      this.pc = pc;
      this.remoteStream = new MediaStream();
      pc.addTransceiver(this.mic.getAudioTracks()[0], { direction: "sendrecv" });
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.ontrack = (event) => {
        this.remoteStream.addTrack(event.track);
        this._emit("track", { track: event.track, stream: this.remoteStream });
      };
      pc.onconnectionstatechange = () => {
        const s = pc.connectionState;
        if (s === "connected") this._setState("connected");
        else if (s === "failed" || s === "closed") this._hangUpLocally(`connection ${s}`);
      };
      this.channel = pc.createDataChannel("visage", { ordered: true });
      this.channel.onopen = () => this._onChannelOpen();
      this.channel.onmessage = (event) => this._onChannelMessage(event.data);
      await this._negotiate(false);
    } catch (error) {
      this._hangUpLocally(String(error && error.message ? error.message : error));
      throw error;
    }
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
    const response = await fetch(`${this.serverUrl}/api/offer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(answer.error || `server answered ${response.status}`);
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
    if (!this.channel || this.channel.readyState !== "open") return;
    this._msgId += 1;
    this.channel.send(JSON.stringify({ label: RTVI_LABEL, type, id: String(this._msgId), data }));
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
