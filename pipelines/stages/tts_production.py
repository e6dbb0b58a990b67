"""Production text to speech through pipecat's own services, chosen by ``tts.engine``.

- ``openai``: any OpenAI-compatible ``/audio/speech`` endpoint (OpenAI itself, or a
  self-hosted server that speaks that API, at ``tts.base_url``), streamed as PCM. No
  word timings: the avatar stage keeps the words of an interrupted sentence by how much
  of its audio played.
- ``cartesia``, ``elevenlabs``: their websocket services, with word timestamps.

The avatar works with any of them: the learned motion needs only the audio. Each reports
to ``health`` like the embedded engines.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame, TTSAudioRawFrame
from pipecat.services.openai.tts import OpenAITTSService, OpenAITTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import assert_given

from pipelines.config import TTSSettings
from pipelines.health import DependencyHealth

OPENAI_DEFAULT_MODEL = "gpt-4o-mini-tts"
OPENAI_DEFAULT_VOICE = "alloy"
# Speed ranges the services document; tts.speed is clamped to them.
CARTESIA_SPEED = (0.6, 1.5)
ELEVENLABS_SPEED = (0.7, 1.2)


def endpoint(url: str | None, default: str) -> str:
    """``url`` without credentials, query or fragment, for logs and errors."""
    if not url:
        return default
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class OpenAICompatibleTTSService(OpenAITTSService):
    """pipecat's OpenAI TTS for any server that speaks ``/v1/audio/speech``.

    Unlike pipecat's, it sends any voice name (self-hosted servers have their own), has
    a bounded HTTP timeout and no retries (a sentence that fails is skipped and the reply
    goes on), and reports each sentence's outcome to ``health``.
    """

    _settings: OpenAITTSSettings

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        timeout_s: float,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(api_key=api_key, base_url=base_url, **kwargs)
        from openai import AsyncOpenAI

        # The SDK's defaults (600 s, 2 retries) could keep a call silent for half an hour.
        self._client = AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._endpoint = endpoint(base_url, "https://api.openai.com/v1")
        self._health = health or DependencyHealth()

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Stream ``text``'s PCM from the endpoint as it arrives."""
        params: dict[str, Any] = {
            "input": text,
            "model": assert_given(self._settings.model),
            "voice": assert_given(self._settings.voice) or OPENAI_DEFAULT_VOICE,
            "response_format": "pcm",
        }
        if self._settings.instructions:
            params["instructions"] = self._settings.instructions
        if self._settings.speed:
            params["speed"] = self._settings.speed
        try:
            async with self._client.audio.speech.with_streaming_response.create(**params) as r:
                if r.status_code != 200:
                    why = f"answered HTTP {r.status_code}"
                    self._health.failed("tts", why)
                    logger.error(f"{self}: {self._endpoint} {why}: {await r.text()}")
                    yield ErrorFrame(error=f"{self}: {why}")
                    return
                await self.start_tts_usage_metrics(text)
                async for chunk in r.iter_bytes(self.chunk_size):
                    if chunk:
                        await self.stop_ttfb_metrics()
                        yield TTSAudioRawFrame(chunk, self.sample_rate, 1, context_id=context_id)
            self._health.ok("tts")
        except Exception as e:
            why = f"failed ({type(e).__name__})"
            self._health.failed("tts", why)
            logger.error(f"{self}: {self._endpoint} {why} speaking {len(text)} characters: {e}")
            logger.debug(f"{self}: the text was [{text}]")
            yield ErrorFrame(error=f"{self}: {why}: {e}")


def _report_connection(service: TTSService, health: DependencyHealth | None) -> None:
    """A websocket service's connection state goes to ``health``."""
    if health is None:
        return

    @service.event_handler("on_connected")
    async def _connected(_service: TTSService) -> None:
        health.ok("tts")

    @service.event_handler("on_connection_error")
    async def _failed(_service: TTSService, error: str) -> None:
        health.failed("tts", f"connection failed ({error[:80]})")


