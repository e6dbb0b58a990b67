"""Text to speech stage: embedded engines (Piper, espeak-ng) streaming phoneme-timed audio
with word times, or a production service through pipecat (``tts_production.py``).

The embedded engines share one stage, :class:`StreamingTTSService`; an engine plugs in
by how it starts a stream (``_start_stream``) and checks its settings
(``_check_settings``): :class:`PiperTTSService` and :class:`EspeakTTSService`.
:func:`create_tts_service` builds the configured one and says why, as STT and the LLM do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.frames.frames import CancelFrame, ErrorFrame, Frame, InterruptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import TTSSettings as PipecatTTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, assert_given

from pipelines import compat
from pipelines.config import TTSSettings
from pipelines.frames import PhonemeAudioRawFrame
from pipelines.health import DependencyHealth
from pipelines.stages.tts_text import FirstPiece, FirstPieceAggregator
from speech.espeak import EspeakEngine
from speech.stream import SpeechChunk, SpeechStream

if TYPE_CHECKING:
    from speech.piper import PiperEngine

# Chunks already synthesised are joined into one pushed frame until it holds this much.
MAX_FRAME_S = 0.5
# Longest wait for an engine's next chunk. Both synthesise many times faster than real
# time (Piper a sentence per model run), so a wait this long means it is stuck.
CHUNK_TIMEOUT_S = 5.0
# How far ahead of playback each engine's output may run. Piper makes a sentence per run
# and the next sentence's text comes only once this one is out, so it keeps enough
# audio queued to cover the next sentence's synthesis on a busy machine.
ESPEAK_MAX_LEAD_S = 1.0
PIPER_MAX_LEAD_S = 2.5
DEFAULT_ESPEAK_VOICE = "en-us"
# A reply's audio arriving this much after the audio before it has played out is logged
# (downstream buffers hide shorter gaps).
LATE_AUDIO_S = 0.05


class TTSEngineError(RuntimeError):
    """The configured text-to-speech engine cannot run; the message says how to fix it."""


class StreamingTTSService(TTSService):
    """Speaks with an embedded engine: ``PhonemeAudioRawFrame`` audio plus word timestamps.

    Synthesis runs on the engine's thread in ~50 ms chunks. They are pushed as they
    come, the ones already waiting joined into one frame of about ``MAX_FRAME_S``, paced
    to stay at most ``max_lead_s`` ahead of real-time playback (None: no pacing), so
    downstream stages never hold much of a reply. An interruption cancels ``run_tts``,
    which aborts synthesis if it is still running and drops every chunk not yet pushed;
    the base class drops the reply's queued audio. A synthesis that yields no chunk for
    ``chunk_timeout_s`` is aborted. Each finished synthesis reports ``"tts"`` ok to
    ``health``, each failed one its reason.

    Subclasses say how a stream starts (``_start_stream``) and check their settings
    (``_check_settings``, which raises ValueError).
    """

    #: The engine's name in logs and errors.
    engine_label = "TTS engine"

    def __init__(
        self,
        *,
        sample_rate: int,
        settings: PipecatTTSSettings,
        max_lead_s: float | None,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            push_text_frames=False,  # TTSTextFrames come from the engine's word timings
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=sample_rate,
            settings=settings,
            **kwargs,
        )
        self._max_lead_s = max_lead_s
        self._chunk_timeout_s = chunk_timeout_s
        self._health = health or DependencyHealth()
        self._speech: SpeechStream | None = None  # the synthesis run_tts is reading
        self._context_interruptible = True
        self._unjoined: set[SpeechStream] = set()
        # Seconds of audio already sent per context: word times count from a context's start.
        self._context_audio_s: dict[str, float] = {}
        # The reply's first words cut early from its first sentence (None: never cut).
        self._first_pieces: FirstPieceAggregator | None = None
        # Contexts whose next text continues a sentence cut early: the cut piece's words.
        self._after_cut: dict[str, int] = {}
        # When the audio sent so far would finish playing, on time.monotonic()'s clock.
        self._playout_end = 0.0
        self._playout_context: str | None = None  # whose audio that is
        self.late_s = 0.0  # how far synthesis fell behind playback inside replies, in all

    def _start_stream(
        self, text: str, *, first: bool, cut: bool, after_cut: int, on_ready: Callable[[], object]
    ) -> SpeechStream:
        """Start synthesising ``text`` (``first``: the context's first text; ``cut``: the
        first words of a sentence, cut early by the aggregator; ``after_cut``: the words
        of that piece when ``text`` is the rest of its sentence, else 0); ValueError for
        settings the engine cannot use."""
        raise NotImplementedError

    def _check_settings(self) -> None:
        """Raise ValueError if the engine cannot use the current settings."""

    def can_generate_metrics(self) -> bool:
        """TTFB, usage and (unpaced) processing metrics are reported."""
        return True

    @property
    def supports_processing_metrics(self) -> bool:
        """Paced output makes run_tts last as long as playback, not as long as synthesis."""
        return self._max_lead_s is None

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Stream ``text`` as phoneme-timed audio chunks while the engine synthesises it."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        label = self.engine_label
        cut = self._first_pieces is not None and self._first_pieces.take_cut(text)
        after_cut = self._after_cut.pop(context_id, 0)
        if cut:
            self._after_cut[context_id] = len(text.split())
        try:
            speech = self._start_stream(
                text,
                first=context_id not in self._context_audio_s,
                cut=cut,
                after_cut=after_cut,
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
                        why = f"no audio from {label} within {self._chunk_timeout_s:g} s"
                        self._health.failed("tts", why)
                        # The text is the user's conversation: logged at DEBUG only.
                        logger.error(f"{self}: {why}; {len(text)} characters skipped")
                        logger.debug(f"{self}: skipped [{text}]")
                        yield ErrorFrame(error=f"{self}: {why}")
                        return
                    continue
                chunk = self._with_ready_chunks(speech, chunk)
                self._note_late_audio(context_id)
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
            self._health.failed("tts", f"{label} failed ({type(e).__name__})")
            logger.exception(f"{self}: {label} synthesis failed ({len(text)} characters)")
            logger.debug(f"{self}: the text was [{text}]")
            yield ErrorFrame(error=f"{self}: {label} synthesis failed: {e}")
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
        self._after_cut.pop(context_id, None)

    async def on_audio_context_completed(self, context_id: str):
        """Forget the finished context's audio clock."""
        self._context_audio_s.pop(context_id, None)
        self._after_cut.pop(context_id, None)

    def cut_first_pieces(self, first_piece: FirstPiece) -> None:
        """Have a reply's first words cut from the LLM's text as soon as ``first_piece``
        can tell them (instead of waiting for the first sentence to end)."""
        self._first_pieces = FirstPieceAggregator(
            first_piece, language=self.text_aggregation_language
        )
        compat.set_tts_text_aggregator(self, self._first_pieces)

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
                logger.warning(f"{self}: {self.engine_label} synthesis thread did not stop")

    async def _update_settings(  # type: ignore[override]  # narrowed as TTSService does
        self, delta: PipecatTTSSettings
    ) -> dict[str, Any]:
        """Apply a settings delta, keeping the old values if the engine can't use the new."""
        changed = await super()._update_settings(delta)
        try:
            self._check_settings()
        except ValueError as e:
            for name in list(changed):
                setattr(self._settings, name, changed.pop(name))
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

    def _note_late_audio(self, context_id: str) -> None:
        """Log when a reply's next audio comes after what was sent of it has played out:
        the reply pauses there (synthesis could not keep up on a busy machine)."""
        late = time.monotonic() - self._playout_end
        if self._playout_context == context_id and late > LATE_AUDIO_S:
            self.late_s += late
            logger.info(f"{self}: {self.engine_label} fell {late * 1000:.0f} ms behind playback")
        self._playout_context = context_id

    async def _wait_for_playout_room(self, duration_s: float) -> None:
        """Sleep until this chunk would start at most ``max_lead_s`` ahead of playback."""
        now = time.monotonic()
        ahead = self._playout_end - now
        if self._max_lead_s is not None and ahead > self._max_lead_s:
            await asyncio.sleep(ahead - self._max_lead_s)
            now = time.monotonic()
        self._playout_end = max(self._playout_end, now) + duration_s


