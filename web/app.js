// The call page: wires a CallController (web/controller.js, shared with the embeddable
// widget) to the video, the buttons, the captions and the message box.
import { CallController } from "./controller.js";
import { MediaStats } from "./stats.js";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
const video = $("avatar");
const callButton = $("call");
const muteButton = $("mute");
const statusText = $("status-text");
const statusDot = $("status-dot");
const userCaption = $("caption-user");
const botCaption = $("caption-bot");
const placeholder = $("placeholder");
const chat = $("chat");
const chatText = $("chat-text");
const placeholderHtml = placeholder.innerHTML;

const mouthRegion = params.get("mouth") ? params.get("mouth").split(",").map(Number) : null;
const controller = new CallController({
  serverUrl: params.get("server") || "",
  callOptions: {
    audioProcessing: params.get("audio_processing") !== "0",
    // ?relay=1: connect only through the server's TURN relay (to debug a TURN set-up).
    iceTransportPolicy: params.get("relay") === "1" ? "relay" : "all",
  },
});
const call = controller.call;
let stats = null;
const debugOverlay = params.get("debug") === "1" ? $("debug") : null;
if (debugOverlay) debugOverlay.hidden = false;

// ?debug=1: the last turn's stage times against their budgets.
function showLatency(report) {
  const rows = Object.entries(report.stages_ms).map(([stage, ms]) => {
    const budget = report.budgets_ms[stage];
    const over = report.over_budget.includes(stage) ? " over" : "";
    return `<tr class="${over}"><td>${stage}</td><td>${Math.round(ms)}</td><td>${budget}</td></tr>`;
  });
  debugOverlay.innerHTML =
    `<table><caption>turn ${report.turn} (ms)</caption>` +
    `<tr><th>stage</th><th>took</th><th>budget</th></tr>${rows.join("")}</table>`;
}

// Tests and benchmarks read this; it is also handy in the devtools console.
window.visage = {
  call,
  controller,
  stats: null,
  messages: [],
  userTranscripts: [],
  botTranscripts: [],
};

controller.addEventListener("status", ({ detail }) => {
  const { state, text } = detail;
  statusText.textContent = text;
  statusDot.dataset.state = state;
  const inCall = state === "connecting" || state === "connected" || state === "reconnecting";
  callButton.textContent = inCall ? "Hang up" : "Call";
  callButton.classList.toggle("danger", inCall);
  muteButton.disabled = state !== "connected";
  if (!inCall) {
    placeholder.hidden = false;
    if (state === "error" || state === "ended") placeholder.textContent = text;
    else placeholder.innerHTML = placeholderHtml;
  }
});

controller.addEventListener("disconnected", ({ detail }) => {
  if (detail.reconnecting) return;
  if (stats) stats.stop();
  stats = null;
});

controller.addEventListener("connected", () => {
  muteButton.textContent = "Mute";
  muteButton.setAttribute("aria-pressed", "false");
});

function ensureStats() {
  if (!stats) {
    stats = new MediaStats(video, { mouthRegion });
    window.visage.stats = stats;
  }
  return stats;
}

controller.addEventListener("mic", ({ detail }) => {
  window.visage.micStartedAt = detail.startedAt;
  ensureStats().watchMic(detail.stream);
});

controller.addEventListener("track", ({ detail }) => {
  if (video.srcObject !== detail.stream) video.srcObject = detail.stream;
  video.play().catch(() => {});
  placeholder.hidden = true;
  ensureStats().watchReply(detail.stream);
});

controller.addEventListener("caption", ({ detail }) => {
  const element = detail.role === "bot" ? botCaption : userCaption;
  element.textContent = detail.text;
  element.classList.toggle("live", !!detail.live && !!detail.text);
});

controller.addEventListener("rtvi", ({ detail: message }) => {
  window.visage.messages.push({ t: performance.now(), type: message.type, data: message.data });
  const data = message.data || {};
  if (message.type === "user-transcription" && data.final) {
    window.visage.userTranscripts.push({ t: performance.now(), text: data.text });
  } else if (message.type === "bot-output" && data.spoken !== false && data.text) {
    window.visage.botTranscripts.push({ t: performance.now(), text: data.text });
  } else if (message.type === "server-message" && data.type === "visage-latency") {
    window.visage.latency = window.visage.latency || [];
    window.visage.latency.push(data);
    if (debugOverlay) showLatency(data);
  }
});

controller.addEventListener("error", ({ detail }) => {
  statusText.textContent = `Error: ${detail.message}`;
  statusDot.dataset.state = "error";
});

callButton.addEventListener("click", () => {
  if (callButton.textContent === "Call") controller.start();
  else controller.hangUp();
});

muteButton.addEventListener("click", () => {
  const muted = muteButton.textContent === "Unmute";
  controller.setMicEnabled(muted);
  muteButton.textContent = muted ? "Mute" : "Unmute";
  muteButton.setAttribute("aria-pressed", String(!muted));
});

// Typed chat: RTVI send-text, a user turn with a spoken answer (starts a call if needed).
chat.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = chatText.value.trim();
  if (!text) return;
  chatText.value = "";
  controller.sendText(text);
});

statusText.textContent = "Ready";
if (params.get("autostart") === "1") controller.start();
