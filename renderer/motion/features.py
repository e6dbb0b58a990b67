"""Audio features the learned motion model conditions on: normalised log-mel at 100 fps.

The contract, shared by training data and live inference:

* input: float32 mono PCM at ``SAMPLE_RATE`` (16 kHz) in [-1, 1];
* mel frame ``i`` covers samples ``[i * HOP, i * HOP + WIN)`` (not centred; the tail
  window is zero-padded), so ``T_mel == len(pcm) // HOP``;
* motion frame ``j`` (25 fps) lines up with mel frames ``4j .. 4j + 3`` exactly
  (``MELS_PER_FRAME``);
* values are ``(ln(mel_power + LOG_FLOOR) - LOG_MEAN) / LOG_STD``: about zero mean and
  unit variance on speech with pauses, so the model sees unit-scale inputs.

``StreamingLogMel`` yields the same frames as ``log_mel`` for audio pushed in pieces of
any size, each frame as soon as its window is complete.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import soxr

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WIN = 400  # 25 ms Hann window
N_FFT = 512
N_MELS = 80
MELS_PER_FRAME = 4  # mel frames per 25 fps motion frame
F_MIN, F_MAX = 20.0, 7600.0
LOG_FLOOR = 1e-5
# Fixed normalisation, measured once on espeak-ng speech with 0.3-1 s pauses around it
# (see the module docstring); constants, never refitted, so features stay comparable.
LOG_MEAN = -5.5
LOG_STD = 4.8


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Triangular HTK mel filters, (N_FFT // 2 + 1, N_MELS) float64, peak 1 each."""
    bins = np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT  # (F,) Hz
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), N_MELS + 2)
    )
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # (M,) each
    up = (bins[:, None] - lo) / (mid - lo)  # (F, M)
    down = (hi - bins[:, None]) / (hi - mid)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    fb.setflags(write=False)
    return fb


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    # Periodic Hann, as in torch.hann_window / librosa.
    w = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)
    w.setflags(write=False)
    return w


def _frames_to_log_mel(frames: np.ndarray) -> np.ndarray:
    """(n, WIN) float64 sample windows -> (n, N_MELS) float32 normalised log-mel."""
    if frames.shape[0] == 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    spec = np.fft.rfft(frames * _window(), n=N_FFT, axis=1)  # (n, F) complex
    power = spec.real**2 + spec.imag**2
    mel = power @ mel_filterbank()  # (n, M)
    return ((np.log(mel + LOG_FLOOR) - LOG_MEAN) / LOG_STD).astype(np.float32)


def _windows(buf: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` hop-spaced windows of ``buf`` (which holds at least them), (n, WIN)."""
    view = np.lib.stride_tricks.sliding_window_view(buf, WIN)[::HOP]
    return view[:n]


def log_mel(pcm: np.ndarray) -> np.ndarray:
    """Normalised log-mel, (len(pcm) // HOP, N_MELS) float32, of 16 kHz float PCM in [-1, 1]."""
    x = np.asarray(pcm, dtype=np.float64).reshape(-1)
    n = len(x) // HOP
    if n == 0:
        return np.zeros((0, N_MELS), dtype=np.float32)
    padded = np.zeros((n - 1) * HOP + WIN, dtype=np.float64)
    padded[: len(x)] = x[: len(padded)]
    return _frames_to_log_mel(_windows(padded, n))


def n_mel_frames(n_samples: int) -> int:
    """Mel frames ``log_mel`` makes from ``n_samples`` samples."""
    return n_samples // HOP


class StreamingLogMel:
    """Incremental ``log_mel``: push pieces of any size, get each frame once its window is full.

    ``flush()`` emits the zero-padded tail frames so the total is ``len // HOP`` frames,
    exactly as ``log_mel`` of the whole signal, and resets for the next signal.
    """

    def __init__(self) -> None:
        self._buf = np.zeros(0, dtype=np.float64)  # samples from frame _next's start on
        self._received = 0  # samples pushed since the last reset
        self._emitted = 0  # frames emitted since the last reset

    def reset(self) -> None:
        """Forget all audio pushed so far."""
        self._buf = np.zeros(0, dtype=np.float64)
        self._received = 0
        self._emitted = 0

    @property
    def frames_emitted(self) -> int:
        """Frames returned since the last reset."""
        return self._emitted

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """Add samples; return the (n_new, N_MELS) frames whose windows are now complete."""
        x = np.asarray(pcm, dtype=np.float64).reshape(-1)
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x.copy()
        self._received += len(x)
        ready = (self._received - WIN) // HOP + 1 if self._received >= WIN else 0
        return self._emit(ready - self._emitted)

    def flush(self) -> np.ndarray:
        """The remaining zero-padded frames up to ``len // HOP`` in all; then reset."""
        n = self._received // HOP - self._emitted
        if n > 0:
            need = (n - 1) * HOP + WIN
            self._buf = np.concatenate([self._buf, np.zeros(max(0, need - len(self._buf)))])
        out = self._emit(max(n, 0))
        self.reset()
        return out

    def _emit(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros((0, N_MELS), dtype=np.float32)
        out = _frames_to_log_mel(_windows(self._buf, n))
        self._buf = self._buf[n * HOP :]  # keep from the next frame's start on
        self._emitted += n
        return out


def to_model_rate(pcm: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono int16 or float PCM at any rate -> float32 in [-1, 1] at SAMPLE_RATE (soxr)."""
    x = np.asarray(pcm).reshape(-1)
    if x.dtype == np.int16:
        y = x.astype(np.float32) / 32768.0
    elif np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"integer PCM must be int16, got {x.dtype}; convert it to float first")
    else:
        y = x.astype(np.float32)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if sample_rate == SAMPLE_RATE or y.size == 0:
        return y
    return np.asarray(soxr.resample(y, sample_rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