@dataclass
class EspeakTTSSettings(PipecatTTSSettings):
    """Runtime-updatable settings (send deltas in a ``TTSUpdateSettingsFrame``)."""

    rate: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    pitch: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class EspeakTTSService(StreamingTTSService):
    """libespeak-ng: robotic but tiny and instant; the light fallback."""

    Settings = EspeakTTSSettings
    _settings: EspeakTTSSettings
    engine_label = "espeak-ng"

    def __init__(
        self,
        settings: TTSSettings,
        *,
        max_lead_s: float | None = ESPEAK_MAX_LEAD_S,
        engine: EspeakEngine | None = None,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the service; raises ValueError now for an unknown voice or a bad rate."""
        engine = engine or EspeakEngine()
        voice = settings.voice or DEFAULT_ESPEAK_VOICE
        engine.check_params(voice, settings.rate, settings.pitch)
        self._engine = engine
        super().__init__(
            sample_rate=engine.sample_rate,
            settings=EspeakTTSSettings(
                model=None, voice=voice, language=None, rate=settings.rate, pitch=settings.pitch
            ),
            max_lead_s=max_lead_s,
            chunk_timeout_s=chunk_timeout_s,
            health=health,
            **kwargs,
        )

    def _start_stream(
        self, text: str, *, first: bool, cut: bool, after_cut: int, on_ready: Callable[[], object]
    ) -> SpeechStream:
        # espeak-ng speaks a reply's first sentence in a few ms: nothing is cut early.
        return self._engine.stream(
            text,
            voice=assert_given(self._settings.voice) or DEFAULT_ESPEAK_VOICE,
            rate=assert_given(self._settings.rate),
            pitch=assert_given(self._settings.pitch),
            on_ready=on_ready,
        )

    def _check_settings(self) -> None:
        s = self._settings
        self._engine.check_params(
            assert_given(s.voice) or "", assert_given(s.rate), assert_given(s.pitch)
        )


@dataclass
class PiperTTSSettings(PipecatTTSSettings):
    """Runtime-updatable settings (send deltas in a ``TTSUpdateSettingsFrame``)."""

    speed: float | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class PiperTTSService(StreamingTTSService):
    """Piper with the packaged en_US joe voice (or ``tts.piper_model``): natural speech,
    sentence by sentence, a reply's first few words in a run of their own (see
    ``speech.piper.split_text``)."""

    Settings = PiperTTSSettings
    _settings: PiperTTSSettings
    engine_label = "Piper"

    def __init__(
        self,
        settings: TTSSettings,
        *,
        max_lead_s: float | None = PIPER_MAX_LEAD_S,
        engine: PiperEngine | None = None,
        chunk_timeout_s: float = CHUNK_TIMEOUT_S,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the service, loading the voice (about a second, once per process);
        raises ``PiperLoadError`` when it cannot be used."""
        from speech.piper import PiperEngine, check_speed, first_piece

        check_speed(settings.speed)
        self._engine = engine or PiperEngine(
            settings.piper_model, threads=settings.piper_threads, behind_playback=True
        )
        super().__init__(
            sample_rate=self._engine.sample_rate,
            settings=PiperTTSSettings(
                model=None, voice=self._engine.name, language=None, speed=settings.speed
            ),
            max_lead_s=max_lead_s,
            chunk_timeout_s=chunk_timeout_s,
            health=health,
            **kwargs,
        )
        self.cut_first_pieces(first_piece)

    def _start_stream(
        self, text: str, *, first: bool, cut: bool, after_cut: int, on_ready: Callable[[], object]
    ) -> SpeechStream:
        return self._engine.stream(
            text,
            speed=assert_given(self._settings.speed),
            split_first=first,
            cut=cut,
            after_cut=after_cut,
            on_ready=on_ready,
        )

    def _check_settings(self) -> None:
        from speech.piper import check_speed

        check_speed(assert_given(self._settings.speed))
        if assert_given(self._settings.voice) != self._engine.name:
            raise ValueError(
                f"Piper speaks with the voice it loaded ({self._engine.name}); set "
                "tts.piper_model to use another"
            )


