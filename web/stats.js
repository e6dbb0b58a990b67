// MediaStats: what actually reached this page, measured from the media itself.
// Counts decoded video frames (requestVideoFrameCallback), follows the loudness of the
// reply audio and of the mic, and, given a mouth region, how much it changes per frame.

const AUDIO_POLL_MS = 10;
const LOUD_RMS = 0.01; // above the comfort noise of a silent WebRTC track
const GAP_MS = 250; // quiet this long separates two sounds

// Follows one audio stream's loudness; records when sounds start and end.
export class LevelMeter {
  constructor(stream, context) {
    const source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 512;
    source.connect(this.analyser);
    this.buffer = new Float32Array(this.analyser.fftSize);
    this.rms = 0;
    this.peakRms = 0;
    this.onsets = []; // performance.now() when a sound began after a gap
    this.offsets = []; // performance.now() when a sound ended (followed by a gap)
    this._lastLoud = null;
    this._inSound = false;
  }

  poll(now) {
    this.analyser.getFloatTimeDomainData(this.buffer);
    let sum = 0;
    for (const v of this.buffer) sum += v * v;
    this.rms = Math.sqrt(sum / this.buffer.length);
    this.peakRms = Math.max(this.peakRms, this.rms);
    if (this.rms >= LOUD_RMS) {
      if (!this._inSound) this.onsets.push(now);
      this._inSound = true;
      this._lastLoud = now;
    } else if (this._inSound && now - this._lastLoud >= GAP_MS) {
      this._inSound = false;
      this.offsets.push(this._lastLoud);
    }
  }
}

export class MediaStats {
  constructor(video, { mouthRegion = null } = {}) {
    this.video = video;
    this.mouthRegion = mouthRegion; // [x0, y0, x1, y1] as fractions of the frame
    this.videoFrames = 0;
    this.firstVideoFrameAt = null;
    this.lastVideoFrameAt = null;
    this.frames = []; // {t, mouthDiff, rms} per video frame when a mouth region is set
    this.reply = null; // LevelMeter of the avatar's audio
    this.mic = null; // LevelMeter of what the mic sends
    this._context = new AudioContext();
    this._timer = setInterval(() => this._poll(), AUDIO_POLL_MS);
    this._canvas = null;
    this._previous = null;
    this._running = true;
    const onFrame = (now) => {
      if (!this._running) return;
      this.videoFrames += 1;
      if (this.firstVideoFrameAt === null) this.firstVideoFrameAt = now;
      this.lastVideoFrameAt = now;
      if (this.mouthRegion) this._sampleMouth(now);
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  watchReply(stream) {
    if (!this.reply && stream.getAudioTracks().length) {
      this.reply = new LevelMeter(stream, this._context);
    }
  }

  watchMic(stream) {
    if (!this.mic) this.mic = new LevelMeter(stream, this._context);
  }

  _poll() {
    const now = performance.now();
    if (this.reply) this.reply.poll(now);
    if (this.mic) this.mic.poll(now);
  }

  _sampleMouth(now) {
    const [x0, y0, x1, y1] = this.mouthRegion;
    const w = this.video.videoWidth;
    const h = this.video.videoHeight;
    if (!w || !h) return;
    if (!this._canvas) {
      this._canvas = document.createElement("canvas");
      this._canvas.width = 48;
      this._canvas.height = 24;
      this._ctx = this._canvas.getContext("2d", { willReadFrequently: true });
    }
    this._ctx.drawImage(this.video, x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h, 0, 0, 48, 24);
    const pixels = this._ctx.getImageData(0, 0, 48, 24).data;
    if (this._previous) {
      let sum = 0;
      for (let i = 0; i < pixels.length; i += 4) {
        sum += Math.abs(pixels[i] - this._previous[i]);
        sum += Math.abs(pixels[i + 1] - this._previous[i + 1]);
      }
      const rms = this.reply ? this.reply.rms : 0;
      this.frames.push({ t: now, mouthDiff: sum / (pixels.length / 2), rms });
    }
    this._previous = pixels;
  }

  fps() {
    if (this.videoFrames < 2) return 0;
    return ((this.videoFrames - 1) * 1000) / (this.lastVideoFrameAt - this.firstVideoFrameAt);
  }

  stop() {
    this._running = false;
    clearInterval(this._timer);
    this._context.close();
  }
}
