"""ProceduralMotion and the viseme table: the mouth follows speech, the face stays alive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from renderer.motion.procedural import ProceduralMotion
from renderer.motion.space import BLENDSHAPE_NAMES, IDX, MOTION_DIM
from renderer.motion.visemes import VISEME_CHANNELS, viseme
from speech.phonemes import PhonemeMark

SR, FPS = 24000, 25
SPF = SR // FPS
FRAME_S = 1.0 / FPS


def tone(seconds: float, amp: float, hz: float = 160.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def run(
    pm: ProceduralMotion,
    audio: np.ndarray,
    marks: Sequence[tuple[float, str]] = (),
    speaking: bool = True,
) -> np.ndarray:
    """Feed ``audio`` frame by frame with marks at absolute times; returns (frames, D)."""
    out = []
    for f in range(len(audio) // SPF):
        t0 = f * FRAME_S
        ms = [PhonemeMark(ipa, at - t0) for at, ipa in marks if t0 <= at < t0 + FRAME_S]
        out.append(pm.step(audio[f * SPF : (f + 1) * SPF], SR, ms, speaking))
    return np.stack(out)


def syllables(spec: Sequence[tuple[str, float, float]]) -> tuple[np.ndarray, list]:
    """[(ipa, seconds, amplitude)] -> concatenated audio and marks at each start."""
    audio, marks, t = [], [], 0.0
    for ipa, secs, amp in spec:
        marks.append((t, ipa))
        audio.append(tone(secs, amp))
        t += secs
    return np.concatenate(audio), marks


def frames_of(t0: float, t1: float) -> slice:
    return slice(round(t0 / FRAME_S), round(t1 / FRAME_S))


def test_output_format_and_ranges() -> None:
    pm = ProceduralMotion(FPS, seed=3)
    audio, marks = syllables([("h", 0.1, 0.05), ("ɛ", 0.2, 0.3), ("l", 0.1, 0.1)])
    out = run(pm, audio, marks)
    assert out.dtype == np.float32 and out.shape[1] == MOTION_DIM
    assert np.all(np.isfinite(out))
    nb = len(BLENDSHAPE_NAMES)
    assert out[:, :nb].min() >= 0.0 and out[:, :nb].max() <= 1.0
    assert np.abs(out[:, nb:]).max() < 0.5
    single = pm.step(np.zeros(0, np.float32), SR, [], False)
    assert single.shape == (MOTION_DIM,) and single.dtype == np.float32


@pytest.mark.parametrize("with_marks", [False, True])
def test_silence_keeps_the_mouth_closed(with_marks: bool) -> None:
    pm = ProceduralMotion(FPS)
    audio = np.zeros(2 * SR, dtype=np.float32)
    marks = [(0.1 * k, "a") for k in range(20)] if with_marks else []
    out = run(pm, audio, marks, speaking=True)
    assert out[:, IDX["jawOpen"]].max() < 0.05
    assert out[:, IDX["mouthFunnel"]].max() < 0.05


def test_vowels_open_and_bilabials_close() -> None:
    pm = ProceduralMotion(FPS)
    audio, marks = syllables(
        [("m", 0.2, 0.03), ("ˈa", 0.24, 0.3), ("m", 0.2, 0.03), ("ɑː", 0.24, 0.3), ("p", 0.2, 0.0)]
    )
    out = run(pm, audio, marks)
    jaw, close = out[:, IDX["jawOpen"]], out[:, IDX["mouthClose"]]
    lips_open = jaw * (1.0 - close)
    assert jaw[frames_of(0.2, 0.44)].max() > 0.55  # "a" opens the jaw
    assert jaw[frames_of(0.68, 0.92)].max() > 0.55
    # Well inside each "m" the lips are pressed shut.
    assert close[frames_of(0.06, 0.2)].min() > 0.8
    assert close[frames_of(0.52, 0.64)].min() > 0.8
    assert lips_open[frames_of(0.52, 0.64)].max() < 0.1
    assert lips_open[frames_of(0.98, 1.12)].max() < 0.1


def test_pause_closes_the_mouth() -> None:
    pm = ProceduralMotion(FPS)
    audio, marks = syllables([("a", 0.3, 0.3), ("", 0.4, 0.0)])
    out = run(pm, audio, marks)
    assert out[frames_of(0.1, 0.3), IDX["jawOpen"]].max() > 0.5
    assert out[frames_of(0.45, 0.7), IDX["jawOpen"]].max() < 0.05


def test_rounded_and_spread_vowels() -> None:
    rounded = run(ProceduralMotion(FPS), *syllables([("uː", 0.3, 0.3)]))[-3:]
    spread = run(ProceduralMotion(FPS), *syllables([("iː", 0.3, 0.3)]))[-3:]
    assert rounded[:, IDX["mouthPucker"]].min() > 0.4
    assert rounded[:, IDX["mouthFunnel"]].min() > 0.2
    assert spread[:, IDX["mouthStretchLeft"]].min() > 0.3
    assert spread[:, IDX["mouthPucker"]].max() < 0.05


def test_mouth_follows_syllables_without_phonemes() -> None:
    # 4 syllables per second: a tone whose loudness rises and falls like speech.
    t = np.arange(2 * SR) / SR
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0.0, None) ** 2
    audio = (0.3 * env * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    jaw = run(ProceduralMotion(FPS), audio)[:, IDX["jawOpen"]]
    frame_env = env[: len(jaw) * SPF].reshape(len(jaw), SPF).mean(axis=1)
    assert jaw.max() > 0.4
    assert jaw[10:].min() < 0.1  # closes between syllables
    assert np.corrcoef(jaw, frame_env)[0, 1] > 0.7


def test_louder_vowels_open_wider() -> None:
    quiet = run(ProceduralMotion(FPS), *syllables([("a", 0.3, 0.02)]))[-1, IDX["jawOpen"]]
    loud = run(ProceduralMotion(FPS), *syllables([("a", 0.3, 0.3)]))[-1, IDX["jawOpen"]]
    assert loud > quiet + 0.15


def test_deterministic_for_a_seed() -> None:
    audio, marks = syllables([("h", 0.1, 0.05), ("aɪ", 0.3, 0.3), ("", 2.0, 0.0)])
    a = run(ProceduralMotion(FPS, seed=7), audio, marks)
    b = run(ProceduralMotion(FPS, seed=7), audio, marks)
    c = run(ProceduralMotion(FPS, seed=8), audio, marks)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def idle(pm: ProceduralMotion, seconds: float, speaking: bool = False) -> np.ndarray:
    empty = np.zeros(0, dtype=np.float32)
    return np.stack([pm.step(empty, SR, [], speaking) for _ in range(int(seconds * FPS))])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blinks_at_a_natural_rate(seed: int) -> None:
    out = idle(ProceduralMotion(FPS, seed=seed), 60.0)
    left, right = out[:, IDX["eyeBlinkLeft"]], out[:, IDX["eyeBlinkRight"]]
    assert np.array_equal(left, right)  # both eyes together
    shut = left > 0.5
    onsets = np.flatnonzero(shut[1:] & ~shut[:-1])
    assert 10 <= len(onsets) <= 25, f"{len(onsets)} blinks in a minute"
    assert left.max() == pytest.approx(1.0)
    # Each blink is short: ~150 ms, i.e. a few frames at 25 fps.
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, shut.astype(int), 0])))[::2]
    assert runs.max() <= 4
    assert (left > 0.05).mean() < 0.2  # eyes are open most of the time


def test_idle_face_moves_and_speaking_moves_more() -> None:
    calm = idle(ProceduralMotion(FPS, seed=4), 20.0)
    talk = idle(ProceduralMotion(FPS, seed=4), 20.0, speaking=True)
    yaw = IDX["headYaw"]
    assert calm[:, yaw].std() > 0.005  # alive, not frozen
    assert np.abs(np.diff(calm[:, yaw])).max() < 0.02  # smooth, no jumps
    assert talk[:, yaw].std() > 1.3 * calm[:, yaw].std()
    assert calm[:, IDX["browInnerUp"]].std() > 0.005


def test_mouth_rests_when_not_speaking() -> None:
    pm = ProceduralMotion(FPS)
    run(pm, *syllables([("a", 0.3, 0.3)]))
    out = idle(pm, 0.5)
    assert out[-5:, IDX["jawOpen"]].max() < 0.02


def test_viseme_table_parses_espeak_ipa() -> None:
    assert np.array_equal(viseme("ˈaː"), viseme("a"))
    assert np.array_equal(viseme(""), np.zeros(len(VISEME_CHANNELS), dtype=np.float32))
    jaw = VISEME_CHANNELS.index("jawOpen")
    assert viseme("a")[jaw] > viseme("ə")[jaw] > viseme("i")[jaw]
    # A diphthong starts like its first part and glides towards the second.
    ai = viseme("aɪ")
    assert viseme("ɪ")[jaw] < ai[jaw] < viseme("a")[jaw]
    assert viseme("m")[VISEME_CHANNELS.index("mouthClose")] == 1.0
    assert viseme("☃")[jaw] > 0.0  # unknown symbols still move the mouth
