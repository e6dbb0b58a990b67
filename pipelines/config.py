"""Settings of the conversation pipeline's stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class STTSettings(BaseModel):
    """Speech to text."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    engine: Literal["auto", "moonshine", "whisper", "pocketsphinx"] = Field(
        "auto",
        description="auto: faster-whisper when whisper_model is set and loads, else the "
        "embedded Moonshine tiny-en, else pocketsphinx (each fallback logged with its reason). "
        "Naming an engine makes its failure to load an error at `visage serve` start.",
    )
    moonshine_dir: Path | None = Field(
        None,
        description="Folder with Moonshine tiny-en's files (checked against pinned sha256). "
        "Unset: $XDG_CACHE_HOME/visage/models/moonshine-tiny-en, filled by `visage models "
        "fetch-speech` (make install runs it).",
    )
    whisper_model: str | None = Field(
        None,
        description="faster-whisper model: a local CTranslate2 folder, or a model name "
        "(names need the model already in the local Hugging Face cache, or internet).",
    )
    whisper_device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Whisper device.")
    whisper_compute_type: str = Field("int8", description="CTranslate2 compute type.")
    language: str = Field("en", description="Spoken language (ISO 639-1).")


class LLMSettings(BaseModel):
    """The language model: an OpenAI-compatible endpoint, or the embedded persona."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    base_url: str | None = Field(
        None,
        description="OpenAI-compatible base URL (e.g. http://localhost:11434/v1 for Ollama). "
        "Unset: the embedded persona responder answers.",
    )
    model: str = Field("gpt-4o-mini", description="Model name sent to the endpoint.")
    api_key: SecretStr = Field(SecretStr("none"), description="API key for the endpoint.")
    system_prompt: str = Field(
        "You are a friendly video avatar. Answer in one or two short spoken sentences, "
        "without lists, markdown or emoji.",
        description="System prompt for a real LLM.",
    )
    persona_file: Path | None = Field(
        None, description="Persona TOML for the embedded responder; unset: the bundled one."
    )
    timeout_s: float = Field(
        2.5,
        gt=0.0,
        le=120.0,
        description="Longest wait from the turn's start to the first token of a reply (retries "
        "included); past it the avatar says fallback_line. 2.5 s gets the fallback heard within "
        "3 s of the turn; raise it for a slow model.",
    )
    stall_timeout_s: float = Field(
        2.5,
        gt=0.0,
        le=120.0,
        description="Longest wait between two pieces of a reply that has started; past it the "
        "reply ends there and the avatar says fallback_line. The OpenAI client's HTTP timeout "
        "is the larger of timeout_s and this.",
    )
    retries: int = Field(
        1,
        ge=0,
        le=5,
        description="Retries of a request that failed before any token came (unreachable, 5xx, "
        "429), only while timeout_s has not run out.",
    )
    fallback_line: str = Field(
        "Sorry, I can't answer that right now. Could you say it again?",
        min_length=1,
        description="What the avatar says when the LLM fails or stalls, so a caller never "
        "meets silence.",
    )


class TTSSettings(BaseModel):
    """Text to speech: Piper or espeak-ng embedded, or a hosted/self-hosted service."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    engine: Literal["auto", "piper", "espeak", "openai", "cartesia", "elevenlabs"] = Field(
        "auto",
        description="auto: the embedded Piper voice if it loads, else espeak-ng (logged with "
        "the reason). piper/espeak: that one or an error. openai: any OpenAI-compatible "
        "speech endpoint (base_url); cartesia, elevenlabs: their streaming services.",
    )
    voice: str | None = Field(
        None,
        description="espeak: voice name (en-us when unset; en-gb, en+f3, ...). openai: voice "
        "name (alloy when unset; a self-hosted server's own names work too). cartesia, "
        "elevenlabs: voice id (required). piper: unused (see piper_model).",
    )
    rate: int = Field(170, ge=80, le=450, description="espeak: speaking rate in words per minute.")
    pitch: int = Field(50, ge=0, le=99, description="espeak: base pitch, 0 to 99.")
    speed: float = Field(
        1.0,
        ge=0.25,
        le=4.0,
        description="piper, openai, cartesia, elevenlabs: speaking speed (1.0: the voice's "
        "own; each service clamps to its range).",
    )
    piper_model: Path | None = Field(
        None,
        description="piper: a voice .onnx (with its .onnx.json beside it); unset: the "
        "packaged en_US joe voice, checked against its pinned sha256.",
    )
    piper_threads: int = Field(
        0, ge=0, le=64, description="piper: onnxruntime threads per synthesis (0: the cores)."
    )
    base_url: str | None = Field(
        None,
        description="openai: the endpoint's base URL (unset: api.openai.com; e.g. "
        "http://localhost:8880/v1 for a self-hosted server). cartesia, elevenlabs: their "
        "websocket URL, when not the default.",
    )
    api_key: SecretStr = Field(SecretStr("none"), description="API key of the service.")
    model: str | None = Field(
        None,
        description="The service's model (unset: gpt-4o-mini-tts for openai, pipecat's "
        "default for cartesia and elevenlabs).",
    )
    timeout_s: float = Field(
        5.0,
        gt=0.0,
        le=120.0,
        description="Longest wait for the next audio: an embedded engine's next chunk, or "
        "openai's HTTP timeout (no retries: the reply goes on with the next sentence).",
    )


