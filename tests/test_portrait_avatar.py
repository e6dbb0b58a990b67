"""Portrait avatars: landmarks on the astronaut, the model files' sha256, and
``visage avatar create/list/remove`` with every bad input refused cleanly."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import skimage.data as skdata
from PIL import Image, ImageFile

from agent.cli import main
from renderer.portrait import avatar as avatar_mod
from renderer.portrait.avatar import (
    MIN_EYE_DISTANCE,
    PHOTO_SIZE,
    AvatarError,
    AvatarNotFoundError,
    list_avatars,
    load_avatar,
    prepare_avatar,
    save_avatar,
)
from renderer.portrait.landmarks import (
    CHIN,
    LEFT_EYE,
    LOWER_LIP,
    NOSE_TIP,
    RIGHT_EYE,
    UPPER_LIP,
    detect_faces,
    eye_distance,
    face_landmarks,
)
from renderer.portrait.models import (
    DETECTOR,
    FACE_MODELS,
    LANDMARKER,
    ModelFileError,
    fetch_face_models,
    model_path,
    models_dir,
)
from renderer.portrait.sample import SAMPLE_PHOTO


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skdata.astronaut()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, astronaut: np.ndarray) -> dict[str, Path]:
    """Test photos: the astronaut, two astronaut heads side by side, a small copy, and a
    picture with no face."""
    folder = tmp_path_factory.mktemp("photos")
    out = {"astronaut": folder / "astronaut.png"}
    Image.fromarray(astronaut).save(out["astronaut"])
    head = Image.fromarray(astronaut[0:320, 60:380])  # 320x320 around her head
    canvas = Image.new("RGB", (760, 420), (200, 200, 205))
    canvas.paste(head, (5, 420 - 320 - 5))  # the smaller face, on the left
    canvas.paste(head.resize((400, 400), Image.Resampling.LANCZOS), (760 - 400 - 5, 5))
    out["two"] = folder / "two-faces.png"
    canvas.save(out["two"])
    out["small"] = folder / "small.jpg"
    Image.fromarray(astronaut).resize((320, 320), Image.Resampling.LANCZOS).save(out["small"])
    out["noface"] = folder / "coffee.jpg"
    Image.fromarray(skdata.coffee()).save(out["noface"])
    return out


def run(capsys: pytest.CaptureFixture[str], avatars: Path, *args: str) -> tuple[int, str, str]:
    """``visage ARGS --set avatar.dir=AVATARS`` in process: (status, stdout, stderr)."""
    code = main([*args, "--set", f"avatar.dir={avatars}"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def entries(folder: Path) -> list[str]:
    """Everything in the avatars folder, hidden names included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- landmarks ---------------------------------------------------------------------------


def test_landmarks_on_the_astronaut_are_plausible(astronaut: np.ndarray) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    box = faces[0]
    assert box.score > 0.8
    # Her face is in the upper middle of the picture, about 95 px wide.
    assert 190 < box.center[0] < 260 and 100 < box.center[1] < 160
    assert 70 < box.width < 130

    pts = face_landmarks(astronaut, box)
    assert pts.shape == (468, 3) and pts.dtype == np.float32
    eyes_y = min(pts[list(RIGHT_EYE), 1].mean(), pts[list(LEFT_EYE), 1].mean())
    assert pts[list(RIGHT_EYE), 0].mean() < pts[NOSE_TIP, 0] < pts[list(LEFT_EYE), 0].mean()
    assert eyes_y < pts[NOSE_TIP, 1] < pts[UPPER_LIP, 1] < pts[LOWER_LIP, 1] < pts[CHIN, 1]
    assert 50 < eye_distance(pts) < 80
    # The mesh lies on her face: every point within the box grown by a quarter.
    grow = 0.25 * box.width
    inside = (
        (pts[:, 0] > box.x0 - grow)
        & (pts[:, 0] < box.x1 + grow)
        & (pts[:, 1] > box.y0 - grow)
        & (pts[:, 1] < box.y1 + grow)
    )
    assert inside.all()


