"""The log-mel feature contract: shapes, frame alignment, streaming == offline, resampling."""

from __future__ import annotations

import time

import numpy as np
import pytest

from renderer.motion import features as F


def _speechy(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts and tones with silences: enough structure for alignment checks."""
    rng = np.random.default_rng(seed)
    n = int(seconds * F.SAMPLE_RATE)
    t = np.arange(n) / F.SAMPLE_RATE
    env = (np.sin(2 * np.pi * 3.0 * t) > 0.2).astype(np.float64)
    x = 0.3 * env * np.sin(2 * np.pi * 220.0 * t) + 0.05 * env * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.mark.parametrize("n", [0, 1, 159, 160, 399, 400, 401, 16000, 16123])
def test_frame_count_is_len_over_hop(n: int) -> None:
    mel = F.log_mel(np.zeros(n, dtype=np.float32))
    assert mel.shape == (n // F.HOP, F.N_MELS)
    assert mel.dtype == np.float32
    assert F.n_mel_frames(n) == n // F.HOP


def test_frames_are_left_aligned_windows() -> None:
    # A click at sample k shows up exactly in frames i with i*HOP <= k < i*HOP + WIN.
    k = 16000
    x = np.zeros(32000, dtype=np.float32)
    x[k] = 1.0
    mel = F.log_mel(x)
    silent = (np.log(F.LOG_FLOOR) - F.LOG_MEAN) / F.LOG_STD
    lit = np.flatnonzero(mel.max(axis=1) > silent + 1e-3)
    expected = [i for i in range(len(mel)) if i * F.HOP <= k < i * F.HOP + F.WIN]
    # The Hann window is exactly zero at its first sample, so that frame may stay dark.
    assert set(lit) <= set(expected) and len(lit) >= len(expected) - 1


def test_motion_frame_maps_to_four_mel_frames() -> None:
    seconds = 3.0
    mel = F.log_mel(_speechy(seconds))
    assert F.MELS_PER_FRAME * F.HOP * 25 == F.SAMPLE_RATE  # 25 fps motion frames
    assert len(mel) == int(seconds * 25) * F.MELS_PER_FRAME


def test_normalisation_is_unit_scale_on_speech() -> None:
    mel = F.log_mel(_speechy(4.0))
    assert abs(float(mel.mean())) < 1.5
    assert 0.3 < float(mel.std()) < 2.5


def test_streaming_equals_offline_for_random_pieces() -> None:
    rng = np.random.default_rng(1)
    for trial in range(5):
        x = _speechy(float(rng.uniform(0.5, 3.0)), seed=trial)
        x = x[: len(x) - int(rng.integers(0, 300))]
        offline = F.log_mel(x)
        stream = F.StreamingLogMel()
        parts, i = [], 0
        while i < len(x):
            k = int(rng.choice([1, 7, 160, 333, 400, 1024, 4000]))
            out = stream.push(x[i : i + k])
            # A frame is emitted as soon as its whole window has arrived.
            assert stream.frames_emitted == max(0, (i + len(x[i : i + k]) - F.WIN) // F.HOP + 1)
            parts.append(out)
            i += k
        parts.append(stream.flush())
        online = np.concatenate(parts)
        assert online.shape == offline.shape
        np.testing.assert_allclose(online, offline, atol=1e-5)
        assert stream.frames_emitted == 0  # flush resets for the next signal


def test_streaming_is_fast() -> None:
    x = _speechy(10.0)
    stream = F.StreamingLogMel()
    start = time.perf_counter()
    for i in range(0, len(x), 320):  # 20 ms pieces, as audio arrives live
        stream.push(x[i : i + 320])
    stream.flush()
    assert 10.0 / (time.perf_counter() - start) > 100.0


def test_to_model_rate_resamples_and_scales() -> None:
    sr = 22050
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t) * 32767).astype(np.int16)
    y = F.to_model_rate(tone, sr)
    assert y.dtype == np.float32
    assert abs(len(y) - F.SAMPLE_RATE) <= 1
    assert 0.45 < float(np.abs(y[1000:-1000]).max()) < 0.55
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(int(np.argmax(spectrum)) * F.SAMPLE_RATE / len(y) - 1000.0) < 2.0
    same = F.to_model_rate(np.ones(10, dtype=np.float64), F.SAMPLE_RATE)
    assert same.dtype == np.float32 and len(same) == 10


def test_to_model_rate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="int16"):
        F.to_model_rate(np.zeros(10, dtype=np.int32), 16000)
    with pytest.raises(ValueError, match="positive"):
        F.to_model_rate(np.zeros(10, dtype=np.float32), 0)
