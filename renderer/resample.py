"""Streaming linear resampler for int16 mono PCM (numpy only).

TTS engines hand over audio in chunks at their own rate (espeak-ng: 22050 Hz). Each
chunk is resampled against the state of the previous one, so chunk borders add no
clicks and the total duration is kept to within one output sample.
"""

from __future__ import annotations

import numpy as np


class StreamResampler:
    """Linear interpolation from ``src_rate`` to ``dst_rate`` across consecutive chunks."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        if src_rate <= 0 or dst_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.step = src_rate / dst_rate  # input samples per output sample
        self.samples_in = 0
        self.samples_out = 0
        self._last: float | None = None  # last input sample of the previous chunk
        self._pos = 0.0  # next output position, in input samples from ``_last`` (or chunk start)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample one chunk; returns int16 samples (possibly none for a tiny chunk)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return np.zeros(0, dtype=np.int16)
        self.samples_in += x.size
        buf = x if self._last is None else np.concatenate(([self._last], x))
        last_index = buf.size - 1
        n = 0
        if self._pos <= last_index:
            n = int(np.floor((last_index - self._pos) / self.step)) + 1
        positions = self._pos + self.step * np.arange(n)  # (n,) in input samples
        out = np.interp(positions, np.arange(buf.size), buf)
        self._pos = self._pos + n * self.step - last_index
        self._last = float(buf[-1])
        self.samples_out += n
        return _to_int16(out)

    def flush(self) -> np.ndarray:
        """End of stream: hold the last sample so the output spans the input's duration.

        The resampler is finished afterwards; start a new one for the next stream.
        """
        want = round(self.samples_in * self.dst_rate / self.src_rate) - self.samples_out
        tail = np.full(max(want, 0), self._last if self._last is not None else 0.0)
        self.samples_out += tail.size
        return _to_int16(tail)

    def output_index(self, offset_s: float) -> int:
        """Output sample index (since the stream start) of a time ``offset_s`` into the
        next chunk, whose first input sample is ``samples_in``."""
        return round((self.samples_in / self.src_rate + offset_s) * self.dst_rate)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)
