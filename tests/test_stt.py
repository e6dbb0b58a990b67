"""Speech to text: pocketsphinx on espeak-ng speech, faster-whisper on a tiny model, selection
(Moonshine itself: tests/test_stt_moonshine.py)."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soxr
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    InputAudioRawFrame,
    MetricsFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.metrics.metrics import ProcessingMetricsData, TTFBMetricsData
from pipecat.pipeline.worker import PipelineParams
from pipecat.services.stt_service import STTService
from pipecat.services.whisper.stt import WhisperSTTService
from pipecat.tests.utils import run_test

from pipelines.config import STTSettings
from pipelines.stages.stt import (
    MoonshineSTTService,
    PocketsphinxSTTService,
    STTEngineError,
    create_stt_service,
    wav_to_mono16k,
)
from speech.espeak import synthesize
from tests.helpers.fixtures import tiny_whisper_model  # noqa: F401  (fixture)

# espeak-ng varies slightly between calls; this sentence decoded exactly in 12 of 12 runs.
SENTENCE = "i would like to order a pizza"
KEYWORDS = {"would", "like", "order", "pizza"}
RATE = 16000


@pytest.fixture(scope="module")
def pocketsphinx() -> PocketsphinxSTTService:
    """One decoder for the module: loading the model takes a few hundred ms."""
    return PocketsphinxSTTService()


def speech_16k(text: str) -> np.ndarray:
    """espeak-ng speech for ``text``, resampled to 16 kHz mono int16."""
    samples, rate = synthesize(text, voice="en-us", rate=170, pitch=50)
    return wav_to_mono16k(to_wav(samples, rate))


def speech_at(text: str, rate: int) -> np.ndarray:
    """espeak-ng speech for ``text`` at ``rate`` Hz, mono int16."""
    samples, native = synthesize(text, voice="en-us", rate=170, pitch=50)
    return soxr.resample(samples, native, rate)


def to_wav(samples: np.ndarray, rate: int, channels: int = 1) -> bytes:
    """Wrap int16 samples in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, dtype=np.int16).tobytes())
    return buf.getvalue()


def utterance_frames(pcm: np.ndarray, rate: int = RATE) -> list:
    """VAD start, the audio in 20 ms InputAudioRawFrames, VAD stop: one user segment."""
    step = rate // 50
    chunks = [
        InputAudioRawFrame(audio=pcm[i : i + step].tobytes(), sample_rate=rate, num_channels=1)
        for i in range(0, len(pcm), step)
    ]
    return [VADUserStartedSpeakingFrame(), *chunks, VADUserStoppedSpeakingFrame(stop_secs=0.2)]


async def transcripts(
    service: STTService, pcm: np.ndarray, rate: int = RATE
) -> tuple[list[TranscriptionFrame], list[Frame]]:
    """Run one segment through ``service`` in a real pipeline; return transcripts, all frames."""
    down, up = await run_test(
        service,
        frames_to_send=utterance_frames(pcm, rate),
        pipeline_params=PipelineParams(enable_metrics=True, audio_in_sample_rate=rate),
    )
    return [f for f in down if isinstance(f, TranscriptionFrame)], list(down) + list(up)


def test_pocketsphinx_transcribes_espeak_sentence(pocketsphinx: PocketsphinxSTTService) -> None:
    """The embedded model hears recognisable words in synthetic speech."""
    words = pocketsphinx.transcribe(speech_16k(SENTENCE)).split()
    assert len(set(words) & KEYWORDS) >= 3, words


def test_pocketsphinx_ignores_silence(pocketsphinx: PocketsphinxSTTService) -> None:
    """Digital silence (the segment padding) must not turn into words."""
    assert pocketsphinx.transcribe(np.zeros(RATE, dtype=np.int16)) == ""


