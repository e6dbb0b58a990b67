"""Checkpoints (the shipped one, broken ones) and the ``visage motion`` commands."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from agent.cli import main
from renderer.motion.checkpoint import (
    DEFAULT_CHECKPOINT,
    FORMAT,
    CheckpointError,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from renderer.motion.model import SIZES, MotionDiT
from renderer.motion.space import MOTION_DIM, MOTION_NAMES
from renderer.wavfile import read_wav
from tests.helpers.motion import random_model, speech


def test_shipped_checkpoint_loads_and_is_small() -> None:
    assert DEFAULT_CHECKPOINT.stat().st_size <= 20 * 1024 * 1024
    model = load_model()
    assert not model.training
    assert torch.all(model.motion_std > 0) and torch.any(model.motion_mean != 0)
    meta = read_checkpoint()["meta"]
    assert (
        meta["steps"] > 0 and meta["train_seconds"] > 0 and "visage motion train" in meta["command"]
    )


def test_round_trip_keeps_weights_and_stats(tmp_path: Path) -> None:
    model = random_model()
    model.motion_mean.fill_(0.25)
    model.set_eyelid_temperature(1.2)
    save_checkpoint(tmp_path / "m.pt", model, {"note": "test"})
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.cfg == model.cfg and torch.equal(loaded.source_std, model.source_std)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert read_checkpoint(tmp_path / "m.pt")["meta"] == {"note": "test"}


def test_missing_checkpoint_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match=r"not found: .*nope\.pt"):
        load_model(path)


def test_corrupt_checkpoints_name_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, MotionDiT(SIZES["tiny"]))
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "empty.pt": b"",
        "random.pt": np.random.default_rng(0).bytes(4096),
        "text.pt": b"hello, not a checkpoint\n",
    }
    for name, blob in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(CheckpointError, match=f"{name}.*(corrupt|not a)"):
            load_model(path)


def payload(**changes: object) -> dict[str, object]:
    model = MotionDiT(SIZES["tiny"])
    base: dict[str, object] = {
        "format": FORMAT,
        "version": 1,
        "config": model.cfg.to_dict(),
        "state_dict": model.state_dict(),
        "meta": {},
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "something-else"}, "not a Visage motion checkpoint"),
        ({"version": 99}, "version 99"),
        ({"config": "small"}, "lacks a valid 'config'"),
        ({"config": {**SIZES["tiny"].to_dict(), "width": 96, "heads": 2}}, "does not fit"),
        ({"config": {"depth": "four"}}, "bad config|does not fit"),
        ({"config": {"zzz": 1}}, "bad config: unknown"),
        ({"state_dict": {"pos": torch.zeros(1)}}, "does not fit"),
    ],
)
def test_wrong_content_is_reported(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = tmp_path / "bad.pt"
    torch.save(payload(**changes), path)
    with pytest.raises(CheckpointError, match=f"bad.pt.*({message})|({message}).*bad.pt"):
        load_model(path)


def test_a_plain_tensor_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="not a Visage motion checkpoint"):
        load_model(path)


# ------------------------------------------------------------------------------ commands


def write_wav(path: Path, samples: np.ndarray, rate: int, channels: int = 1) -> None:
    data = np.repeat(samples[:, None], channels, axis=1)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.astype("<i2").tobytes())


def write_float_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    body = samples.astype("<f4").tobytes()
    fmt = (1 + 2).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
    fmt += (rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
    riff = b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
    riff += b"data" + len(body).to_bytes(4, "little") + body
    path.write_bytes(b"RIFF" + len(riff).to_bytes(4, "little") + riff)


def test_infer_writes_motion_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pcm, rate = speech("Good morning.")
    wav = tmp_path / "speech.wav"
    write_wav(wav, pcm, rate, channels=2)
    out = tmp_path / "motion.json"
    assert main(["motion", "infer", str(wav), "--out", str(out), "--steps", "2"]) == 0
    data = json.loads(out.read_text())
    assert data["fps"] == 25 and data["names"] == list(MOTION_NAMES)
    frames = np.array(data["frames"])
    assert frames.shape == (int(np.ceil(len(pcm) / rate * 25)), MOTION_DIM)
    assert np.all(np.isfinite(frames))
    assert "wrote" in capsys.readouterr().out


def test_float_wav_reads_like_int16(tmp_path: Path) -> None:
    pcm, rate = speech("Yes.")
    write_wav(tmp_path / "a.wav", pcm, rate)
    write_float_wav(tmp_path / "b.wav", pcm.astype(np.float32) / 32768.0, rate)
    a, ra = read_wav(tmp_path / "a.wav")
    b, rb = read_wav(tmp_path / "b.wav")
    assert ra == rb == rate
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_infer_reports_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.json"
    assert main(["motion", "infer", str(tmp_path / "missing.wav"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    assert main(["motion", "infer", str(text), "--out", str(out)]) == 2
    assert "not a WAV file" in capsys.readouterr().err
    wav = tmp_path / "ok.wav"
    write_wav(wav, np.zeros(1600, np.int16), 16000)
    bad = ["--checkpoint", str(tmp_path / "none.pt")]
    assert main(["motion", "infer", str(wav), "--out", str(out), *bad]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not out.exists()
