"""``visage say`` (what the configured TTS says, into a WAV file) and ``visage bench tts``
(time to first audio and real-time factor of the embedded engines)."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

SettingsLoader = Callable[..., Any]

ENGINES = ("auto", "piper", "espeak", "openai", "cartesia", "elevenlabs")
BENCH_ENGINES = ("piper", "espeak")
#: The fixed replies ``visage bench tts`` speaks: the demo persona's answers, from one
#: short sentence to three long ones (the first sentence of each counts for first audio).
BENCH_REPLIES = (
    "Hi, I'm Ava, the Visage demo host. Ask me what I can do, or how this works.",
    "I'm doing great, thanks for asking! What would you like to know about Visage?",
    "I'm Ava, a talking avatar made by Visage. I'm here to show you how a real-time video "
    "agent feels.",
    "I can listen to you, answer out loud, and move my face while I talk. Try asking how I "
    "work, or ask me for a joke.",
    "Your voice is turned into text, a language model writes a reply, and a speech engine "
    "reads it out. Then my face is animated to match the sound and streamed back to you as "
    "video.",
    "Visage is an open-source, real-time talking-avatar video agent. You can run it yourself "
    "and plug in any language model.",
    "I aim to start answering well under a second after you stop talking. The exact time "
    "depends on your machine and the language model you connect.",
    "Yes, everything you see here can run on your own machine, with no internet needed. Only "
    "a language model you choose to connect might live elsewhere.",
)


def _fail(message: str) -> int:
    print(f"visage: {message}", file=sys.stderr)
    return 2


# --- visage say ---------------------------------------------------------------------


@dataclass
class Spoken:
    """What a TTS service said: int16 mono PCM at ``sample_rate`` and when it came."""

    audio: bytearray = field(default_factory=bytearray)
    # The audio as it came, frame by frame, with the phonemes each frame carried.
    pieces: list[tuple[bytes, list[Any]]] = field(default_factory=list)
    sample_rate: int = 0
    first_audio_s: float | None = None
    total_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        """Seconds of speech."""
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0


async def speak_through_service(service: Any, text: str, *, timeout_s: float = 120.0) -> Spoken:
    """Run ``service`` (any pipecat TTS service) in a small pipeline on ``text`` and
    collect its audio, as the call's pipeline would get it."""
    from pipecat.frames.frames import (
        EndFrame,
        ErrorFrame,
        Frame,
        TTSAudioRawFrame,
        TTSSpeakFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    spoken = Spoken()
    done = asyncio.Event()
    started = 0.0

    class Collect(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TTSAudioRawFrame):
                if spoken.first_audio_s is None:
                    spoken.first_audio_s = time.perf_counter() - started
                spoken.sample_rate = spoken.sample_rate or frame.sample_rate
                if frame.sample_rate != spoken.sample_rate:  # no service mixes rates
                    raise RuntimeError("the service changed its sample rate mid-reply")
                spoken.audio += frame.audio
                spoken.pieces.append((frame.audio, list(getattr(frame, "phonemes", []))))
            elif isinstance(frame, ErrorFrame):
                spoken.errors.append(frame.error)
            elif isinstance(frame, TTSStoppedFrame):
                done.set()
            await self.push_frame(frame, direction)

    worker = PipelineWorker(
        Pipeline([service, Collect()]),
        params=PipelineParams(audio_out_sample_rate=24_000),
        idle_timeout_secs=None,
        cancel_on_idle_timeout=False,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    run = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.05)  # let the pipeline start
        started = time.perf_counter()
        await worker.queue_frame(TTSSpeakFrame(text))
        await asyncio.wait_for(done.wait(), timeout_s)
        spoken.total_s = time.perf_counter() - started
        await worker.queue_frame(EndFrame())
        await asyncio.wait_for(run, 10.0)
    finally:
        if not run.done():
            await worker.cancel()
            await asyncio.wait_for(run, 10.0)
    return spoken


def speech_for_clip(text: str, tts: Any) -> tuple[Any, str]:
    """``text`` said by the configured TTS (``tts``, the settings' section) as a call says
    it, as ``visage render`` takes it, and which engine said it; ``ClipError`` when it
    cannot."""
    from pipelines.stages.tts import TTSEngineError, create_tts_service
    from renderer.clip import ClipError, Speech

    if not text.strip():
        raise ClipError("--text is empty; give the words the avatar should say")
    try:
        service, why = create_tts_service(tts, paced=False)
    except TTSEngineError as exc:
        raise ClipError(str(exc)) from exc
    spoken = asyncio.run(speak_through_service(service, text))
    if spoken.errors or not spoken.audio:
        reason = "; ".join(spoken.errors) or "it made no audio"
        raise ClipError(f"the TTS could not say --text {text!r}: {reason}")
    return Speech(spoken.pieces, spoken.sample_rate), why


def write_wav(path: Path, pcm: bytes, sample_rate: int) -> None:
    """16-bit mono WAV, written whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(pcm)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def cmd_say(args: argparse.Namespace, *, settings: SettingsLoader) -> int:
    """Speak TEXT with the configured TTS (or --engine) into a WAV file."""
    from loguru import logger

    from pipelines.stages.tts import TTSEngineError, create_tts_service

    if not args.text.strip():
        return _fail("the text is empty; give the words to say")
    if args.out.suffix.lower() != ".wav":
        return _fail(f"--out must be a .wav file, got {args.out}")
    if not args.out.parent.is_dir():
        return _fail(f"cannot write {args.out}: folder {args.out.parent} does not exist")
    loaded = settings(args)
    tts = loaded.tts.model_copy(update={"engine": args.engine}) if args.engine else loaded.tts
    if not args.verbose:
        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    load_started = time.perf_counter()
    try:
        service, why = create_tts_service(tts, paced=False)
    except TTSEngineError as exc:
        return _fail(str(exc))
    load_s = time.perf_counter() - load_started
    spoken = asyncio.run(speak_through_service(service, args.text))
    if spoken.errors or not spoken.audio:
        reason = "; ".join(spoken.errors) or "it made no audio"
        return _fail(f"{args.out} was not written: {reason}")
    write_wav(args.out, bytes(spoken.audio), spoken.sample_rate)
    rtf = spoken.total_s / spoken.duration_s
    print(
        f"wrote {args.out}: {spoken.duration_s:.2f} s at {spoken.sample_rate} Hz by {why}; "
        f"first audio after {1000 * (spoken.first_audio_s or 0):.0f} ms, all in "
        f"{spoken.total_s:.2f} s (real-time factor {rtf:.3f}; loading took {load_s:.2f} s)"
    )
    return 0


# --- visage bench tts ---------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_engine(name: str, tts: Any, *, rounds: int) -> dict[str, Any]:
    """Time to first audio and real-time factor of one embedded engine over
    ``BENCH_REPLIES`` (each reply streamed as a call streams it; one warm-up first)."""
    loaded = time.perf_counter()
    if name == "piper":
        from speech.piper import PiperEngine

        piper = PiperEngine(tts.piper_model, threads=tts.piper_threads)
        label = piper.describe()

        def stream(text: str) -> Any:
            return piper.stream(text, speed=tts.speed, split_first=True)
    else:
        from speech.espeak import EspeakEngine

        espeak = EspeakEngine()
        voice = tts.voice or "en-us"
        label = f"espeak-ng voice {voice}"

        def stream(text: str) -> Any:
            return espeak.stream(text, voice=voice, rate=tts.rate, pitch=tts.pitch)

    load_s = time.perf_counter() - loaded
    for _ in stream(BENCH_REPLIES[0]):  # warm-up: first-run allocations, caches
        pass
    first, rtf, audio_s, synth_s = [], [], 0.0, 0.0
    for _ in range(rounds):
        for text in BENCH_REPLIES:
            started = time.perf_counter()
            got: float | None = None
            seconds = 0.0
            for chunk in stream(text):
                if got is None:
                    got = time.perf_counter() - started
                seconds += chunk.duration_s
            took = time.perf_counter() - started
            first.append(1000 * (got or 0.0))
            rtf.append(took / seconds)
            audio_s, synth_s = audio_s + seconds, synth_s + took
    return {
        "engine": name,
        "voice": label,
        "replies": len(BENCH_REPLIES) * rounds,
        "audio_s": round(audio_s, 2),
        "load_s": round(load_s, 3),
        "first_audio_ms_p50": round(statistics.median(first), 1),
        "first_audio_ms_p95": round(_percentile(first, 0.95), 1),
        "first_audio_ms_max": round(max(first), 1),
        "rtf_mean": round(synth_s / audio_s, 4),
        "rtf_p95": round(_percentile(rtf, 0.95), 4),
    }


def format_bench(rows: list[dict[str, Any]]) -> str:
    """The table ``visage bench tts`` prints."""
    lines = [
        f"{'engine':<8} {'first audio p50':>16} {'p95':>8} {'max':>8} {'RTF mean':>9} "
        f"{'RTF p95':>8} {'load':>7}",
    ]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append(
            f"{r['engine']:<8} {r['first_audio_ms_p50']:>13.0f} ms {r['first_audio_ms_p95']:>5.0f} "
            f"ms {r['first_audio_ms_max']:>5.0f} ms {r['rtf_mean']:>9.3f} {r['rtf_p95']:>8.3f} "
            f"{r['load_s']:>6.2f}s"
        )
    total = rows[0]["replies"] if rows else 0
    lines.append(f"{total} replies per engine ({rows[0]['audio_s'] if rows else 0} s of speech)")
    return "\n".join(lines)


def cmd_bench_tts(args: argparse.Namespace, *, settings: SettingsLoader) -> int:
    """Time to first audio and real-time factor per embedded engine."""
    from speech.piper import PiperLoadError

    if args.rounds < 1:
        return _fail("--rounds must be at least 1")
    tts = settings(args).tts
    if args.threads is not None:
        tts = tts.model_copy(update={"piper_threads": args.threads})
    rows = []
    for name in args.engines:
        try:
            rows.append(bench_engine(name, tts, rounds=args.rounds))
        except (PiperLoadError, ValueError) as exc:
            return _fail(f"{name} cannot run: {exc}")
        print(f"{name}: {rows[-1]['voice']}", flush=True)
    print(format_bench(rows))
    if args.json:
        report = {"replies": list(BENCH_REPLIES), "rounds": args.rounds, "engines": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_tts_parsers(
    sub: Any,
    bench_sub: Any,
    add_config_flags: Callable[[argparse.ArgumentParser], None],
    settings: SettingsLoader,
) -> None:
    """Register ``visage say`` and ``visage bench tts``."""
    say = sub.add_parser(
        "say",
        help="speak a text with the configured TTS into a WAV file",
        description="Runs the TTS stage a call runs (unpaced), so the file is what a caller "
        "would hear, at the engine's own sample rate.",
    )
    say.add_argument("text", help="the words to say")
    say.add_argument("--out", type=Path, required=True, help="WAV file to write")
    say.add_argument("--engine", choices=ENGINES, help="instead of tts.engine")
    say.add_argument("--verbose", action="store_true", help="show the engine's log")
    add_config_flags(say)
    say.set_defaults(func=partial(cmd_say, settings=settings))

    bench = bench_sub.add_parser(
        "tts",
        help="time to first audio and real-time factor of the embedded TTS engines",
        description=f"Speaks {len(BENCH_REPLIES)} fixed replies (the demo persona's answers) "
        "with each engine as a call streams them, after one warm-up reply.",
    )
    bench.add_argument("--engines", nargs="+", choices=BENCH_ENGINES, default=list(BENCH_ENGINES))
    bench.add_argument("--rounds", type=int, default=3, help="times through the replies (3)")
    bench.add_argument(
        "--threads", type=int, help="Piper's onnxruntime threads (tts.piper_threads)"
    )
    bench.add_argument("--json", type=Path, help="also write the figures here")
    add_config_flags(bench)
    bench.set_defaults(func=partial(cmd_bench_tts, settings=settings))
