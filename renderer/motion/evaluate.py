"""``visage motion eval``: the learned model, streamed as live, beside the procedural v0.

The learned model runs through :class:`MotionGenerator` exactly as in a session: each
test utterance's audio goes in as pieces of random size (10-200 ms, seeded) and frames
are taken as soon as they are ready; the end of the audio closes the utterance. The
procedural baseline is fed each utterance frame by frame with its phoneme marks, as the
avatar core feeds it live. Both are scored with :mod:`renderer.motion.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from renderer.motion import metrics
from renderer.motion.data.dataset import Utterance
from renderer.motion.model import MotionDiT
from renderer.motion.procedural import ProceduralMotion
from renderer.motion.space import MOTION_FPS
from renderer.motion.stream import SAMPLES_PER_FRAME, generate
from speech.phonemes import PhonemeMark

SAMPLE_RATE = SAMPLES_PER_FRAME * MOTION_FPS
METRIC_KEYS = (
    "jaw_corr",
    "sync_lag_frames",
    "pause_jaw_max",
    "boundary_ratio",
    "blinks_per_min",
    "head_std_talk",
    "head_std_silence",
    "seed_jaw_corr",
)
#: Pass conditions of the issue, shown next to the figures.
TARGETS = {
    "jaw_corr": ">= 0.85",
    "sync_lag_frames": "within +-1",
    "pause_jaw_max": "<= 0.1",
    "boundary_ratio": "<= 1.5",
    "blinks_per_min": "8 - 30",
    "head_std_talk": "> silence",
    "head_std_silence": "> 0",
    "seed_jaw_corr": ">= 0.95",
}


def _audio(u: Utterance) -> np.ndarray:
    if u.audio is None:
        raise ValueError(f"utterance {u.id} has no audio; evaluate on the val or test split")
    return u.audio


def learned_tracks(
    model: MotionDiT,
    utts: Sequence[Utterance],
    *,
    steps: int,
    seed: int,
    silence_gate: bool = True,
) -> list[np.ndarray]:
    """One streamed motion track per utterance, audio fed in random piece sizes."""
    out = []
    for i, u in enumerate(utts):
        pieces = np.random.default_rng([seed, i, 7])  # piece sizes, independent of the seed's noise
        track = generate(
            model,
            _audio(u),
            SAMPLE_RATE,
            steps=steps,
            seed=seed,
            rng=pieces,
            silence_gate=silence_gate,
        )
        out.append(track[: u.n_frames])
    return out


def phoneme_marks(
    phonemes: Sequence[tuple[str, float, float]], n_frames: int
) -> list[list[PhonemeMark]]:
    """Per-frame PhonemeMarks (offsets within the frame) from (ipa, start, end) spans.

    A span's mark sits at its start; a gap after a span gets a pause mark (``ipa == ""``).
    """
    per_frame: list[list[PhonemeMark]] = [[] for _ in range(n_frames)]
    frame_s = 1.0 / MOTION_FPS

    def put(ipa: str, at: float) -> None:
        j = int(at * MOTION_FPS)
        if 0 <= j < n_frames:
            per_frame[j].append(PhonemeMark(ipa, max(at - j * frame_s, 0.0)))

    for i, (ipa, start, end) in enumerate(phonemes):
        put(ipa, start)
        following = phonemes[i + 1][1] if i + 1 < len(phonemes) else None
        if following is None or following > end + 1e-3:
            put("", end)
    return per_frame


def procedural_tracks(utts: Sequence[Utterance], *, seed: int) -> list[np.ndarray]:
    """The v0 procedural source on each utterance, one frame of audio and marks at a time."""
    out = []
    for i, u in enumerate(utts):
        source = ProceduralMotion(fps=MOTION_FPS, seed=seed + i)
        audio = _audio(u).astype(np.float32) / 32768.0
        marks = phoneme_marks(u.phonemes, u.n_frames)
        track = np.empty((u.n_frames, len(u.motion[0])), dtype=np.float32)
        for j in range(u.n_frames):
            frame = audio[j * SAMPLES_PER_FRAME : (j + 1) * SAMPLES_PER_FRAME]
            track[j] = source.step(frame, SAMPLE_RATE, marks[j], True)
        out.append(track)
    return out


def evaluate(
    model: MotionDiT,
    utts: Sequence[Utterance],
    *,
    steps: int = 4,
    seed: int = 0,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """``{"learned": {...}, "procedural": {...}}`` plus ``extra`` figures for the table."""
    targets = [u.motion for u in utts]
    masks = [u.speech_mask for u in utts]
    pauses = [u.pauses for u in utts]
    scale = model.motion_std.detach().numpy()
    chunk = model.cfg.chunk
    log(f"learned model: streaming {len(utts)} utterances (seed {seed})")
    learned = learned_tracks(model, utts, steps=steps, seed=seed)
    log(f"learned model: again with seed {seed + 1}")
    learned2 = learned_tracks(model, utts, steps=steps, seed=seed + 1)
    log(f"learned model without the silence gate (seed {seed})")
    ungated = learned_tracks(model, utts, steps=steps, seed=seed, silence_gate=False)
    log("procedural baseline")
    proc = procedural_tracks(utts, seed=seed)
    proc2 = procedural_tracks(utts, seed=seed + 1)
    result = {
        "learned": metrics.motion_metrics(learned, targets, masks, pauses, learned2, chunk, scale),
        "procedural": metrics.motion_metrics(proc, targets, masks, pauses, proc2, chunk, scale),
    }
    extra = {
        "target_blinks_per_min": metrics.blinks_per_min(targets),
        "target_pause_jaw_max": metrics.pause_jaw_max(targets, pauses),
        "target_head_std_talk": metrics.head_std(targets, masks, talking=True),
        "target_head_std_silence": metrics.head_std(targets, masks, talking=False),
        "learned_seed_head_diff": metrics.head_difference(learned, learned2),
        "ungated_jaw_corr": metrics.jaw_corr(ungated, targets),
        "ungated_pause_jaw_max": metrics.pause_jaw_max(ungated, pauses),
        "procedural_seed_head_diff": metrics.head_difference(proc, proc2),
        "utterances": len(utts),
        "minutes": sum(u.n_frames for u in utts) / MOTION_FPS / 60.0,
    }
    return {**result, "extra": extra}


def format_table(result: dict[str, Any]) -> str:
    """The learned vs procedural table printed by ``visage motion eval``."""
    rows = [f"{'metric':<18} {'learned':>9} {'procedural':>11}  target"]
    rows.append("-" * len(rows[0]) + "--------")
    for key in METRIC_KEYS:
        a, b = result["learned"][key], result["procedural"][key]
        rows.append(f"{key:<18} {a:>9.3f} {b:>11.3f}  {TARGETS[key]}")
    ex = result.get("extra", {})
    if ex:
        rows.append("")
        rows.append(
            f"seed head diff (rad, mean |a-b|): learned {ex['learned_seed_head_diff']:.4f}, "
            f"procedural {ex['procedural_seed_head_diff']:.4f}"
        )
        rows.append(
            f"learned without the silence gate: jaw_corr {ex['ungated_jaw_corr']:.3f}, "
            f"pause_jaw_max {ex['ungated_pause_jaw_max']:.3f}"
        )
        rows.append(
            f"targets: {ex['target_blinks_per_min']:.1f} blinks/min, pause jaw max "
            f"{ex['target_pause_jaw_max']:.3f}, head std talk "
            f"{ex['target_head_std_talk']:.4f} / silence {ex['target_head_std_silence']:.4f}"
        )
        rows.append(f"{ex['utterances']} test utterances, {ex['minutes']:.1f} min of audio")
    return "\n".join(rows)
