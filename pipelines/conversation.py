"""Assembles one call's pipeline: mic -> VAD/turn -> STT -> LLM -> TTS -> avatar -> WebRTC."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frameworks.rtvi.frames import RTVIServerMessageFrame
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.turns.user_start import MinWordsUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy, SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipelines import compat
from pipelines.config import LatencyBudgets, LLMSettings, STTSettings, TTSSettings, VADSettings
from pipelines.health import DependencyHealth
from pipelines.latency import TurnLatencyObserver
from pipelines.stages.avatar import AvatarStage
from pipelines.stages.llm import create_llm_service
from pipelines.stages.stt import create_stt_service
from pipelines.stages.tts import create_tts_service
from pipelines.stats import SessionStatsObserver
from pipelines.turn_end import (
    QuietTimingSileroVAD,
    SpeakAheadTurnStopStrategy,
    SpeculationWithdrawal,
)
from pipelines.turns import SustainedSpeechUserTurnStartStrategy
from renderer.config import AvatarSettings
from renderer.core import AvatarCore
from renderer.player import AvatarPlayer

AUDIO_IN_SAMPLE_RATE = 16_000
AUDIO_OUT_SAMPLE_RATE = 24_000

#: Builds the call's transport from the parameters the avatar needs.
TransportFactory = Callable[[TransportParams], BaseTransport]


@dataclass
class Conversation:
    """One call: its pipeline worker plus the parts a server or test wants to look at."""

    worker: PipelineWorker
    transport: BaseTransport
    avatar: AvatarStage
    stats: SessionStatsObserver
    latency: TurnLatencyObserver
    engines: dict[str, str] = field(default_factory=dict)
    #: The conversation so far, as the LLM sees it (what the avatar actually said).
    context: LLMContext | None = None


def avatar_transport_params(avatar: AvatarSettings) -> TransportParams:
    """What a call's transport carries: 16 kHz audio in, 24 kHz audio and the avatar's
    video out."""
    return TransportParams(
        audio_in_enabled=True,
        audio_in_sample_rate=AUDIO_IN_SAMPLE_RATE,
        audio_out_enabled=True,
        audio_out_sample_rate=AUDIO_OUT_SAMPLE_RATE,
        # 20 ms writes: the outgoing track holds one write ahead
        # (pipelines/transports/smallwebrtc.py), which is what still plays after the
        # avatar halts for a barge-in.
        audio_out_10ms_chunks=2,
        video_out_enabled=True,
        video_out_is_live=True,
        video_out_width=avatar.width,
        video_out_height=avatar.height,
        video_out_framerate=avatar.fps,
    )


def _vad_and_turns(vad: VADSettings) -> LLMUserAggregatorParams:
    analyzer = QuietTimingSileroVAD(
        params=VADParams(
            confidence=vad.confidence,
            start_secs=vad.start_secs,
            stop_secs=vad.stop_secs,
            min_volume=vad.min_volume,
        )
    )
    stop: BaseUserTurnStopStrategy
    if vad.smart_turn:
        # pipecat's bundled smart-turn v3 model. Its own fallback waits 3 s of silence
        # after a turn it judges unfinished, which feels stuck in a conversation.
        analyzer_params = SmartTurnParams(stop_secs=vad.turn_max_silence_secs)
        stop = SpeakAheadTurnStopStrategy(
            turn_analyzer=LocalSmartTurnAnalyzerV3(params=analyzer_params),
            speak_ahead=vad.speak_ahead,
            question_ends_turn=vad.question_ends_turn,
            quiet_secs=analyzer.quiet_secs,
            early_verdict_secs=vad.early_verdict_secs,
        )
    else:
        stop = SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=vad.turn_max_silence_secs)
    start = [
        SustainedSpeechUserTurnStartStrategy(
            min_speech_secs=vad.min_interruption_secs,
            vad_start_secs=vad.start_secs,
            vad_stop_secs=vad.stop_secs,
        ),
        # A turn VAD missed starts from its words; over the avatar, a short
        # acknowledgment ("uh-huh") is dropped instead of starting a turn.
        MinWordsUserTurnStartStrategy(min_words=3),
    ]
    strategies = UserTurnStrategies(start=start, stop=[stop])
    return LLMUserAggregatorParams(vad_analyzer=analyzer, user_turn_strategies=strategies)


def check_engines(
    stt: STTSettings, llm: LLMSettings, tts: TTSSettings | None = None
) -> dict[str, str]:
    """Build the STT, LLM and TTS stages once, as a call would, and say which engines
    run: a server checks its configuration at start rather than failing its first
    caller (and Piper's voice is loaded by then). Raises ``STTEngineError``,
    ``TTSEngineError`` or ``ValueError`` with the fix."""
    _stt_service, stt_why = create_stt_service(stt)
    _llm_service, llm_why = create_llm_service(llm)
    _tts_service, tts_why = create_tts_service(tts or TTSSettings())
    return {"stt": stt_why, "llm": llm_why, "tts": tts_why}


def build_conversation(
    transport: BaseTransport | TransportFactory,
    *,
    stt: STTSettings,
    llm: LLMSettings,
    tts: TTSSettings,
    vad: VADSettings,
    avatar: AvatarSettings,
    budgets: LatencyBudgets | None = None,
    name: str = "call",
    health: DependencyHealth | None = None,
) -> Conversation:
    """Build the pipeline for one caller on ``transport`` (a pipecat transport, or a
    function making one from :func:`avatar_transport_params`); the avatar greets once the
    caller connects. ``name`` labels the call in the log; the stages report the state of
    their services to ``health``."""
    if not isinstance(transport, BaseTransport):
        transport = transport(avatar_transport_params(avatar))
    stt_service, stt_why = create_stt_service(stt, health=health)
    llm_service, llm_why = create_llm_service(llm, health)
    tts_service, tts_why = create_tts_service(tts, health=health)
    avatar_stage = AvatarStage(AvatarPlayer(AvatarCore(avatar, sample_rate=AUDIO_OUT_SAMPLE_RATE)))

    if vad.smart_turn and vad.speak_ahead:
        # A reply made ahead of the turn's end is held by the avatar, after TTS, not by
        # the LLM: it is synthesised while smart-turn decides.
        compat.let_speculative_replies_through(llm_service)

    # The system prompt lives on the LLM service (pipecat 1.14 deprecates it in the context).
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context, user_params=_vad_and_turns(vad))

    pipeline = Pipeline(
        [
            transport.input(),
            stt_service,
            aggregators.user(),
            SpeculationWithdrawal(),
            llm_service,
            tts_service,
            avatar_stage,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    budgets = budgets or LatencyBudgets()
    latency = TurnLatencyObserver(
        llm=llm_service,
        tts=tts_service,
        avatar=avatar_stage,
        output=transport.output(),
        budgets=budgets,
        on_turn=lambda report: worker.queue_frame(
            RTVIServerMessageFrame(data=report.as_message(budgets))
        ),
    )
    stats = SessionStatsObserver(
        output_processor=transport.output(), input_processor=transport.input()
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=AUDIO_IN_SAMPLE_RATE,
            audio_out_sample_rate=AUDIO_OUT_SAMPLE_RATE,
            enable_metrics=True,
        ),
        observers=[stats, latency],
        # The peer leaving ends the call; an idle call is a valid kiosk state.
        idle_timeout_secs=None,
    )

    @transport.event_handler("on_client_connected")
    async def _greet(_transport, _client) -> None:
        await worker.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def _hang_up(_transport, _client) -> None:
        await worker.cancel(reason="peer disconnected")

    engines = {"stt": stt_why, "llm": llm_why, "tts": tts_why}
    logger.info(f"conversation {name}: " + "; ".join(engines.values()))
    return Conversation(worker, transport, avatar_stage, stats, latency, engines, context)
