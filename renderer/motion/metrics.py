"""Quality metrics of generated motion against the dataset's targets (``visage motion eval``).

Every function takes per-utterance tracks (lists of arrays, one per test utterance) so
utterance borders never count as frame-to-frame changes. Definitions:

* ``jaw_corr``: Pearson correlation of predicted vs target jawOpen over all test frames
  concatenated.
* ``sync_lag_frames``: the lag (frames; positive = prediction late) at the peak of the
  cross-correlation of mean-removed jawOpen, summed over utterances, searched in +-10.
* ``pause_jaw_max``: over every pause of at least 300 ms in the data's pause spans
  (silences between phonemes, including the lead-in and the tail), the maximum
  predicted jawOpen over the frames lying wholly between 120 ms after the pause starts
  and its end; the max over all pauses (not a percentile). Frame-quantised spans
  (``speech_mask``) would count frames that are half speech, so the spans are used.
* ``boundary_ratio``: mean absolute frame-to-frame change over all channels, each
  divided by its training std (normalised units), across chunk boundaries divided by the
  same within chunks.
* ``blinks_per_min``: blink events (mean eyeBlink rising above 0.5) per minute of audio.
* ``head_std_talk`` / ``head_std_silence``: std of each head angle over all speech /
  silence frames (concatenated), averaged over pitch, yaw and roll.
* ``seed_jaw_corr``: Pearson correlation of the jawOpen tracks of two seeds on the same
  audio, all frames concatenated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from renderer.motion.space import IDX, MOTION_FPS

JAW = IDX["jawOpen"]
BLINKS = [IDX["eyeBlinkLeft"], IDX["eyeBlinkRight"]]
HEAD = [IDX["headPitch"], IDX["headYaw"], IDX["headRoll"]]
MAX_LAG = 10
PAUSE_MIN_S = 0.3
PAUSE_SETTLE_S = 0.12
BLINK_THRESHOLD = 0.5


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays (0 when either is constant)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def jaw_corr(pred: Sequence[np.ndarray], target: Sequence[np.ndarray]) -> float:
    """Pearson r of jawOpen over all frames concatenated."""
    return pearson(
        np.concatenate([p[:, JAW] for p in pred]), np.concatenate([t[:, JAW] for t in target])
    )


def sync_lag(
    pred: Sequence[np.ndarray], target: Sequence[np.ndarray], max_lag: int = MAX_LAG
) -> int:
    """Lag in frames of predicted jawOpen behind the target (positive = late)."""
    lags = np.arange(-max_lag, max_lag + 1)
    score = np.zeros(len(lags))
    for p, t in zip(pred, target, strict=True):
        x = p[:, JAW] - p[:, JAW].mean()
        y = t[:, JAW] - t[:, JAW].mean()
        n = len(x)
        for i, lag in enumerate(lags):
            # pred[j] against target[j - lag]: a late prediction peaks at a positive lag.
            if lag >= 0:
                score[i] += float(np.dot(x[lag:], y[: n - lag]))
            else:
                score[i] += float(np.dot(x[: n + lag], y[-lag:]))
    return int(lags[int(np.argmax(score))])


def pause_frames(pauses: Sequence[tuple[float, float]], n_frames: int) -> list[tuple[int, int]]:
    """Frame spans [a, b) inside pauses of >= 300 ms, from 120 ms after each pause starts."""
    out = []
    for start, end in pauses:
        if end - start < PAUSE_MIN_S:
            continue
        a = math.ceil((start + PAUSE_SETTLE_S) * MOTION_FPS - 1e-6)  # frames wholly inside
        b = min(math.floor(end * MOTION_FPS + 1e-6), n_frames)
        if b > a:
            out.append((a, b))
    return out


def pause_jaw_max(
    pred: Sequence[np.ndarray], pauses: Sequence[Sequence[tuple[float, float]]]
) -> float:
    """Max predicted jawOpen in pauses >= 300 ms, from 120 ms after their start."""
    worst = 0.0
    for p, spans in zip(pred, pauses, strict=True):
        for a, b in pause_frames(spans, len(p)):
            worst = max(worst, float(p[a:b, JAW].max()))
    return worst


def boundary_ratio(
    tracks: Sequence[np.ndarray], chunk: int, scale: np.ndarray | None = None
) -> float:
    """Mean |frame-to-frame change| across chunk boundaries over the same within chunks.

    A boundary lies between frames ``j - 1`` and ``j`` for ``j`` a positive multiple of
    ``chunk``; changes are divided per channel by ``scale`` (e.g. the training std).
    """
    across, within = [], []
    for x in tracks:
        d = np.abs(np.diff(x, axis=0))  # (T-1, M): change into frame j + 1
        if scale is not None:
            d = d / scale
        at_boundary = (np.arange(1, len(x)) % chunk) == 0
        across.append(d[at_boundary])
        within.append(d[~at_boundary])
    a = np.concatenate(across).mean() if any(len(x) for x in across) else 0.0
    w = np.concatenate(within).mean() if any(len(x) for x in within) else 0.0
    return float(a / w) if w > 0 else float("inf")


def blink_count(track: np.ndarray) -> int:
    """Blink events in one track: mean eyelid closure rising above 0.5."""
    lid = track[:, BLINKS].mean(axis=1) > BLINK_THRESHOLD
    return int(np.count_nonzero(lid[1:] & ~lid[:-1]))


def blinks_per_min(tracks: Sequence[np.ndarray]) -> float:
    """Blink events per minute of audio."""
    frames = sum(len(t) for t in tracks)
    return sum(blink_count(t) for t in tracks) / (frames / MOTION_FPS / 60.0) if frames else 0.0


def head_std(tracks: Sequence[np.ndarray], masks: Sequence[np.ndarray], talking: bool) -> float:
    """Std of head angles over speech (or silence) frames, mean over pitch/yaw/roll."""
    rows = [
        t[np.asarray(m, dtype=bool) == talking][:, HEAD] for t, m in zip(tracks, masks, strict=True)
    ]
    frames = np.concatenate(rows) if rows else np.zeros((0, len(HEAD)))
    return float(frames.std(axis=0).mean()) if len(frames) > 1 else 0.0


def head_difference(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean absolute difference (rad) of head angles between two runs on the same audio."""
    diffs = [np.abs(x[:, HEAD] - y[:, HEAD]).ravel() for x, y in zip(a, b, strict=True)]
    return float(np.concatenate(diffs).mean()) if diffs else 0.0


def motion_metrics(
    pred: Sequence[np.ndarray],
    target: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    pauses: Sequence[Sequence[tuple[float, float]]],
    other_seed: Sequence[np.ndarray],
    chunk: int,
    scale: np.ndarray | None = None,
) -> dict[str, float]:
    """Every metric of the module docstring, in the order ``visage motion eval`` reports."""
    return {
        "jaw_corr": jaw_corr(pred, target),
        "sync_lag_frames": float(sync_lag(pred, target)),
        "pause_jaw_max": pause_jaw_max(pred, pauses),
        "boundary_ratio": boundary_ratio(pred, chunk, scale),
        "blinks_per_min": blinks_per_min(pred),
        "head_std_talk": head_std(pred, masks, talking=True),
        "head_std_silence": head_std(pred, masks, talking=False),
        "seed_jaw_corr": pearson(
            np.concatenate([p[:, JAW] for p in pred]),
            np.concatenate([p[:, JAW] for p in other_seed]),
        ),
    }
