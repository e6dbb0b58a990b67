"""Moonshine tiny-en speech recognition: the model files, one loaded model per process, and
a recognizer that transcribes each utterance while the user speaks it.

The runtime is ``moonshine-voice==0.1.5`` (MIT; it bundles its own renamed onnxruntime, so
it does not clash with ours). The tiny-en model files (MIT) ship only inside the
``moonshine-voice==0.0.4`` wheel, which is used as a carrier and never installed (both
versions import as ``moonshine_voice``): ``visage models fetch-speech`` (run by ``make
install``) takes them out and checks their pinned sha256 (see :mod:`agent.models`).
Nothing is downloaded at run time; the runtime's own downloader is never called.

The library's calls release the GIL (ctypes) and are thread-safe, but a transcript's
memory belongs to the transcriber only until its next call, so every call into one model
holds that model's lock. A :class:`MoonshineStream` transcribes on its own thread: the
event loop only queues audio.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.models import Carrier, ModelFile, ModelFileError, ModelSet

SAMPLE_RATE = 16_000
#: The runtime that must be installed (pyproject pins it).
RUNTIME = "moonshine-voice==0.1.5"
#: The wheel that carries the tiny-en files (downloaded, unzipped, never installed).
CARRIER_WHEEL = "moonshine-voice==0.0.4"
FETCH_COMMAND = "visage models fetch-speech"
MODEL_NAME = "moonshine-tiny-en"

_ASSETS = "moonshine_voice/assets/tiny-en/"
ENCODER = ModelFile(
    name="encoder_model.ort",
    member=_ASSETS + "encoder_model.ort",
    sha256="e091ae52fc2a912197af8f7b7ae2e8365b656ff58463313e0660cce59d9e81d3",
    size=13_238_168,
)
DECODER = ModelFile(
    name="decoder_model_merged.ort",
    member=_ASSETS + "decoder_model_merged.ort",
    sha256="b40193912d8f4af041f2f3e9f7ff23d45b63a1c15a9c7d35fcbebeab3c4273b2",
    size=58_327_168,
)
TOKENIZER = ModelFile(
    name="tokenizer.bin",
    member=_ASSETS + "tokenizer.bin",
    sha256="6884b35fd6377d4c4d32336a0bc152f36b64d1e45b6503683cdc238250a8472d",
    size=249_974,
)
TINY_EN = ModelSet(
    label="Moonshine tiny-en",
    noun="Moonshine model file",
    files=(ENCODER, DECODER, TOKENIZER),
    carrier=Carrier(CARRIER_WHEEL, platform="manylinux_2_35_x86_64", download_mb=67),
    fetch_command=FETCH_COMMAND,
    subdir=MODEL_NAME,
)

# A live utterance is transcribed once this much quiet follows speech: VAD's stop comes
# 0.3 s after speech ends, so its words are usually known by then.
QUIET_S = 0.12
# A 20 ms block is quiet below both of these RMS levels (int16): an absolute floor (about
# -60 dBFS) and a fraction of the utterance's loudest block.
_BLOCK = SAMPLE_RATE // 50
_QUIET_FLOOR_RMS = 30.0
_QUIET_RATIO = 0.03
# Silence after every utterance given to the runtime (see MoonshineModel.transcribe).
_SETTLE = np.zeros(SAMPLE_RATE // 2, np.int16)


class MoonshineUnavailable(RuntimeError):
    """The Moonshine runtime or its model cannot be used; the message says why and how."""


def fetch_tiny_en(
    folder: Path | None = None,
    *,
    wheel: Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Take the tiny-en files out of the carrier wheel into ``folder`` (default
    ``models_dir()/moonshine-tiny-en``), checked against their pinned sha256; a no-op when
    they are there and intact."""
    return TINY_EN.fetch(folder, wheel=wheel, force=force, log=log)


def _text(transcript: Any) -> str:
    """The words of every line of a runtime transcript, in order."""
    lines = getattr(transcript, "lines", None) or []
    return " ".join(t for t in (line.text.strip() for line in lines) if t)


