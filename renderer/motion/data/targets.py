"""25 fps motion targets for an utterance's timeline: mouth from phonemes, the rest from a prior.

* Mouth (jaw, funnel, pucker, stretch): Cohen-Massaro style coarticulation. Every phoneme
  (diphthongs split into their parts) and every silence is a segment with a viseme
  target and a dominance per channel that is flat over its core and falls off
  exponentially outside it, further ahead than behind for the lips (anticipatory rounding).
  The track is the dominance-weighted mean of the targets, so a phoneme whose target
  stands out from its neighbours peaks inside its own span. Silence dominates strongly,
  so a pause closes the mouth within ~100 ms. Stressed vowels open the jaw a little
  more. ``mouthClose`` is the upper envelope of plateau bumps, so p/b/m shut the lips
  fully over their span. No randomness: the mouth is a function of the timeline.
* Everything else comes from a seeded prior tied to prosody: blinks (pause onsets are
  likelier), brows up on accented words and question ends, occasional frowns, head
  motion as filtered Ornstein-Uhlenbeck noise that is larger while speaking (slow sway
  and breathing in silence), nods on accents, a slow small smile.

Frames: frame ``j`` covers ``[j / 25, (j + 1) / 25)`` s, the same audio as mel frames
``4j .. 4j + 3``; mouth values are the mean of the track over the frame, blinks the max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from renderer.motion.data.synth import PAUSE_MIN_S, Timeline
from renderer.motion.features import SAMPLE_RATE
from renderer.motion.space import IDX, MOTION_DIM, MOTION_FPS
from renderer.motion.visemes import _CONSONANTS, _VOWELS, VISEME_CHANNELS, VISEME_IDX, viseme
from renderer.motion.visemes import _units as viseme_units

SAMPLES_PER_FRAME = SAMPLE_RATE // MOTION_FPS  # 640
SUB = 8  # fine-grid samples per motion frame (5 ms)
FINE_S = 1.0 / (MOTION_FPS * SUB)
HEAD_LIMIT = 0.12  # radians; head angles are soft-clipped to this

_JAW, _CLOSE, _FUNNEL, _PUCKER = 0, 1, 2, 3
# Dominance time constants (s) before a segment's core / after it, per viseme channel;
# the lips reach further ahead (anticipatory rounding and spreading).
_TAU_BEFORE = np.array([0.025, 0.025, 0.045, 0.045, 0.035, 0.035])
_TAU_AFTER = np.array([0.025, 0.025, 0.030, 0.030, 0.025, 0.025])
_SILENCE_ALPHA = 2.5
_CLOSE_RAMP_S = 0.025  # lips meet / part over about this long around a bilabial
# Consonants whose jaw follows the vowels around them (tongue-back and glottal sounds).
_WEAK_JAW = set("kgɡŋxɣχqhɦʔ")
_BILABIAL = set("pbmɸβ")
_STRESS_GAIN = {"ˈ": 1.15, "ˌ": 1.05}
_UNSTRESSED_VOWEL_GAIN = 0.92


def n_frames_for(n_samples: int) -> int:
    """Motion frames for ``n_samples`` of 16 kHz audio (whole frames only)."""
    return n_samples // SAMPLES_PER_FRAME


@dataclass(frozen=True, slots=True)
class _Segment:
    start: float
    end: float
    target: np.ndarray  # (6,) viseme channels
    alpha: np.ndarray  # (6,) dominance strength
    silence: bool


def _phoneme_segments(ipa: str, start: float, end: float) -> list[_Segment]:
    """One phoneme as one segment, or a diphthong/cluster as consecutive parts."""
    units = viseme_units(ipa) or ("ə",)
    gain = next((g for mark, g in _STRESS_GAIN.items() if mark in ipa), None)
    if gain is None:
        gain = _UNSTRESSED_VOWEL_GAIN if units[0] in _VOWELS else 1.0
    # The first part of a diphthong is the longer one.
    weights = np.array([1.5] + [1.0] * (len(units) - 1))
    bounds = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
    out = []
    for unit, a, b in zip(units, bounds[:-1], bounds[1:], strict=True):
        target = viseme(unit)
        alpha = np.ones(len(VISEME_CHANNELS))
        # The jaw follows the vowels; consonants nudge it, bilabials lift it to meet.
        if unit in _VOWELS:
            target[[_JAW, _FUNNEL]] *= gain
            alpha[_JAW] = 1.5
        elif unit in _BILABIAL:
            alpha[_JAW] = 1.2
        elif unit in _WEAK_JAW and unit in _CONSONANTS:
            alpha[_JAW] = 0.4
        else:
            alpha[_JAW] = 0.8
        out.append(_Segment(float(a), float(b), np.clip(target, 0.0, 1.0), alpha, False))
    return out


def _segments(timeline: Timeline) -> list[_Segment]:
    """Phoneme parts and the silences between them, covering the whole utterance."""
    segs: list[_Segment] = []
    t = 0.0
    zeros = np.zeros(len(VISEME_CHANNELS))
    silent_alpha = np.full(len(VISEME_CHANNELS), _SILENCE_ALPHA)
    for span in timeline.phonemes:
        if span.start > t:
            segs.append(_Segment(t, span.start, zeros, silent_alpha, True))
        segs += _phoneme_segments(span.label, span.start, span.end)
        t = max(t, span.end)
    segs.append(_Segment(t, max(t, timeline.duration) + 1.0, zeros, silent_alpha, True))
    return segs


_REACH_S = 0.8  # segments further than this from a time have no say in it (< e-17)
_BLOCK_S = 1.0  # evaluate the track in blocks of this long, against nearby segments only


def mouth_track(timeline: Timeline, times: np.ndarray) -> np.ndarray:
    """Viseme channels (len(times), 6) at arbitrary times (s); deterministic."""
    segs = _segments(timeline)
    times = np.asarray(times, dtype=np.float64)
    start = np.array([s.start for s in segs])
    end = np.array([s.end for s in segs])
    silence = np.array([s.silence for s in segs])
    # Dominance is flat over a core (the middle half of a phoneme, all of a silence) and
    # falls off exponentially outside it with the same time constants for every segment:
    # then between two cores the track moves monotonically from one side's targets to
    # the other's, so a phoneme that stands out from its neighbours peaks in its core.
    margin = np.where(silence, 0.0, 0.25 * (end - start))
    core_a, core_b = start + margin, end - margin
    alpha = np.stack([s.alpha for s in segs])  # (S, C)
    targets = np.stack([s.target for s in segs])
    out = np.zeros((len(times), len(VISEME_CHANNELS)))
    block = np.floor(times / _BLOCK_S)
    for b in np.unique(block):
        rows = np.flatnonzero(block == b)
        lo, hi = b * _BLOCK_S - _REACH_S, (b + 1) * _BLOCK_S + _REACH_S
        near = np.flatnonzero((end >= lo) & (start <= hi))
        out[rows] = _blend(
            times[rows], core_a[near], core_b[near], start[near], end[near],
            alpha[near], targets[near],
        )  # fmt: skip
    return np.clip(out, 0.0, 1.0)


def _blend(
    times: np.ndarray,
    core_a: np.ndarray,
    core_b: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    alpha: np.ndarray,
    targets: np.ndarray,
) -> np.ndarray:
    """The dominance-weighted mean of nearby segments' targets at ``times``, (N, C)."""
    t = times[:, None, None]  # (N, 1, 1)
    a, b = core_a[None, :, None], core_b[None, :, None]  # (1, S, 1)
    d = np.where(t < a, (a - t) / _TAU_BEFORE, np.where(t > b, (t - b) / _TAU_AFTER, 0.0))
    dominance = alpha[None] * np.exp(-np.minimum(d, 50.0))  # (N, S, C)
    out = (dominance * targets[None]).sum(1) / (dominance.sum(1) + 1e-12)  # (N, C)
    # Lip closure: the upper envelope of plateau bumps, 1 over a bilabial's whole span.
    tt = times[:, None]
    gap = np.where(tt < start[None], start[None] - tt, np.maximum(tt - end[None], 0.0))  # (N, S)
    bump = np.exp(-((gap / _CLOSE_RAMP_S) ** 2))
    out[:, _CLOSE] = (bump * targets[None, :, _CLOSE]).max(axis=1)
    return out


