"""Read WAV files of any common flavour into float32 mono (numpy only).

Python's ``wave`` module reads integer PCM only; TTS tools and editors also write
32/64-bit float and WAVE_FORMAT_EXTENSIBLE files, so this parses the RIFF chunks itself.
Errors are ``ValueError`` with a message naming the file and what is wrong.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples float32 mono in [-1, 1], sample rate) of a WAV file; channels are averaged."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path} is not a WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int] | None = None
    pcm: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise ValueError(f"{path}: the WAV fmt chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID's first field
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            pcm = body
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    if fmt is None or pcm is None:
        raise ValueError(f"{path}: the WAV file lacks a {'fmt' if fmt is None else 'data'} chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise ValueError(f"{path}: bad WAV header ({channels} channels at {rate} Hz)")
    x = _decode(path, pcm, tag, bits)
    x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    return x.astype(np.float32), rate


def _decode(path: Path, pcm: bytes, tag: int, bits: int) -> np.ndarray:
    """Interleaved samples as float64 in [-1, 1]."""
    width = bits // 8
    pcm = pcm[: len(pcm) - len(pcm) % max(width, 1)]
    if tag == _PCM and bits == 8:
        return (np.frombuffer(pcm, np.uint8).astype(np.float64) - 128.0) / 128.0
    if tag == _PCM and bits == 16:
        return np.frombuffer(pcm, "<i2").astype(np.float64) / 32768.0
    if tag == _PCM and bits == 24:
        raw = np.frombuffer(pcm, np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float64) / float(1 << 23)
    if tag == _PCM and bits == 32:
        return np.frombuffer(pcm, "<i4").astype(np.float64) / float(1 << 31)
    if tag == _FLOAT and bits in (32, 64):
        x = np.frombuffer(pcm, "<f4" if bits == 32 else "<f8").astype(np.float64)
        return np.clip(np.nan_to_num(x), -1.0, 1.0)
    raise ValueError(
        f"{path}: unsupported WAV encoding (format tag {tag}, {bits} bits); use 8/16/24/32-bit "
        "integer PCM or 32/64-bit float"
    )