class MoonshineModel:
    """One loaded tiny-en transcriber, shared by every call in the process."""

    def __init__(self, folder: Path | None = None) -> None:
        """Verify the files in ``folder`` and load them (about 0.5 s); raises
        :class:`MoonshineUnavailable` with the reason and the fix."""
        try:
            self.folder = TINY_EN.verified_folder(folder)
        except ModelFileError as e:
            raise MoonshineUnavailable(str(e)) from e
        try:
            from moonshine_voice import ModelArch
            from moonshine_voice.transcriber import Transcriber
        except ImportError as e:
            raise MoonshineUnavailable(
                f"the Moonshine runtime is not installed ({e}); pip install {RUNTIME}"
            ) from e
        try:
            # Lines without their audio: copying it into Python lists holds the GIL.
            options = {"return_audio_data": "false"}
            self._transcriber = Transcriber(str(self.folder), ModelArch.TINY, options=options)
        except Exception as e:
            raise MoonshineUnavailable(
                f"Moonshine could not load {self.folder}: {type(e).__name__}: {e}"
            ) from e
        self.lock = threading.Lock()

    def transcribe(self, pcm: np.ndarray) -> str:
        """The words of a whole utterance of 16 kHz mono int16 samples (blocking)."""
        if pcm.size == 0:
            return ""
        # The runtime's VAD keeps its state from one call to the next (in any stream of the
        # process): after audio that ends mid-speech, the next call starts "in speech" and
        # hears "You" in its leading silence, and results drift with what came before.
        # Ending every call with silence leaves that state the same each time.
        samples = np.concatenate([pcm.astype(np.float32), _SETTLE]) / np.float32(32768.0)
        with self.lock:
            return _text(self._transcribe(samples))

    def _transcribe(self, samples: np.ndarray) -> Any:
        """The runtime's transcript of float32 samples (hold :attr:`lock`).

        The wrapper's ``transcribe_without_streaming`` copies the audio through a Python
        list into a ctypes array, holding the GIL for ~50 ms per 6 s of audio (the event
        loop waits meanwhile); this hands the runtime numpy's buffer instead, so the GIL
        is free for the whole pass. Other wrapper versions take the public path.
        """
        transcriber = self._transcriber
        lib = getattr(transcriber, "_lib", None)
        parse = getattr(transcriber, "_parse_transcript", None)
        if lib is None or parse is None or not hasattr(transcriber, "_handle"):
            return transcriber.transcribe_without_streaming(samples.tolist(), SAMPLE_RATE)
        from moonshine_voice.errors import check_error
        from moonshine_voice.moonshine_api import TranscriptC

        samples = np.ascontiguousarray(samples, np.float32)
        out = ctypes.POINTER(TranscriptC)()
        error = lib.moonshine_transcribe_without_streaming(
            transcriber._handle,
            samples.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
            samples.size,
            SAMPLE_RATE,
            0,
            ctypes.byref(out),
        )
        check_error(error)
        return parse(out)

    def transcribe_streamed(self, pcm: np.ndarray, piece_s: float = 0.02) -> str:
        """The words of an utterance fed in ``piece_s`` pieces as a live call feeds them
        (the same passes, so the same words as :class:`MoonshineStream`), as fast as it
        runs."""
        piece = max(1, int(piece_s * SAMPLE_RATE))
        utterance = Utterance(self)
        for i in range(0, len(pcm), piece):
            utterance.add(np.asarray(pcm[i : i + piece], np.int16).tobytes())
        return utterance.finish()


_MODELS: dict[Path, MoonshineModel] = {}
_MODELS_LOCK = threading.Lock()


def load_model(folder: Path | None = None) -> MoonshineModel:
    """The process's model for ``folder`` (default: the fetched tiny-en), loaded once.

    The files are verified on every call (their sha256 is remembered while they are
    unchanged), so a file altered after loading is still refused."""
    folder = TINY_EN.default_folder() if folder is None else folder
    try:
        TINY_EN.verified_folder(folder)
    except ModelFileError as e:
        raise MoonshineUnavailable(str(e)) from e
    key = folder.resolve()
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = MoonshineModel(folder)
        return _MODELS[key]


