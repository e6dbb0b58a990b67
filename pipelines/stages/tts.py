"""Text to speech stage: libespeak-ng in pipecat, streaming phoneme-timed audio with word times."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import CancelFrame, ErrorFrame, Frame, InterruptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings as PipecatTTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, assert_given

from pipelines.config import TTSSettings
from pipelines.frames import PhonemeAudioRawFrame
from pipelines.health import DependencyHealth
from speech.espeak import EspeakEngine, SpeechChunk, SpeechStream

# Chunks already synthesised are joined into one pushed frame until it holds this much.
MAX_FRAME_S = 0.5
# Longest wait for espeak-ng's next chunk. It synthesises hundreds of times faster than
# real time and holds its lock for milliseconds, so a wait this long means it is stuck.
CHUNK_TIMEOUT_S = 5.0


@dataclass
class EspeakTTSSettings(PipecatTTSSettings):
    """Runtime-updatable settings (send deltas in a ``TTSUpdateSettingsFrame``)."""

    rate: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pitch: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class EspeakTTSService(TTSService):
    """Speaks with libespeak-ng: ``PhonemeAudioRawFrame`` audio plus word timestamps.

    Synthesis runs on a worker thread (hundreds of times faster than real time) in ~50 ms
    chunks. They are pushed as they come, the ones already waiting joined into one frame
    of about ``MAX_FRAME_S``, paced to stay at most ``max_lead_s`` ahead of real-time
    playback (None: no pacing), so downstream stages never hold much of a reply. An
    interruption cancels ``run_tts``, which aborts synthesis if it is still running and
    drops every chunk not yet pushed; the base class drops the reply's queued audio.
    A synthesis that yields no chunk for ``chunk_timeout_s`` is aborted. Each finished
    synthesis reports ``"tts"`` ok to ``health``, each failed one its reason.
    """

    Settings = EspeakTTSSettings
    _settings: EspeakTTSSettings

    def __init__(
        self,
        settings: TTSSettings,
        *,
        max_lead_s: float | None = 1.0,
        engine: EspeakEngine | None = None,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the service; raises ValueError now for an unknown voice or a bad rate."""
        engine = engine or EspeakEngine()
        engine.check_params(settings.voice, settings.rate, settings.pitch)
        super().__init__(
            push_text_frames=False,  # TTSTextFrames come from espeak's word timings
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=engine.sample_rate,
            settings=EspeakTTSSettings(
                model=None,
                voice=settings.voice,
                language=None,
                rate=settings.rate,
                pitch=settings.pitch,
            ),
            **kwargs,
        )
        self._engine = engine
        self._max_lead_s = max_lead_s
        self._chunk_timeout_s = chunk_timeout_s
        self._health = health or DependencyHealth()
        self._speech: SpeechStream | None = None  # the synthesis run_tts is reading
        self._context_interruptible = True
        self._unjoined: set[SpeechStream] = set()
        # Seconds of audio already sent per context: word times count from a context's start.
        self._context_audio_s: dict[str, float] = {}
        # When the audio sent so far would finish playing, on time.monotonic()'s clock.
        self._playout_end = 0.0

    def can_generate_metrics(self) -> bool:
        """TTFB, usage and (unpaced) processing metrics are reported."""
        return True

    @property
    def supports_processing_metrics(self) -> bool:
        """Paced output makes run_tts last as long as playback, not as long as synthesis."""
        return self._max_lead_s is None

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Stream ``text`` as phoneme-timed audio chunks while espeak-ng synthesises it."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        try:
            speech = self._engine.stream(
                text,
                voice=assert_given(self._settings.voice) or "en-us",
                rate=assert_given(self._settings.rate),
                pitch=assert_given(self._settings.pitch),
                on_ready=lambda: loop.call_soon_threadsafe(ready.set),
            )
        except ValueError as e:
            yield ErrorFrame(error=f"{self}: {e}")
            return
        self._track(speech, context_id)
        try:
            await self.start_tts_usage_metrics(text)
            while True:
                ready.clear()  # before polling, so a chunk arriving meanwhile still wakes us
                chunk = speech.poll()
                if chunk is None:
                    if speech.exhausted:
                        break
                    try:
                        await asyncio.wait_for(ready.wait(), self._chunk_timeout_s)
                    except TimeoutError:
                        why = f"no audio from espeak-ng within {self._chunk_timeout_s:g} s"
                        self._health.failed("tts", why)
                        logger.error(f"{self}: {why} while speaking [{text}]; skipped")
                        yield ErrorFrame(error=f"{self}: {why}")
                        return
                    continue
                chunk = self._with_ready_chunks(speech, chunk)
                await self._wait_for_playout_room(chunk.duration_s)
                await self.stop_ttfb_metrics()
                start_s = self._context_audio_s.get(context_id, 0.0)
                self._context_audio_s[context_id] = start_s + chunk.duration_s
                yield PhonemeAudioRawFrame(
                    audio=chunk.audio,
                    sample_rate=self.sample_rate,
                    num_channels=1,
                    context_id=context_id,
                    phonemes=chunk.phonemes,
                )
                if chunk.words:
                    words = [(word, start_s + offset) for word, offset in chunk.words]
                    await self.add_word_timestamps(words, context_id)
            await self.stop_ttfb_metrics()
            if not speech.aborted:
                self._health.ok("tts")
        except Exception as e:
            self._health.failed("tts", f"espeak-ng failed ({type(e).__name__})")
            logger.exception(f"{self}: espeak-ng synthesis failed for [{text}]")
            yield ErrorFrame(error=f"{self}: espeak-ng synthesis failed: {e}")
        finally:
            # Normally a no-op; on cancellation (an interruption) it stops synthesis at once.
            # Nothing here may await: a cancelled generator may be closed by the event loop.
            speech.abort()
            if self._speech is speech:
                self._speech = None

    async def _handle_interruption(self, frame: InterruptionFrame, direction: FrameDirection):
        """Abort interruptible synthesis first, then let the base drop the reply's audio."""
        if self._speech is not None and self._context_interruptible:
            self._speech.abort()
        await super()._handle_interruption(frame, direction)
        if not self.get_audio_contexts():  # only uninterruptible speech survives
            self._playout_end = 0.0

    async def on_audio_context_interrupted(self, context_id: str):
        """Forget the interrupted context's audio clock."""
        self._context_audio_s.pop(context_id, None)

    async def on_audio_context_completed(self, context_id: str):
        """Forget the finished context's audio clock."""
        self._context_audio_s.pop(context_id, None)

    async def cancel(self, frame: CancelFrame):
        """Stop synthesis at once when the pipeline is cancelled."""
        await super().cancel(frame)
        for speech in list(self._unjoined):
            speech.abort()

    async def cleanup(self):
        """Abort any synthesis and wait for its thread, so none outlives the service."""
        await super().cleanup()
        streams, self._unjoined = list(self._unjoined), set()
        for speech in streams:
            speech.abort()
            if not speech.join(0) and not await asyncio.to_thread(speech.join, 2.0):
                logger.warning(f"{self}: espeak-ng synthesis thread did not stop")

    async def _update_settings(  # type: ignore[override]  # narrowed as TTSService does
        self, delta: PipecatTTSSettings
    ) -> dict[str, Any]:
        """Apply a settings delta, keeping the old values if espeak-ng can't use the new."""
        changed = await super()._update_settings(delta)
        s = self._settings
        try:
            self._engine.check_params(
                assert_given(s.voice) or "", assert_given(s.rate), assert_given(s.pitch)
            )
        except ValueError as e:
            for name in ("voice", "rate", "pitch"):
                if name in changed:
                    setattr(s, name, changed.pop(name))
            await self.push_error(error_msg=f"{self}: settings not applied: {e}", exception=e)
        return changed

    def _track(self, speech: SpeechStream, context_id: str) -> None:
        """Note the synthesis being read, and forget finished threads."""
        self._unjoined = {s for s in self._unjoined if not s.join(0)}
        self._unjoined.add(speech)
        self._speech = speech
        context = self._tts_contexts.get(context_id)
        self._context_interruptible = context.interruptible if context else True

    def _with_ready_chunks(self, speech: SpeechStream, first: SpeechChunk) -> SpeechChunk:
        """``first`` joined with the chunks already synthesised after it, until the frame
        holds ``MAX_FRAME_S`` (or the pacing lead, if shorter): pushed as one frame.

        Synthesis runs far ahead of real time, so after a reply's first chunk most of a
        sentence is usually waiting; one frame instead of ten gets the avatar the half
        second of audio its first motion chunk needs without ten trips through the
        pipeline's queues on a busy event loop.
        """
        limit = min(MAX_FRAME_S, self._max_lead_s or MAX_FRAME_S)
        chunks, duration = [first], first.duration_s
        while duration < limit:
            chunk = speech.poll()
            if chunk is None:
                break
            chunks.append(chunk)
            duration += chunk.duration_s
        return SpeechChunk.join(chunks)

    async def _wait_for_playout_room(self, duration_s: float) -> None:
        """Sleep until this chunk would start at most ``max_lead_s`` ahead of playback."""
        now = time.monotonic()
        ahead = self._playout_end - now
        if self._max_lead_s is not None and ahead > self._max_lead_s:
            await asyncio.sleep(ahead - self._max_lead_s)
            now = time.monotonic()
        self._playout_end = max(self._playout_end, now) + duration_s
