"""StylisedFace: output format, and that each motion channel changes the right region."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from renderer.frames.stylised.face import StylisedFace
from renderer.motion.space import HEAD_NAMES, IDX, MOTION_DIM, MOTION_NAMES

SIZE = 192
# Regions as fractions of the frame (rows, cols): where a viewer finds the eyes and mouth.
EYES = (slice(int(0.36 * SIZE), int(0.52 * SIZE)), slice(int(0.25 * SIZE), int(0.75 * SIZE)))
MOUTH = (slice(int(0.55 * SIZE), int(0.75 * SIZE)), slice(int(0.33 * SIZE), int(0.67 * SIZE)))


@pytest.fixture(scope="module")
def face() -> StylisedFace:
    return StylisedFace(SIZE, SIZE, device="cpu")


def motion(**channels: float) -> np.ndarray:
    m = np.zeros(MOTION_DIM, dtype=np.float32)
    for name, value in channels.items():
        m[IDX[name]] = value
    return m


def change(a: np.ndarray, b: np.ndarray, region: tuple[slice, slice] | None = None) -> float:
    """Summed absolute pixel difference, optionally inside a region."""
    d = np.abs(a.astype(np.int32) - b.astype(np.int32)).sum(axis=-1)
    return float(d[region].sum() if region else d.sum())


def test_output_is_contiguous_rgb_uint8(face: StylisedFace) -> None:
    img = face.render(motion())
    assert img.shape == (SIZE, SIZE, 3)
    assert img.dtype == np.uint8
    assert img.flags["C_CONTIGUOUS"]
    assert img.std() > 10  # a picture, not a flat fill


def test_non_square_frame() -> None:
    img = StylisedFace(160, 96, device="cpu").render(motion(headYaw=0.3, jawOpen=1.0))
    assert img.shape == (96, 160, 3)


def test_rendering_is_deterministic(face: StylisedFace) -> None:
    m = motion(jawOpen=0.4, mouthSmileLeft=0.7, headRoll=0.1)
    assert np.array_equal(face.render(m), face.render(m))


def test_jaw_changes_mouth_far_more_than_eyes(face: StylisedFace) -> None:
    closed, opened = face.render(motion()), face.render(motion(jawOpen=1.0))
    assert change(closed, opened, MOUTH) > 10 * change(closed, opened, EYES)
    # The open mouth shows a dark inside that the closed one does not.
    dark = lambda img: int((img[MOUTH].max(axis=-1) < 110).sum())  # noqa: E731
    assert dark(opened) > dark(closed) + 30


def test_blink_changes_eyes_not_mouth(face: StylisedFace) -> None:
    open_, shut = face.render(motion()), face.render(motion(eyeBlinkLeft=1, eyeBlinkRight=1))
    assert change(open_, shut, EYES) > 10 * max(change(open_, shut, MOUTH), 1.0)
    # Closed eyes hide the white of the eye.
    white = lambda img: int((img[EYES].min(axis=-1) > 235).sum())  # noqa: E731
    assert white(shut) < white(open_) // 4


def test_one_sided_smile_changes_that_side(face: StylisedFace) -> None:
    base = face.render(motion())
    # The avatar's left is the viewer's right.
    left = face.render(motion(mouthSmileLeft=1.0))
    d = np.abs(left.astype(np.int32) - base.astype(np.int32)).sum(axis=-1)[MOUTH[0]]
    assert d[:, SIZE // 2 :].sum() > 2 * d[:, : SIZE // 2].sum()


@pytest.mark.parametrize("name", MOTION_NAMES)
def test_every_channel_is_visible(face: StylisedFace, name: str) -> None:
    value = 0.3 if name in HEAD_NAMES else 1.0
    base = face.render(motion())
    moved = face.render(motion(**{name: value}))
    changed = (np.abs(moved.astype(np.int32) - base.astype(np.int32)).max(axis=-1) > 12).sum()
    assert changed > 40, f"{name} barely changes the image ({changed} pixels)"


def test_yaw_slides_the_features(face: StylisedFace) -> None:
    def pupil_x(img: np.ndarray) -> float:
        band = img[EYES].astype(np.int32).sum(axis=-1)
        _, xs = np.nonzero(band < 120)  # the darkest pixels: pupils and lashes
        return float(xs.mean())

    straight = pupil_x(face.render(motion()))
    # Positive yaw turns the face towards the viewer's left.
    assert pupil_x(face.render(motion(headYaw=0.3))) < straight - 3
    assert pupil_x(face.render(motion(headYaw=-0.3))) > straight + 3


def test_edges_are_anti_aliased(face: StylisedFace) -> None:
    img = face.render(motion(headRoll=0.2))
    # A hard-edged drawing has few colours; smooth coverage produces many in-between ones.
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 2000


def test_bad_motion_is_rejected(face: StylisedFace) -> None:
    with pytest.raises(ValueError, match="shape"):
        face.render(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        face.render(np.full(MOTION_DIM, np.nan, dtype=np.float32))


def test_out_of_range_motion_is_clamped(face: StylisedFace) -> None:
    wild = np.full(MOTION_DIM, 5.0, dtype=np.float32)
    img = face.render(wild)
    assert img.shape == (SIZE, SIZE, 3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without a GPU")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        StylisedFace(64, 64, device="cuda")


def test_render_from_threads_matches_sequential(face: StylisedFace) -> None:
    motions = [motion(jawOpen=i / 5, headYaw=0.05 * i) for i in range(6)]
    expected = [face.render(m) for m in motions]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = face.render(motions[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(motions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, img in enumerate(expected):
        assert np.array_equal(results[i], img)


def test_bench_reports_timings() -> None:
    from renderer.bench import bench_frames, format_table

    result = bench_frames(width=64, height=64, frames=3, threads=1, device="cpu")
    assert result["frames"] == 3 and result["device"] == "cpu"
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]
    assert result["fps"] > 0
    assert "64x64" in format_table([result])