def speech_mask(timeline: Timeline, n_frames: int) -> np.ndarray:
    """(n_frames,) bool: at least half of the frame is inside a speech phoneme."""
    fine = np.zeros(n_frames * SUB, dtype=bool)
    for span in timeline.phonemes:
        a, b = round(span.start / FINE_S), round(span.end / FINE_S)
        fine[max(a, 0) : max(b, 0)] = True
    return fine.reshape(n_frames, SUB).mean(axis=1) >= 0.5


@dataclass(frozen=True, slots=True)
class Targets:
    """Motion for one utterance: (T, 16) float32, (T,) speech mask, pause spans (s)."""

    motion: np.ndarray
    speech_mask: np.ndarray
    pauses: tuple[tuple[float, float], ...]


def make_targets(timeline: Timeline, n_frames: int, rng: np.random.Generator) -> Targets:
    """Motion targets (n_frames, MOTION_DIM) for a timeline; ``rng`` drives only the prior."""
    times = (np.arange(n_frames * SUB) + 0.5) * FINE_S
    motion = np.zeros((n_frames, MOTION_DIM), dtype=np.float32)
    mouth = mouth_track(timeline, times).reshape(n_frames, SUB, -1).mean(axis=1)
    motion[:, VISEME_IDX] = mouth
    mask = speech_mask(timeline, n_frames)
    _prior(motion, timeline, mask, rng)
    return Targets(motion, mask, timeline.pauses)