@pytest.mark.parametrize("degrees", [30, -40])
def test_a_tilted_face_gets_the_same_landmarks(astronaut: np.ndarray, degrees: int) -> None:
    """The crop is turned upright along the eye line, so a rolled head is found as well."""
    upright = face_landmarks(astronaut, detect_faces(astronaut)[0])
    tilted = np.asarray(Image.fromarray(astronaut).rotate(degrees, Image.Resampling.BICUBIC))
    [box] = detect_faces(tilted)
    got = face_landmarks(tilted, box)
    t = np.radians(degrees)  # Pillow turns the picture counter-clockwise about its centre
    d = upright[:, :2] - 256
    want = np.stack([np.cos(t) * d[:, 0] + np.sin(t) * d[:, 1],
                     -np.sin(t) * d[:, 0] + np.cos(t) * d[:, 1]], 1) + 256  # fmt: skip
    assert np.abs(got[:, :2] - want).mean() < 1.5


def test_no_face_in_a_picture_without_one() -> None:
    assert detect_faces(skdata.coffee()) == []
    assert detect_faces(np.full((300, 400, 3), 128, np.uint8)) == []


def test_two_faces_come_largest_first(photos: dict[str, Path]) -> None:
    image = np.asarray(Image.open(photos["two"]).convert("RGB"))
    faces = detect_faces(image)
    assert len(faces) == 2
    assert faces[0].area > faces[1].area
    assert faces[0].center[0] > 380 > faces[1].center[0]  # the larger one is on the right


def test_bad_image_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8 RGB"):
        detect_faces(np.zeros((64, 64), np.uint8))


# --- model files -------------------------------------------------------------------------


def _wheel_from(folder: Path, out: Path, corrupt: str | None = None) -> Path:
    """A stand-in for the mediapipe wheel holding the model files of ``folder``."""
    with zipfile.ZipFile(out, "w") as z:
        for m in FACE_MODELS:
            data = (folder / m.name).read_bytes()
            if m.name == corrupt:
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            z.writestr(m.member, data)
    return out


def test_model_sha256_is_verified(tmp_path: Path, astronaut: np.ndarray) -> None:
    good = tmp_path / "good"
    shutil.copytree(models_dir(), good)
    assert model_path(LANDMARKER, good) == good / LANDMARKER.name

    bad = tmp_path / "bad"
    shutil.copytree(models_dir(), bad)
    data = bytearray((bad / LANDMARKER.name).read_bytes())
    data[5000] ^= 0xFF
    (bad / LANDMARKER.name).write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="not the pinned file") as err:
        model_path(LANDMARKER, bad)
    assert "visage models fetch-face" in str(err.value)
    faces = detect_faces(astronaut, model_folder=bad)  # the detector is intact
    with pytest.raises(ModelFileError, match=r"face_landmark\.tflite"):
        face_landmarks(astronaut, faces[0], model_folder=bad)

    (bad / DETECTOR.name).unlink()
    with pytest.raises(ModelFileError, match="missing") as err:
        detect_faces(astronaut, model_folder=bad)
    assert "visage models fetch-face" in str(err.value)


def test_fetch_takes_the_files_out_of_the_wheel_and_checks_them(tmp_path: Path) -> None:
    lines: list[str] = []
    wheel = _wheel_from(models_dir(), tmp_path / "mediapipe.whl")
    dest = tmp_path / "models"
    fetch_face_models(dest, wheel=wheel, log=lines.append)
    assert sorted(p.name for p in dest.iterdir()) == sorted(m.name for m in FACE_MODELS)
    assert all("sha256 ok" in line for line in lines) and len(lines) == 2
    lines.clear()
    fetch_face_models(dest, wheel=tmp_path / "absent.whl", log=lines.append)  # idempotent
    assert lines == [f"face models: up to date in {dest}"]

    # A wheel whose landmark model was altered is refused, and nothing of it is kept.
    (dest / LANDMARKER.name).unlink()
    altered = _wheel_from(models_dir(), tmp_path / "altered.whl", corrupt=LANDMARKER.name)
    with pytest.raises(ModelFileError, match="refusing it"):
        fetch_face_models(dest, wheel=altered, log=lines.append)
    assert sorted(p.name for p in dest.iterdir()) == [DETECTOR.name]