class VADSettings(BaseModel):
    """Voice activity and end-of-turn detection (Silero + smart-turn, bundled in pipecat)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    start_secs: float = Field(
        0.1,
        ge=0.0,
        le=2.0,
        description="Speech VAD needs before it reports a start (Silero counts it in 32 ms "
        "windows). Over the avatar a start only pauses it (min_interruption_secs decides an "
        "interruption), so an eager start costs little and halts the reply sooner; pipecat's "
        "0.2 adds ~90 ms to every barge-in. Raise it if room noise or echo pauses the avatar.",
    )
    stop_secs: float = Field(
        0.3, ge=0.0, le=3.0, description="Silence that ends a speech segment (and its STT pass)."
    )
    confidence: float = Field(0.7, ge=0.0, le=1.0, description="Silero speech confidence.")
    min_volume: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Loudness gate on top of Silero (0 = -110 LUFS, 1 = -10 LUFS). pipecat's "
        "0.6 integrates loudness over 400 ms, which delays speech starts by ~150 ms; a "
        "start over the avatar only pauses it, so the eager gate is cheap.",
    )
    smart_turn: bool = Field(
        True, description="Use the smart-turn model to decide the end of a turn."
    )
    speak_ahead: bool = Field(
        True,
        description="With smart-turn: start the reply (LLM and TTS) as soon as the "
        "transcript is in, while smart-turn decides whether the user has finished; the "
        "avatar holds it until then, and drops it if the user speaks on.",
    )
    early_verdict_secs: float = Field(
        0.15,
        ge=0.0,
        le=3.0,
        description="With smart-turn: quiet after which smart-turn first judges whether the "
        "user has finished, before VAD's stop (stop_secs). A 'finished' verdict then ends "
        "the turn the moment VAD stops; 'unfinished' is judged again at the stop. 0 judges "
        "only at VAD's stop.",
    )
    question_ends_turn: bool = Field(
        True,
        description="With smart-turn: a transcript ending in a question mark ends the turn "
        "even when smart-turn, which hears only the audio, judges it unfinished.",
    )
    min_interruption_secs: float = Field(
        0.5,
        ge=0.0,
        le=3.0,
        description="Speech needed over the avatar's voice to interrupt it; shorter sounds "
        "(a cough, an 'uh-huh') only pause it, and it resumes.",
    )
    turn_max_silence_secs: float = Field(
        1.5,
        ge=0.2,
        le=10.0,
        description="Silence that ends a turn even when smart-turn judges it unfinished "
        "(or, without smart-turn, the silence that ends every turn).",
    )

    @model_validator(mode="after")
    def _early_verdict_before_the_stop(self) -> VADSettings:
        if 0 < self.stop_secs <= self.early_verdict_secs:
            raise ValueError(
                f"vad.early_verdict_secs ({self.early_verdict_secs}) must be shorter than "
                f"vad.stop_secs ({self.stop_secs}), or 0 to judge only at VAD's stop"
            )
        return self


class LatencyBudgets(BaseModel):
    """Per-stage latency budgets of one turn, in milliseconds (defaults fit the embedded
    offline setup on a 2-core CPU). A turn over any budget is logged and reported to the
    page over RTVI."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not ignored

    vad_stop: float = Field(
        600, gt=0, description="User's speech really ended -> VAD/turn detection decided."
    )
    stt: float = Field(500, gt=0, description="User's speech ended -> final transcript.")
    llm_ttft: float = Field(400, gt=0, description="Turn decided -> first LLM token.")
    tts_ttfb: float = Field(150, gt=0, description="First LLM token -> first TTS audio.")
    render_first_frame: float = Field(
        80, gt=0, description="TTS audio into the renderer -> its first frame out."
    )
    transport: float = Field(100, gt=0, description="Out of the pipeline -> sent to the peer.")
    end_to_end: float = Field(
        900, gt=0, description="User stops speaking -> first reply audio/video sent."
    )
    interrupt_decision: float = Field(
        300,
        gt=0,
        description="Barge-in: the user starts talking over the avatar -> its audio is halted "
        "(VAD's start delay; checked by visage profile).",
    )
    interrupt_audio_stop: float = Field(
        350,
        gt=0,
        description="Barge-in onset -> the reply's audio stops at the client (visage profile).",
    )
    interrupt_mouth_close: float = Field(
        400, gt=0, description="Barge-in onset -> the mouth is closed at the client."
    )
    av_offset: float = Field(
        40, gt=0, description="|audio - video| offset at the client, p95 (visage profile)."
    )