class Utterance:
    """One utterance, transcribed as it grows, and when to do it.

    tiny-en is not a streaming model: a pass transcribes the whole utterance so far (about
    40 ms plus 25 ms per second of audio on 2 idle cores). A pass runs as soon as
    ``quiet_s`` of quiet follows speech. VAD's stop comes ``vad.stop_secs`` (0.3 s) after
    speech ends, so by then that pass has usually finished, and :meth:`finish` returns its
    words when no speech came after it; otherwise it runs a last pass. Blocking.
    """

    def __init__(self, model: MoonshineModel, quiet_s: float = QUIET_S) -> None:
        self._model = model
        self._quiet = int(quiet_s * SAMPLE_RATE)
        self._audio = bytearray()  # 16 kHz int16
        self._covered = 0  # samples the last pass heard
        self._last_loud = 0  # sample index where the last loud block ended
        self._loudest = 0.0  # RMS of the loudest block so far
        self._passes = 0
        self._text = ""

    @property
    def _fed(self) -> int:
        return len(self._audio) // 2

    def add(self, pcm: bytes) -> None:
        """Add 16 kHz int16 audio; transcribe if speech just went quiet."""
        samples = np.frombuffer(pcm, np.int16)
        if samples.size == 0:
            return
        start_at = self._fed
        self._audio += pcm
        for start in range(0, samples.size, _BLOCK):
            block = samples[start : start + _BLOCK].astype(np.float32)
            rms = float(np.sqrt(np.mean(block * block)))
            self._loudest = max(self._loudest, rms)
            if rms >= max(_QUIET_FLOOR_RMS, _QUIET_RATIO * self._loudest):
                self._last_loud = start_at + start + block.size
        if self._last_loud > self._covered and self._fed - self._last_loud >= self._quiet:
            self._pass()

    def finish(self) -> str:
        """The utterance's words: those of the last pass when it heard all the speech."""
        if self._passes == 0 or self._last_loud > self._covered:
            self._pass()
        return self._text

    def _pass(self) -> None:
        self._text = self._model.transcribe(np.frombuffer(bytes(self._audio), np.int16))
        self._covered = self._fed
        self._passes += 1


@dataclass
class _Command:
    kind: str  # "start", "audio", "finish", "close"
    pcm: bytes = b""
    done: Future[str] | None = None


class MoonshineStream:
    """One speaker's utterances, transcribed on a worker thread while they are spoken.

    :meth:`start` begins an utterance (with audio from just before it was detected),
    :meth:`feed` adds audio, :meth:`finish` ends it and returns a future of its words.
    The event loop only queues; the worker runs an :class:`Utterance` per utterance, and
    adds whatever audio queued up while a pass ran in one go.
    """

    def __init__(self, model: MoonshineModel, quiet_s: float = QUIET_S) -> None:
        """Start the worker thread."""
        self._model = model
        self._quiet_s = quiet_s
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="moonshine-stream", daemon=True)
        self._thread.start()

    def start(self, pcm: bytes = b"") -> None:
        """Begin an utterance, with ``pcm`` (16 kHz int16) heard just before it."""
        self._commands.put(_Command("start", pcm))

    def feed(self, pcm: bytes) -> None:
        """Add 16 kHz int16 audio to the utterance; the worker transcribes meanwhile."""
        if pcm:
            self._commands.put(_Command("audio", pcm))

    def finish(self) -> Future[str]:
        """End the utterance; the future gets its words (or the runtime's error)."""
        done: Future[str] = Future()
        self._commands.put(_Command("finish", done=done))
        return done

    def close(self) -> None:
        """Stop the worker. Idempotent; a worker busy in a pass exits when it returns."""
        if not self._closed:
            self._closed = True
            self._commands.put(_Command("close"))

    def _run(self) -> None:
        pending: list[_Command] = []
        utterance: Utterance | None = None
        failure: Exception | None = None  # of this utterance, told at its finish
        while True:
            command = pending.pop(0) if pending else self._commands.get()
            if command.kind == "close":
                return
            try:
                if command.kind == "start":
                    failure = None
                    utterance = Utterance(self._model, self._quiet_s)
                    utterance.add(command.pcm)
                elif command.kind == "audio" and utterance is not None:
                    audio = [command.pcm]
                    while True:  # everything that queued up meanwhile, in one call
                        try:
                            more = self._commands.get_nowait()
                        except queue.Empty:
                            break
                        if more.kind != "audio":
                            pending.append(more)
                            break
                        audio.append(more.pcm)
                    utterance.add(b"".join(audio))
                elif command.kind == "finish":
                    assert command.done is not None
                    # False when the waiter gave up (a timeout): the utterance still ends.
                    wanted = command.done.set_running_or_notify_cancel()
                    text = ""
                    if utterance is not None and failure is None:
                        text = utterance.finish()
                    utterance = None
                    if wanted and failure is not None:
                        command.done.set_exception(failure)
                    elif wanted:
                        command.done.set_result(text)
                    failure = None
            except Exception as e:  # the runtime's error goes to whoever waits for words
                if command.done is not None:
                    if command.done.running():
                        command.done.set_exception(e)
                    failure = None
                else:
                    failure = failure or e
