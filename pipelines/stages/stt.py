"""Speech to text: faster-whisper when a model is available, embedded pocketsphinx otherwise.

pocketsphinx ships its English model inside the wheel, so a fresh install transcribes
offline with no download. faster-whisper is far more accurate and is the production
choice, but needs a CTranslate2 model folder (or one already in the Hugging Face cache).
"""

from __future__ import annotations

import io
import re
import wave
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.services.settings import STTSettings as PipecatSTTSettings
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt

from pipelines.config import STTSettings
from pipelines.speech.sphinx import shared_worker

POCKETSPHINX_SAMPLE_RATE = 16000
POCKETSPHINX_MODEL_NAME = "cmusphinx-en-us"

# Worst-case time from end of speech to transcript on 2 CPU cores (pocketsphinx decodes
# at a real-time factor of 0.15-0.25, so a 5 s turn plus padding takes about 1.2 s).
# Downstream turn strategies read it from the STTMetadataFrame; setting it also avoids
# pipecat's "ttfs_p99_latency not set" warning. The whisper value depends on the model.
POCKETSPHINX_TTFS_P99 = 1.5
WHISPER_CPU_TTFS_P99 = 1.5

# Decoder options on top of the bundled en-us acoustic model, full language model and CMU
# dictionary, so it still transcribes arbitrary English. Measured on espeak-ng speech
# (30 utterances, 3 voices/rates): the defaults were best or within noise of every
# variant tried (lw 4-10, wider beams, topn 8/16, wip, bestpathlw, VTLN warp 0.9-1.1,
# no fwdflat); dither cost 12 points of WER. The front end (cmn batch, remove_noise,
# 25 filters) comes from the model's feat.params, which overrides keyword arguments.
POCKETSPHINX_OPTIONS: dict[str, Any] = {"loglevel": "FATAL"}

# Segments whose peak stays below this (about -66 dBFS) hold no speech. pocketsphinx
# "hears" words in digital silence (one second of zeros decodes as "dog"), so such
# segments are not decoded at all.
SILENCE_PEAK = 16


class STTEngineError(RuntimeError):
    """The configured speech-to-text engine cannot run; the message says how to fix it."""