def test_cli_without_models_names_the_fetch_command(
    tmp_path: Path,
    photos: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    avatars = tmp_path / "avatars"
    code, _, err = run(capsys, avatars, "avatar", "create", str(photos["astronaut"]), "--name", "a")
    assert code == 2
    assert "is missing" in err and "`visage models fetch-face`" in err
    assert entries(avatars) == []


# --- avatar create / list / show / remove --------------------------------------------------


def test_create_list_show_remove(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    start = time.perf_counter()
    code, out, err = run(
        capsys, avatars, "avatar", "create", str(photos["astronaut"]), "--name", "astronaut"
    )
    took = time.perf_counter() - start
    assert code == 0, err
    assert "created avatar 'astronaut'" in out
    assert took < 5.0
    assert entries(avatars) == ["astronaut"]
    assert sorted(p.name for p in (avatars / "astronaut").iterdir()) == [
        "avatar.json",
        "photo.png",
    ]

    av = load_avatar(avatars, "astronaut")
    assert av.image.shape == (PHOTO_SIZE, PHOTO_SIZE, 3) and av.image.dtype == np.uint8
    assert av.landmarks.shape == (468, 3) and av.landmarks.dtype == np.float32
    assert av.source == "astronaut.png" and av.face_index == 0
    # The working photo is the astronaut enlarged about 512 / 237 times around her face:
    # her landmarks scale with it and sit on the photo.
    scale = PHOTO_SIZE / av.meta["source"]["crop"][2]
    assert eye_distance(av.landmarks) == pytest.approx(
        av.meta["source"]["eye_distance"] * scale, rel=0.05
    )
    assert (av.landmarks[:, :2] > 0).all() and (av.landmarks[:, :2] < PHOTO_SIZE).all()
    meta = json.loads((avatars / "astronaut" / "avatar.json").read_text())
    assert meta["version"] == 1 and len(meta["landmarks"]) == 468
    assert len(meta["photo"]["sha256"]) == 64 and meta["source"]["file"] == "astronaut.png"

    code, out, _ = run(capsys, avatars, "avatar", "list", "--json")
    assert code == 0
    listed = json.loads(out)
    assert listed["dir"] == str(avatars)
    assert [a["name"] for a in listed["avatars"]] == ["astronaut"]
    assert listed["avatars"][0]["problem"] is None
    assert 50 < listed["avatars"][0]["eye_distance"] < 80

    code, out, _ = run(capsys, avatars, "avatar", "list")
    assert code == 0 and out.startswith("astronaut ")

    picture = tmp_path / "landmarks.png"
    code, _, _ = run(capsys, avatars, "avatar", "show", "astronaut", "--out", str(picture))
    assert code == 0 and Image.open(picture).size == (2 * PHOTO_SIZE, 2 * PHOTO_SIZE)

    code, out, _ = run(capsys, avatars, "avatar", "remove", "astronaut")
    assert code == 0 and "removed avatar 'astronaut'" in out
    assert entries(avatars) == []
    code, out, _ = run(capsys, avatars, "avatar", "list", "--json")
    assert json.loads(out)["avatars"] == []


def _text(photo: Path, source: Path) -> None:
    photo.write_text("just some words, not a picture\n")


def _truncated(photo: Path, source: Path) -> None:
    photo.write_bytes(source.read_bytes()[:40_000])


def _bomb(photo: Path, source: Path) -> None:
    Image.new("1", (8000, 6000)).save(photo)  # 48 megapixels in a few kB


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_text, "is not an image Visage reads"),
        (_truncated, "is a corrupt or truncated image"),
        (_bomb, "is 8000x6000 (48 megapixels); photos up to 40 megapixels are accepted"),
    ],
    ids=["not-an-image", "truncated", "decompression-bomb"],
)
def test_bad_files_are_refused(
    tmp_path: Path,
    photos: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path, Path], None],
    message: str,
) -> None:
    photo = tmp_path / "photo.png"
    make(photo, photos["astronaut"])
    avatars = tmp_path / "avatars"
    code, out, err = run(capsys, avatars, "avatar", "create", str(photo), "--name", "x")
    assert code == 2 and message in err and out == ""
    assert entries(avatars) == []