def create_tts_service(
    settings: TTSSettings, *, health: DependencyHealth | None = None, paced: bool = True
) -> tuple[TTSService, str]:
    """Build the configured TTS service (blocking: Piper loads its voice) and a line
    saying which engine speaks and why; raises ``TTSEngineError`` with the fix when an
    engine named in ``tts.engine`` cannot run. ``paced=False`` lets an embedded engine's
    output run as far ahead of playback as it can (``visage say``)."""
    engine = settings.engine
    options: dict[str, Any] = {"chunk_timeout_s": settings.timeout_s, "health": health}
    if not paced:
        options["max_lead_s"] = None
    if engine in ("openai", "cartesia", "elevenlabs"):
        from pipelines.stages.tts_production import create_production_tts

        try:
            service, line = create_production_tts(settings, health=health)
        except ValueError as e:
            raise TTSEngineError(str(e)) from e
        logger.info(f"TTS: {line}")
        return service, line

    if engine == "espeak":
        reason = "forced by engine=espeak"
    else:
        from speech.piper import PiperLoadError

        try:
            piper = PiperTTSService(settings, **options)
        except (PiperLoadError, ValueError) as e:
            if engine == "piper":
                raise TTSEngineError(
                    f"tts.engine is 'piper' but {e}. Fix it, or use tts.engine=auto to fall "
                    "back to the embedded espeak-ng."
                ) from e
            reason = f"Piper could not load: {e}"
            logger.warning(f"TTS: {reason}; falling back to espeak-ng")
        else:
            line = f"{piper._engine.describe()} (embedded): " + (
                "forced by engine=piper" if engine == "piper" else "auto, the voice loaded"
            )
            if settings.voice:
                line += f"; tts.voice {settings.voice!r} is for espeak (tts.engine=espeak)"
            logger.info(f"TTS: {line}")
            return piper, line

    try:
        service = EspeakTTSService(settings, **options)
    except ValueError as e:
        raise TTSEngineError(f"espeak-ng cannot speak with these settings: {e}") from e
    voice = settings.voice or DEFAULT_ESPEAK_VOICE
    line = f"espeak-ng voice {voice} (embedded): {reason}"
    logger.info(f"TTS: {line}")
    return service, line
