// The call page: wires VisageCall to the video, the buttons and the captions.
import { VisageCall } from "./call.js";
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

const mouthRegion = params.get("mouth") ? params.get("mouth").split(",").map(Number) : null;
const call = new VisageCall({
  serverUrl: params.get("server") || "",
  audioProcessing: params.get("audio_processing") !== "0",
});
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
let botWords = [];

// Tests and benchmarks read this; it is also handy in the devtools console.
window.visage = { call, stats: null, messages: [], userTranscripts: [], botTranscripts: [] };

function setStatus(state, text) {
  statusText.textContent = text;
  statusDot.dataset.state = state;
}

call.addEventListener("state", ({ detail }) => {
  const { state, reason } = detail;
  if (state === "connecting") setStatus("connecting", "Connecting…");
  if (state === "connected") setStatus("connected", "Connected");
  if (state === "idle") {
    setStatus("idle", reason && reason !== "hung up" ? `Disconnected: ${reason}` : "Ready");
    callButton.textContent = "Call";
    callButton.classList.remove("danger");
    muteButton.disabled = true;
    placeholder.hidden = false;
    if (stats) stats.stop();
    stats = null;
  }
});

function ensureStats() {
  if (!stats) {
    stats = new MediaStats(video, { mouthRegion });
    window.visage.stats = stats;
  }
  return stats;
}

call.addEventListener("mic", ({ detail }) => {
  window.visage.micStartedAt = detail.startedAt;
  ensureStats().watchMic(detail.stream);
});

call.addEventListener("track", ({ detail }) => {
  if (video.srcObject !== detail.stream) video.srcObject = detail.stream;
  video.play().catch(() => {});
  placeholder.hidden = true;
  ensureStats().watchReply(detail.stream);
});

call.addEventListener("rtvi", ({ detail: message }) => {
  window.visage.messages.push({ t: performance.now(), type: message.type, data: message.data });
  const data = message.data || {};
  switch (message.type) {
    case "user-transcription":
      if (data.final) {
        window.visage.userTranscripts.push({ t: performance.now(), text: data.text });
        userCaption.textContent = data.text;
      }
      break;
    case "user-started-speaking":
      userCaption.classList.add("live");
      break;
    case "user-stopped-speaking":
      userCaption.classList.remove("live");
      break;
    case "bot-started-speaking":
      botCaption.classList.add("live");
      break;
    case "bot-stopped-speaking":
      botCaption.classList.remove("live");
      break;
    case "bot-llm-started":
      botWords = [];
      break;
    case "bot-tts-text":
      botWords.push(data.text);
      botCaption.textContent = botWords.join(" ");
      break;
    case "bot-output":
      if (data.spoken !== false && data.text) {
        window.visage.botTranscripts.push({ t: performance.now(), text: data.text });
      }
      break;
    case "server-message":
      if (data.type === "visage-latency") {
        window.visage.latency = window.visage.latency || [];
        window.visage.latency.push(data);
        if (debugOverlay) showLatency(data);
      }
      break;
    case "error":
      setStatus("error", `Error: ${data.error || data.message || "unknown"}`);
      break;
  }
});

async function startCall() {
  callButton.textContent = "Hang up";
  callButton.classList.add("danger");
  muteButton.disabled = false;
  muteButton.textContent = "Mute";
  try {
    await call.start();
  } catch (error) {
    setStatus("error", `Could not connect: ${error.message || error}`);
    callButton.textContent = "Call";
    callButton.classList.remove("danger");
  }
}

callButton.addEventListener("click", () => {
  if (call.state === "idle") startCall();
  else call.hangUp();
});

muteButton.addEventListener("click", () => {
  const muted = muteButton.textContent === "Unmute";
  call.setMicEnabled(muted);
  muteButton.textContent = muted ? "Mute" : "Unmute";
  muteButton.setAttribute("aria-pressed", String(!muted));
});

setStatus("idle", "Ready");
if (params.get("autostart") === "1") startCall();