# ---------------------------------------------------------------------------- the prior


def _accents(timeline: Timeline, rng: np.random.Generator) -> list[float]:
    """Onset times of accented syllables: the last stressed vowel of each phrase, plus some."""
    stressed = [s.start for s in timeline.phonemes if "ˈ" in s.label]
    if not stressed:
        return []
    phrase_ends = [a for a, _ in timeline.pauses] + [timeline.duration]
    nuclear = {max((t for t in stressed if t < end), default=-1.0) for end in phrase_ends}
    return [t for t in stressed if t in nuclear or rng.random() < 0.3]


def _smooth_mask(mask: np.ndarray, tau_s: float) -> np.ndarray:
    """Forward-backward exponential smoothing of a 0/1 frame mask (no lag)."""
    k = 1.0 - np.exp(-1.0 / (MOTION_FPS * tau_s))
    x = mask.astype(np.float64)
    for direction in (1, -1):
        y, acc = np.empty_like(x), x[0] if direction == 1 else x[-1]
        order = range(len(x)) if direction == 1 else range(len(x) - 1, -1, -1)
        for i in order:
            acc += k * (x[i] - acc)
            y[i] = acc
        x = y
    return x


def _ou(rng: np.random.Generator, n: int, tau_s: float, stages: int = 2) -> np.ndarray:
    """Unit-variance smooth noise: white noise through ``stages`` one-pole low-passes."""
    a = np.exp(-1.0 / (MOTION_FPS * tau_s))
    burn = int(4 * tau_s * MOTION_FPS * stages) + 1  # start in the stationary state
    x = rng.standard_normal(n + burn)
    for _ in range(stages):
        y = np.empty_like(x)
        acc = 0.0
        for i, v in enumerate(x):
            acc = a * acc + (1.0 - a) * v
            y[i] = acc
        x = y
    x = x[burn:]
    return x / (x.std() + 1e-9) if n > 1 else x


def _bump(n: int, center_s: float, rise_s: float, fall_s: float) -> np.ndarray:
    """A smooth bump peaking at 1 at ``center_s`` (frame times), raised-cosine sides."""
    t = np.arange(n) / MOTION_FPS - center_s
    up = 0.5 + 0.5 * np.cos(np.pi * np.clip(-t / rise_s, 0.0, 1.0))
    down = 0.5 + 0.5 * np.cos(np.pi * np.clip(t / fall_s, 0.0, 1.0))
    return np.where(t < 0, up, down)


def blink_times(timeline: Timeline, rng: np.random.Generator) -> list[float]:
    """Blink onsets: a renewal process plus likelier blinks at pause onsets."""
    times: list[float] = []
    t = -float(rng.uniform(0.0, 4.0))
    while True:
        t += 1.2 + float(rng.gamma(2.0, 2.5))  # mean 6.2 s between background blinks
        if t >= timeline.duration:
            break
        if t >= 0.0:
            times.append(t)
    first = timeline.phonemes[0].start if timeline.phonemes else timeline.duration
    for start, end in timeline.pauses:
        if start > first and end - start >= PAUSE_MIN_S and rng.random() < 0.4:
            times.append(start + float(rng.uniform(0.0, 0.25)))
    times.sort()
    kept: list[float] = []
    for t in times:
        if not kept or t - kept[-1] >= 0.8:
            kept.append(t)
    doubles = [t + float(rng.uniform(0.25, 0.35)) for t in kept if rng.random() < 0.06]
    return sorted(t for t in kept + doubles if t < timeline.duration)


