"""pocketsphinx decoding in a worker process, fed while the user speaks.

pocketsphinx holds the GIL while it decodes: a 0.7 s decode in a thread stalled the event
loop for 0.6 s, long enough for the browser to conceal outgoing WebRTC audio and grow its
jitter buffer. So each decoder lives in a child process (``python -m
speech.sphinx``). Audio is streamed to it during the utterance, so when the user
stops only the last search pass remains: 30-100 ms instead of 300-700 ms for decoding the
whole segment at the end (measured on espeak-ng questions, same words recognised).

Messages are length-prefixed over the child's stdin/stdout: ``S`` starts an utterance,
``A<pcm>`` adds 16 kHz int16 audio, ``E`` ends it and is answered with the words.
"""

from __future__ import annotations

import asyncio
import json
import struct
import subprocess
import sys
import threading
from typing import IO, Any

import numpy as np

SAMPLE_RATE = 16_000
_LENGTH = struct.Struct("<I")


def _read_message(stream: IO[bytes]) -> bytes:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("pocketsphinx worker stream closed")
    (size,) = _LENGTH.unpack(header)
    return stream.read(size)


def _write_message(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LENGTH.pack(len(payload)) + payload)
    stream.flush()


class SphinxWorker:
    """A child process owning one pocketsphinx decoder, for one speaker at a time.

    The process starts on :meth:`warm` or first use, not on construction, so a call that
    is set up but never connects costs no process.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._options = options
        self._started: subprocess.Popen[bytes] | None = None
        self._ready = False  # the child says "ready" once its model is loaded

    def warm(self) -> None:
        """Start the decoder process now, so its model loads before the first utterance."""
        with self._lock:
            _ = self._process

    @property
    def _process(self) -> subprocess.Popen[bytes]:
        if self._started is None:
            self._started = subprocess.Popen(
                [sys.executable, "-m", "speech.sphinx", json.dumps(self._options)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        return self._started

    def _send(self, payload: bytes) -> None:
        process = self._process
        assert process.stdin is not None
        if process.poll() is not None:
            raise RuntimeError(f"pocketsphinx worker exited with code {process.returncode}")
        _write_message(process.stdin, payload)

    def start(self, pcm: bytes = b"") -> None:
        """Begin an utterance, optionally with audio that came before it was detected."""
        with self._lock:
            self._send(b"S")
            if pcm:
                self._send(b"A" + pcm)

    def feed(self, pcm: bytes) -> None:
        """Add 16 kHz int16 audio to the utterance; the child decodes it meanwhile."""
        if not pcm:
            return
        with self._lock:
            self._send(b"A" + pcm)

    def finish(self) -> str:
        """End the utterance and return its words (blocking, a few tens of ms)."""
        assert self._process.stdout is not None
        with self._lock:
            self._send(b"E")
            if not self._ready:
                _read_message(self._process.stdout)
                self._ready = True
            return _read_message(self._process.stdout).decode()

    async def finish_async(self) -> str:
        """``finish`` without blocking the event loop (pipe reads release the GIL)."""
        return await asyncio.to_thread(self.finish)

    def transcribe(self, pcm: np.ndarray) -> str:
        """Decode a whole 16 kHz int16 utterance (blocking)."""
        self.start(pcm.astype(np.int16).tobytes())
        return self.finish()

    def close(self) -> None:
        """Stop the worker process, if it started. Idempotent."""
        process = self._started
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def _serve(options: dict[str, Any]) -> None:
    """The child's loop: load the decoder, then follow S/A/E messages."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=SAMPLE_RATE, **options)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    _write_message(stdout, b"ready")
    in_utterance = False
    while True:
        try:
            message = _read_message(stdin)
        except EOFError:
            return
        kind, payload = message[:1], message[1:]
        if kind == b"S":
            if in_utterance:
                decoder.end_utt()
            decoder.start_utt()
            in_utterance = True
        elif kind == b"A" and in_utterance and len(payload) >= 2:
            decoder.process_raw(payload, False, False)
        elif kind == b"E":
            words = ""
            if in_utterance:
                decoder.end_utt()
                hyp = decoder.hyp()
                words = hyp.hypstr.strip() if hyp is not None else ""
            in_utterance = False
            _write_message(stdout, words.encode())


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