def _clamped(speed: float, low: float, high: float, name: str) -> float | None:
    """``speed`` within a service's range (None for the voice's own speed)."""
    if speed == 1.0:
        return None
    clamped = min(max(speed, low), high)
    if clamped != speed:
        logger.warning(f"TTS: {name} takes speeds {low} to {high}; tts.speed {speed} -> {clamped}")
    return clamped


def _model(service: TTSService) -> str:
    """The model a pipecat service will ask for (its default unless tts.model is set)."""
    settings: Any = service._settings
    return str(assert_given(settings.model))


def _key(settings: TTSSettings, name: str) -> str:
    key = settings.api_key.get_secret_value()
    if not key or key == "none":
        raise ValueError(
            f"tts.engine is {name!r} but tts.api_key is not set; set it (e.g. "
            f"VISAGE_TTS__API_KEY=...) or use tts.engine=auto for the embedded voice"
        )
    return key


def _voice(settings: TTSSettings, name: str) -> str:
    if not settings.voice:
        raise ValueError(
            f"tts.engine is {name!r} but tts.voice is not set; set it to one of your "
            f"{name} voice ids"
        )
    return settings.voice


def create_production_tts(
    settings: TTSSettings, *, health: DependencyHealth | None = None
) -> tuple[TTSService, str]:
    """pipecat's service for ``settings.engine`` (openai, cartesia or elevenlabs) and a
    line for the log; ValueError with the fix for settings it cannot use. Nothing
    connects until the pipeline starts."""
    engine = settings.engine
    if engine == "openai":
        model = settings.model or OPENAI_DEFAULT_MODEL
        voice = settings.voice or OPENAI_DEFAULT_VOICE
        openai_service = OpenAICompatibleTTSService(
            api_key=settings.api_key.get_secret_value(),
            base_url=settings.base_url,
            timeout_s=settings.timeout_s,
            health=health,
            settings=OpenAITTSService.Settings(
                model=model,
                voice=voice,
                speed=None if settings.speed == 1.0 else settings.speed,
            ),
        )
        where = endpoint(settings.base_url, "https://api.openai.com/v1")
        return openai_service, f"OpenAI-compatible speech {model} voice {voice} at {where}"
    if engine == "cartesia":
        try:
            from pipecat.services.cartesia.tts import CartesiaTTSService, GenerationConfig
        except ImportError as e:
            raise ValueError(f"Cartesia needs pipecat-ai[cartesia] ({e})") from e

        speed = _clamped(settings.speed, *CARTESIA_SPEED, "Cartesia")
        cartesia_settings = CartesiaTTSService.Settings(voice=_voice(settings, engine))
        if settings.model:
            cartesia_settings.model = settings.model
        if speed is not None:
            cartesia_settings.generation_config = GenerationConfig(speed=speed)
        extra: dict[str, Any] = {"url": settings.base_url} if settings.base_url else {}
        cartesia = CartesiaTTSService(
            api_key=_key(settings, engine), settings=cartesia_settings, **extra
        )
        _report_connection(cartesia, health)
        model = _model(cartesia)
        where = endpoint(settings.base_url, "wss://api.cartesia.ai/tts/websocket")
        return cartesia, f"Cartesia {model} voice {settings.voice} at {where} (word timestamps)"
    if engine == "elevenlabs":
        try:
            from pipecat.services.elevenlabs.tts import ElevenLabsTTSService
        except ImportError as e:
            raise ValueError(f"ElevenLabs needs pipecat-ai[elevenlabs] ({e})") from e

        speed = _clamped(settings.speed, *ELEVENLABS_SPEED, "ElevenLabs")
        eleven_settings = ElevenLabsTTSService.Settings(voice=_voice(settings, engine))
        if settings.model:
            eleven_settings.model = settings.model
        if speed is not None:
            eleven_settings.speed = speed
        extra = {"url": settings.base_url} if settings.base_url else {}
        eleven = ElevenLabsTTSService(
            api_key=_key(settings, engine), settings=eleven_settings, **extra
        )
        _report_connection(eleven, health)
        model = _model(eleven)
        where = endpoint(settings.base_url, "wss://api.elevenlabs.io")
        return eleven, f"ElevenLabs {model} voice {settings.voice} at {where} (word timestamps)"
    raise ValueError(f"not a production TTS engine: {engine!r}")