def test_a_bomb_is_refused_before_it_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = tmp_path / "bomb.png"
    Image.new("1", (8000, 6000)).save(photo)

    def no_decoding(self: Image.Image) -> None:
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(AvatarError, match="megapixels"):
        avatar_mod.read_photo(photo)


def test_a_file_too_large_is_refused(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "huge.png"
    photo.write_bytes(photos["astronaut"].read_bytes())
    with photo.open("r+b") as f:
        f.truncate(21 * 2**20)  # a sparse 21 MB file
    avatars = tmp_path / "avatars"
    code, _, err = run(capsys, avatars, "avatar", "create", str(photo), "--name", "x")
    assert code == 2 and "is 21.0 MB; photos up to 20 MB" in err
    assert entries(avatars) == []


def test_missing_photo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    avatars = tmp_path / "avatars"
    code, _, err = run(
        capsys, avatars, "avatar", "create", str(tmp_path / "nope.jpg"), "--name", "x"
    )
    assert code == 2 and "cannot read" in err and "nope.jpg" in err
    assert entries(avatars) == []


def test_no_face(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    code, _, err = run(capsys, avatars, "avatar", "create", str(photos["noface"]), "--name", "x")
    assert code == 2 and "no face found in" in err
    assert entries(avatars) == []


def test_a_face_too_small(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    code, _, err = run(capsys, avatars, "avatar", "create", str(photos["small"]), "--name", "x")
    assert code == 2
    assert "too small to animate" in err
    assert f"at least {MIN_EYE_DISTANCE:.0f} needed" in err
    assert entries(avatars) == []


def test_several_faces(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    code, _, err = run(capsys, avatars, "avatar", "create", str(photos["two"]), "--name", "big")
    assert code == 0
    assert "warning:" in err and "has 2 faces; using face 0, the largest" in err
    assert "--face N picks another" in err
    big = load_avatar(avatars, "big")
    assert big.face_index == 0 and big.meta["source"]["faces_found"] == 2
    assert big.meta["source"]["eye_distance"] > 70  # the 1.25x copy

    code, _, err = run(
        capsys, avatars, "avatar", "create", str(photos["two"]), "--name", "small", "--face", "1"
    )
    assert code == 0 and "warning" not in err
    small = load_avatar(avatars, "small")
    assert small.face_index == 1 and 55 < small.meta["source"]["eye_distance"] < 70

    for index in ("2", "-1"):
        code, _, err = run(
            capsys, avatars, "avatar", "create", str(photos["two"]), "--name", "c", "--face", index
        )
        assert code == 2 and f"--face {index} is out of range" in err and "has 2 faces" in err
    assert entries(avatars) == ["big", "small"]


def test_a_name_taken_needs_force(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    create = ("avatar", "create", str(photos["two"]), "--name", "ava")
    assert run(capsys, avatars, *create)[0] == 0
    before = (avatars / "ava" / "avatar.json").read_text()
    code, _, err = run(capsys, avatars, *create, "--face", "1")
    assert code == 2 and "an avatar named 'ava' already exists" in err and "--force" in err
    assert (avatars / "ava" / "avatar.json").read_text() == before
    code, _, err = run(capsys, avatars, *create, "--face", "1", "--force")
    assert code == 0, err
    assert load_avatar(avatars, "ava").face_index == 1
    assert entries(avatars) == ["ava"]


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "Ava", "", "x" * 65, "a b"])
def test_unsafe_names_are_refused(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str
) -> None:
    avatars = tmp_path / "sub" / "avatars"
    code, _, err = run(
        capsys, avatars, "avatar", "create", str(photos["astronaut"]), "--name", name
    )
    assert code == 2 and "bad avatar name" in err and "lowercase letters" in err
    assert entries(avatars) == [] and entries(tmp_path / "sub") == []
    code, _, err = run(capsys, avatars, "avatar", "remove", name)
    assert code == 2 and "bad avatar name" in err


def test_unknown_names_list_the_known_ones(
    tmp_path: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    avatars = tmp_path / "avatars"
    with pytest.raises(AvatarNotFoundError, match="there are none yet"):
        load_avatar(avatars, "ava")
    save_avatar(avatars, prepare_avatar(photos["astronaut"], "astro"))
    with pytest.raises(AvatarNotFoundError, match=r"no avatar named 'ava' .*known: astro"):
        load_avatar(avatars, "ava")
    code, _, err = run(capsys, avatars, "avatar", "remove", "ava")
    assert code == 2 and "known: astro" in err
    assert entries(avatars) == ["astro"]


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, photos: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    avatars = tmp_path / "avatars"
    first = prepare_avatar(photos["astronaut"], "ava")
    save_avatar(avatars, first)
    photo_before = (avatars / "ava" / "photo.png").read_bytes()
    second = prepare_avatar(photos["two"], "ava")
    real = Path.write_text

    def disk_full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name == "avatar.json":
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_avatar(avatars, second, force=True)
    with pytest.raises(OSError, match="No space left"):
        save_avatar(avatars, prepare_avatar(photos["two"], "other"))
    monkeypatch.undo()
    assert entries(avatars) == ["ava"]  # no temporary folder, the old avatar intact
    assert (avatars / "ava" / "photo.png").read_bytes() == photo_before
    assert load_avatar(avatars, "ava").meta["source"]["file"] == "astronaut.png"


def test_a_changed_photo_is_detected(tmp_path: Path, photos: dict[str, Path]) -> None:
    avatars = tmp_path / "avatars"
    save_avatar(avatars, prepare_avatar(photos["astronaut"], "ava"))
    Image.new("RGB", (PHOTO_SIZE, PHOTO_SIZE)).save(avatars / "ava" / "photo.png")
    with pytest.raises(AvatarError, match=r"does not match avatar\.json"):
        load_avatar(avatars, "ava")
    (avatars / "ava" / "avatar.json").write_text("{")
    [info] = list_avatars(avatars)
    assert info.problem is not None and "avatar.json" in info.problem


# --- the sample avatar -------------------------------------------------------------------


def _sample_wheel(out: Path, corrupt: bool = False) -> Path:
    """A stand-in for the scikit-image wheel holding its astronaut photo."""
    data = (Path(skdata.__file__).parent / "astronaut.png").read_bytes()
    if corrupt:
        data = data[:-10] + bytes(10)
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(SAMPLE_PHOTO.member, data)
    return out


def test_the_sample_avatar_is_made_once_from_the_checked_photo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(models_dir(), cache / "visage" / "models", ignore=shutil.ignore_patterns("s*"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    avatars = tmp_path / "avatars"
    # An altered photo is refused and leaves neither a photo nor an avatar behind.
    bad = _sample_wheel(tmp_path / "bad.whl", corrupt=True)
    code, _, err = run(capsys, avatars, "avatar", "sample", "--wheel", str(bad))
    assert code == 2 and "refusing it" in err
    assert entries(avatars) == [] and not (cache / "visage/models/samples/astronaut.png").exists()

    wheel = _sample_wheel(tmp_path / "scikit_image.whl")
    code, out, err = run(capsys, avatars, "avatar", "sample", "--wheel", str(wheel))
    assert code == 0, err
    assert "sha256 ok" in out and "'astronaut' made" in out
    assert load_avatar(avatars, "astronaut").image.shape == (512, 512, 3)
    code, out, _ = run(capsys, avatars, "avatar", "sample", "--wheel", str(tmp_path / "gone"))
    assert code == 0 and "already in" in out  # nothing fetched or made again
    # A broken one is made again.
    (avatars / "astronaut" / "avatar.json").write_text("{")
    code, out, err = run(capsys, avatars, "avatar", "sample")
    assert code == 0 and "'astronaut' made" in out, err