def test_wav_to_mono16k_resamples_and_downmixes() -> None:
    """A 22.05 kHz stereo WAV comes out as 16 kHz mono of the same duration."""
    stereo = np.zeros((22050, 2), dtype=np.int16)
    stereo[:, 0] = 1000
    out = wav_to_mono16k(to_wav(stereo.reshape(-1), 22050, channels=2))
    assert out.dtype == np.int16
    assert abs(len(out) - RATE) <= 2
    assert abs(int(out[RATE // 2]) - 500) <= 2


async def test_pocketsphinx_stage_in_pipeline() -> None:
    """VAD start, 24 kHz audio, VAD stop through pipecat: a TranscriptionFrame and metrics."""
    # 24 kHz input also exercises the resampling to pocketsphinx's 16 kHz.
    texts, frames = await transcripts(PocketsphinxSTTService(), speech_at(SENTENCE, 24000), 24000)
    assert len(texts) == 1
    frame = texts[0]
    assert len(KEYWORDS & set(frame.text.split())) >= 3, frame.text
    assert frame.finalized and frame.language == "en" and frame.timestamp
    metrics = [d for f in frames if isinstance(f, MetricsFrame) for d in f.data]
    assert any(isinstance(d, ProcessingMetricsData) for d in metrics)
    assert any(isinstance(d, TTFBMetricsData) for d in metrics)
    assert not [f for f in frames if isinstance(f, ErrorFrame)]


async def test_pocketsphinx_stage_silence_yields_nothing() -> None:
    """A segment without speech produces no TranscriptionFrame."""
    texts, _ = await transcripts(PocketsphinxSTTService(), np.zeros(RATE // 2, dtype=np.int16))
    assert texts == []


async def test_whisper_stage_on_tiny_model(tiny_whisper_model: Path) -> None:  # noqa: F811
    """pipecat's WhisperSTTService loads the tiny model and transcribes (gibberish) in pipecat."""
    service, line = create_stt_service(
        STTSettings(engine="whisper", whisper_model=str(tiny_whisper_model), whisper_device="cpu")
    )
    assert isinstance(service, WhisperSTTService)
    assert line == f"faster-whisper model {tiny_whisper_model} on cpu int8"
    texts, frames = await transcripts(service, speech_16k("hello there"))
    assert not [f for f in frames if isinstance(f, ErrorFrame)]
    assert len(texts) == 1 and isinstance(texts[0].text, str)


def test_auto_without_model_uses_moonshine() -> None:
    """No whisper_model: the embedded Moonshine, and the line (also logged) says why."""
    logged: list[str] = []
    sink = logger.add(lambda m: logged.append(m.record["message"]), level="INFO")
    try:
        service, line = create_stt_service(STTSettings())
    finally:
        logger.remove(sink)
    assert isinstance(service, MoonshineSTTService)
    assert line == "moonshine tiny-en (embedded): no whisper_model configured"
    assert any(line in m for m in logged)


def test_auto_with_model_uses_whisper(tiny_whisper_model: Path) -> None:  # noqa: F811
    """auto picks faster-whisper when the model loads."""
    service, line = create_stt_service(
        STTSettings(whisper_model=str(tiny_whisper_model), whisper_device="cpu")
    )
    assert isinstance(service, WhisperSTTService)
    assert line.startswith("faster-whisper model ")


def test_engine_pocketsphinx_is_forced(tiny_whisper_model: Path) -> None:  # noqa: F811
    """engine=pocketsphinx wins over a working whisper model."""
    service, line = create_stt_service(
        STTSettings(engine="pocketsphinx", whisper_model=str(tiny_whisper_model))
    )
    assert isinstance(service, PocketsphinxSTTService)
    assert line.startswith("pocketsphinx (embedded): ")


def broken_models(root: Path) -> dict[str, tuple[str, str]]:
    """Model settings that cannot load, each with a fragment of the expected reason."""
    empty = root / "empty"
    empty.mkdir()
    no_tokenizer = root / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "model.bin").write_bytes(b"x")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.bin").write_bytes(b"not a model")
    (corrupt / "tokenizer.json").write_text("{}")
    return {
        "missing": (str(root / "nope"), "does not exist"),
        "empty": (str(empty), "has no model.bin"),
        "no_tokenizer": (str(no_tokenizer), "has no tokenizer.json"),
        "corrupt": (str(corrupt), "Error"),
        "uncached_name": ("visage-tests/no-such-model", "local Hugging Face cache"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "no_tokenizer", "corrupt", "uncached_name"])
def test_auto_with_broken_model_falls_back(case: str, tmp_path: Path) -> None:
    """auto falls back to the embedded Moonshine and says which model failed and why."""
    model, reason = broken_models(tmp_path)[case]
    service, line = create_stt_service(STTSettings(whisper_model=model))
    assert isinstance(service, MoonshineSTTService)
    assert line.startswith(
        f"moonshine tiny-en (embedded): whisper model '{model}' could not be loaded: "
    )
    assert reason in line


@pytest.mark.parametrize("case", ["empty", "corrupt"])
def test_engine_whisper_with_broken_model_raises(case: str, tmp_path: Path) -> None:
    """engine=whisper never falls back silently: it raises with the reason and the fix."""
    model, reason = broken_models(tmp_path)[case]
    with pytest.raises(STTEngineError, match=r"stt\.engine is 'whisper'") as err:
        create_stt_service(STTSettings(engine="whisper", whisper_model=model))
    assert reason in str(err.value) and "stt.whisper_model" in str(err.value)


def test_engine_whisper_without_model_raises() -> None:
    """engine=whisper with no model configured is a clear configuration error."""
    with pytest.raises(STTEngineError, match="whisper_model is not set"):
        create_stt_service(STTSettings(engine="whisper"))