def _blink_track(n_frames: int, onsets: list[float], rng: np.random.Generator) -> np.ndarray:
    """Eyelid closure per frame: the max of the fine-grid profile over each frame."""
    fine_t = (np.arange(n_frames * SUB) + 0.5) * FINE_S
    lid = np.zeros_like(fine_t)
    for onset in onsets:
        dur = float(rng.uniform(0.12, 0.20))
        peak = float(rng.uniform(0.92, 1.0))
        close, hold = 0.35 * dur, 0.2 * dur
        x = fine_t - onset
        up = np.clip(x / close, 0.0, 1.0)
        down = np.clip(1.0 - (x - close - hold) / (dur - close - hold), 0.0, 1.0)
        shape = np.where(x < close, up * up * (3 - 2 * up), np.where(x < close + hold, 1, down))
        lid = np.maximum(lid, peak * np.where((x >= 0) & (x <= dur), shape, 0.0))
    return lid.reshape(n_frames, SUB).max(axis=1)


def _prior(
    motion: np.ndarray,
    timeline: Timeline,
    mask: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Fill blinks, brows, smile and head into ``motion`` (in place)."""
    n = len(motion)
    if n == 0:
        return
    talk = _smooth_mask(mask, 0.25)
    accents = _accents(timeline, rng)

    blink = _blink_track(n, blink_times(timeline, rng), rng)
    motion[:, IDX["eyeBlinkLeft"]] = blink
    motion[:, IDX["eyeBlinkRight"]] = blink

    brow = 0.04 + 0.025 * _ou(rng, n, 1.5) + 0.05 * talk
    frown = np.zeros(n)
    for t in accents:
        if rng.random() < 0.8:
            brow += float(rng.uniform(0.15, 0.4)) * _bump(n, t + 0.05, 0.12, 0.4)
        elif rng.random() < 0.75:
            frown += float(rng.uniform(0.1, 0.3)) * _bump(n, t + 0.05, 0.15, 0.4)
    for word in timeline.words:
        if word.label.endswith("?"):
            rise = max(word.end - word.start, 0.1)
            brow += float(rng.uniform(0.25, 0.5)) * _bump(n, word.end, rise, 0.5)
    motion[:, IDX["browInnerUp"]] = np.clip(brow, 0.0, 1.0)
    motion[:, IDX["browDownLeft"]] = np.clip(frown, 0.0, 1.0)
    motion[:, IDX["browDownRight"]] = np.clip(frown * float(rng.uniform(0.8, 1.0)), 0.0, 1.0)

    smile = float(rng.uniform(0.05, 0.2)) + 0.04 * _ou(rng, n, 2.0) - 0.04 * talk
    motion[:, IDX["mouthSmileLeft"]] = np.clip(smile, 0.0, 1.0)
    motion[:, IDX["mouthSmileRight"]] = np.clip(smile * float(rng.uniform(0.85, 1.0)), 0.0, 1.0)

    frame_t = np.arange(n) / MOTION_FPS
    breath_hz, phase = float(rng.uniform(0.2, 0.3)), float(rng.uniform(0.0, 2 * np.pi))
    breath = 0.006 * np.sin(2 * np.pi * breath_hz * frame_t + phase)
    nods = np.zeros(n)
    for at in accents:
        nods += float(rng.uniform(0.015, 0.045)) * _bump(n, at + 0.08, 0.12, 0.3)
    # (silent amplitude, speaking amplitude, OU time constant) per axis.
    for name, quiet, loud, tau in (
        ("headPitch", 0.008, 0.03, 0.5),
        ("headYaw", 0.012, 0.055, 0.8),
        ("headRoll", 0.006, 0.025, 0.7),
    ):
        angle = (quiet + (loud - quiet) * talk) * _ou(rng, n, tau)
        if name == "headPitch":
            angle = angle + breath + nods
        motion[:, IDX[name]] = HEAD_LIMIT * np.tanh(angle / HEAD_LIMIT)