class PocketsphinxSTTService(SegmentedSTTService):
    """Offline English STT on pocketsphinx, one decode per VAD segment (WAV in, text out)."""

    def __init__(
        self,
        *,
        decoder_options: dict[str, Any] | None = None,
        ttfs_p99_latency: float | None = POCKETSPHINX_TTFS_P99,
        **kwargs: Any,
    ) -> None:
        """Load the decoder once; extra kwargs go to pipecat's SegmentedSTTService."""
        super().__init__(
            settings=PipecatSTTSettings(model=POCKETSPHINX_MODEL_NAME, language=Language.EN),
            ttfs_p99_latency=ttfs_p99_latency,
            **kwargs,
        )
        self._worker = shared_worker({**POCKETSPHINX_OPTIONS, **(decoder_options or {})})

    def can_generate_metrics(self) -> bool:
        """Report processing and TTFB metrics, like pipecat's Whisper service."""
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        """Map any English variant to "en"; the bundled model knows no other language."""
        code = str(language.value if isinstance(language, Language) else language)
        if code.split("-")[0].lower() == "en":
            return "en"
        logger.warning(f"{self}: pocketsphinx only transcribes English, not {code!r}")
        return "en"

    def transcribe_wav(self, audio: bytes) -> str:
        """Decode a 16-bit PCM WAV of any rate and channel count (blocking)."""
        return self.transcribe(wav_to_mono16k(audio))

    def transcribe(self, pcm: np.ndarray) -> str:
        """Decode 16 kHz mono int16 samples and return the words (blocking)."""
        if _is_silent(pcm):
            return ""
        return self._worker.transcribe(pcm)

    @traced_stt
    async def _handle_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Hook for pipecat's STT tracing span."""

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Decode one WAV segment off the event loop; yield a TranscriptionFrame if it had words."""
        await self.start_processing_metrics()
        try:
            pcm = wav_to_mono16k(audio)
            text = "" if _is_silent(pcm) else await self._worker.transcribe_async(pcm)
        finally:
            await self.stop_processing_metrics()
        if not text:
            logger.debug(f"{self}: no words in {len(audio)} bytes of audio")
            return
        await self._handle_transcription(text, True, Language.EN)
        logger.debug(f"Transcription: [{text}]")
        yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)


def _is_silent(pcm: np.ndarray) -> bool:
    return pcm.size == 0 or int(np.abs(pcm.astype(np.int32)).max()) < SILENCE_PEAK


def wav_to_mono16k(audio: bytes) -> np.ndarray:
    """Read a 16-bit PCM WAV and return mono int16 samples at 16 kHz."""
    with wave.open(io.BytesIO(audio), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM WAV, got {8 * wav.getsampwidth()}-bit")
        rate, channels = wav.getframerate(), wav.getnchannels()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate != POCKETSPHINX_SAMPLE_RATE and samples.size:
        import soxr

        samples = soxr.resample(samples, rate, POCKETSPHINX_SAMPLE_RATE)
    return samples


def create_stt_service(settings: STTSettings) -> tuple[STTService, str]:
    """Build the configured STT service (blocking: loads the model) and a line saying why."""
    if settings.engine == "pocketsphinx":
        reason = "forced by engine=pocketsphinx"
    elif not settings.whisper_model:
        if settings.engine == "whisper":
            raise STTEngineError(
                "stt.engine is 'whisper' but stt.whisper_model is not set. Set it to a "
                "CTranslate2 model folder (or a model name in the local Hugging Face cache), "
                "or use stt.engine=auto to fall back to the embedded pocketsphinx."
            )
        reason = "no whisper_model configured"
    else:
        try:
            service, line = _create_whisper_service(settings)
        except STTEngineError as e:
            if settings.engine == "whisper":
                raise STTEngineError(
                    f"stt.engine is 'whisper' but {e}. Fix stt.whisper_model, or use "
                    "stt.engine=auto to fall back to the embedded pocketsphinx."
                ) from e
            reason = str(e)
        else:
            logger.info(f"STT: {line}")
            return service, line

    if settings.language.split("-")[0].lower() != "en":
        logger.warning(
            f"pocketsphinx only transcribes English; stt.language={settings.language!r} ignored"
        )
    service = PocketsphinxSTTService()
    line = f"pocketsphinx (embedded): {reason}"
    logger.info(f"STT: {line}")
    return service, line


def _create_whisper_service(settings: STTSettings) -> tuple[STTService, str]:
    """Load pipecat's WhisperSTTService, raising STTEngineError with the reason on failure."""
    name = str(settings.whisper_model)
    try:
        import ctranslate2
        from pipecat.services.whisper.stt import WhisperSTTService
    except ImportError as e:
        raise STTEngineError(
            f"whisper model {name!r} could not be loaded: faster-whisper is not installed "
            f"({e}); install pipecat-ai[whisper]"
        ) from e

    try:
        folder = resolve_whisper_model(name)
    except ValueError as e:
        raise STTEngineError(f"whisper model {name!r} could not be loaded: {e}") from e

    device = settings.whisper_device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    try:
        language: Language | str = Language(settings.language)
    except ValueError:
        language = settings.language
    try:
        # pipecat loads the model in __init__, so a bad folder fails here, not mid-call.
        # It gets the resolved folder, never a bare name, so it cannot reach for the hub.
        service = WhisperSTTService(
            settings=WhisperSTTService.Settings(model=str(folder), language=language),
            device=device,
            compute_type=settings.whisper_compute_type,
            ttfs_p99_latency=WHISPER_CPU_TTFS_P99,
        )
    except Exception as e:
        raise STTEngineError(
            f"whisper model {name!r} could not be loaded: {type(e).__name__}: {e}"
        ) from e
    return service, f"faster-whisper model {name} on {device} {settings.whisper_compute_type}"


# faster-whisper's own short names ("tiny", "large-v3", ...) and hub ids ("org/repo").
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def resolve_whisper_model(name: str) -> Path:
    """Return the local CTranslate2 folder for a folder path or a cached model name, offline."""
    path = Path(name).expanduser()
    if not path.exists() and _HUB_ID.match(name) and not name.startswith("."):
        from faster_whisper.utils import download_model

        try:
            # local_files_only: never touch the network, so an offline box fails fast.
            path = Path(download_model(name, local_files_only=True))
        except FileNotFoundError as e:  # huggingface_hub's LocalEntryNotFoundError
            raise ValueError(
                "no folder of that name, and not in the local Hugging Face cache; "
                "download it once with internet access, or give a local CTranslate2 "
                "model folder"
            ) from e
        except ValueError as e:  # faster-whisper: not a known size name
            raise ValueError(f"no folder of that name, and not a model name ({e})") from e
        except Exception as e:
            raise ValueError(f"no folder of that name ({type(e).__name__}: {e})") from e
    if not path.exists():
        raise ValueError(f"folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder (expected a CTranslate2 model folder)")
    if not (path / "model.bin").is_file():
        raise ValueError(
            f"{str(path)!r} has no model.bin; it is not a CTranslate2 model "
            "(convert one with ct2-transformers-converter)"
        )
    if not (path / "tokenizer.json").is_file():
        # Without it faster-whisper downloads a tokenizer from the hub, which hangs offline.
        raise ValueError(
            f"{str(path)!r} has no tokenizer.json (copy it from the original model; "
            "convert with --copy_files tokenizer.json)"
        )
    return path
