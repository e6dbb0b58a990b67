"""What every speech engine streams: timed chunks from a synthesis thread, read as they come.

An engine (``speech/espeak.py``, ``speech/piper.py``) subclasses :class:`Synthesis` with
its ``produce()``, which runs on its own thread and hands chunks over with ``put()``;
the reader gets a :class:`SpeechStream` and polls or iterates it. ``abort()``, from any
thread, ends the stream at once and tells the engine to stop (``on_abort``).
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from speech.phonemes import PhonemeMark

__all__ = ["SpeechChunk", "SpeechEngine", "SpeechStream", "Synthesis"]

DEFAULT_SAMPLE_RATE = 22050  # espeak-ng's and Piper's medium voices'


@dataclass(slots=True)
class SpeechChunk:
    """int16 mono PCM with the phonemes and words that start in it (offsets in seconds)."""

    audio: bytes
    phonemes: list[PhonemeMark] = field(default_factory=list)
    words: list[tuple[str, float]] = field(default_factory=list)
    sample_rate: int = DEFAULT_SAMPLE_RATE

    @property
    def duration_s(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / 2 / self.sample_rate

    @classmethod
    def join(cls, chunks: list[SpeechChunk]) -> SpeechChunk:
        """One chunk of consecutive chunks' audio, their marks timed from its start."""
        if len(chunks) == 1:
            return chunks[0]
        phonemes: list[PhonemeMark] = []
        words: list[tuple[str, float]] = []
        start = 0.0
        for chunk in chunks:
            phonemes += [PhonemeMark(m.ipa, m.offset_s + start) for m in chunk.phonemes]
            words += [(word, offset + start) for word, offset in chunk.words]
            start += chunk.duration_s
        return cls(b"".join(c.audio for c in chunks), phonemes, words, chunks[0].sample_rate)


class Synthesis:
    """One utterance's synthesis thread and the chunks it hands over; knows nothing of
    its reader. Subclasses implement ``produce()`` (and ``on_abort()`` to stop mid-work)."""

    def __init__(
        self,
        *,
        thread_name: str,
        should_abort: Callable[[], bool] | None,
        max_buffered: int | None,
        on_ready: Callable[[], object] | None,
    ) -> None:
        self.should_abort = should_abort
        self.max_buffered = max_buffered
        self.on_ready = on_ready
        self.cond = threading.Condition()
        self.chunks: deque[SpeechChunk] = deque()
        self.aborted = False
        self.done = False
        self.error: BaseException | None = None
        self.samples = 0
        self.thread = threading.Thread(target=self.run, name=thread_name, daemon=True)

    def produce(self) -> None:
        """Synthesise, calling ``put()`` for each chunk; runs on the synthesis thread."""
        raise NotImplementedError

    def on_abort(self) -> None:
        """Called (from any thread) when the stream is aborted; stops work in progress."""

    def stop_requested(self) -> bool:
        return self.aborted or (self.should_abort is not None and self.should_abort())

    def abort(self) -> None:
        with self.cond:
            self.aborted = True
            self.chunks.clear()
            self.cond.notify_all()
        self.on_abort()
        self.notify()

    def notify(self) -> None:
        if self.on_ready is not None:
            try:
                self.on_ready()
            except Exception:  # e.g. the reader's event loop is already closed
                self.on_ready = None

    def put(self, chunk: SpeechChunk) -> bool:
        """Hand a chunk to the reader (waiting while ``max_buffered`` are unread); False
        once the stream is aborted, when the producer should stop."""
        with self.cond:
            while (
                self.max_buffered is not None
                and len(self.chunks) >= self.max_buffered
                and not self.stop_requested()
            ):
                # Timed so that a should_abort() flip is seen even with nobody reading.
                self.cond.wait(0.01)
            if self.stop_requested():
                self.aborted = True
                self.chunks.clear()
                return False
            self.chunks.append(chunk)
            self.samples += len(chunk.audio) // 2
            self.cond.notify_all()
        self.notify()
        return True

    def run(self) -> None:
        try:
            self.produce()
        except BaseException as e:
            self.error = e
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()
            self.notify()


class SpeechStream(Iterator[SpeechChunk]):
    """One utterance being synthesised on a background thread, read chunk by chunk.

    Synthesis runs ahead of the reader (by at most ``max_buffered`` chunks when set).
    ``abort()``, from any thread, stops it and ends the iteration.
    """

    def __init__(self, synthesis: Synthesis) -> None:
        self._s = synthesis
        # A reader that walks away must not leave the thread blocked on a full buffer.
        weakref.finalize(self, synthesis.abort)
        synthesis.thread.start()

    @property
    def aborted(self) -> bool:
        """Whether the stream was aborted (by ``abort()`` or ``should_abort``)."""
        return self._s.aborted

    @property
    def done(self) -> bool:
        """Whether synthesis has ended (finished, aborted or failed)."""
        return self._s.done

    @property
    def exhausted(self) -> bool:
        """Whether no further chunk will come out of this stream."""
        s = self._s
        with s.cond:
            return s.aborted or (s.done and not s.chunks and s.error is None)

    @property
    def samples_synthesized(self) -> int:
        """Samples synthesised so far, read or not."""
        return self._s.samples

    def abort(self) -> None:
        """Stop synthesis as soon as the engine can and drop chunks not yet read."""
        self._s.abort()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the synthesis thread to end; True if it has."""
        thread = self._s.thread
        if thread is not threading.current_thread():
            thread.join(timeout)
        return not thread.is_alive()

    def close(self, timeout: float | None = None) -> bool:
        """Abort and wait for the synthesis thread to end; True if it has."""
        self.abort()
        return self.join(timeout)

    def poll(self) -> SpeechChunk | None:
        """The next chunk if one is ready, else None (see ``exhausted``); never blocks."""
        return self.get(timeout=0)

    def get(self, timeout: float | None = None) -> SpeechChunk | None:
        """The next chunk, or None at the end of the stream or after ``timeout`` seconds."""
        s = self._s
        if s.should_abort is not None and s.should_abort():
            s.abort()
        with s.cond:
            if timeout != 0:
                s.cond.wait_for(lambda: s.chunks or s.done or s.aborted, timeout)
            if s.aborted:
                return None
            if s.chunks:
                return s.chunks.popleft()
            if s.error is not None:
                error, s.error = s.error, None
                raise error
            return None

    def __next__(self) -> SpeechChunk:
        """The next chunk, blocking until it is synthesised."""
        chunk = self.get()
        if chunk is None:
            self.join()
            raise StopIteration
        return chunk

    def __enter__(self) -> SpeechStream:
        """Use as a context manager that aborts and joins on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Abort and join the synthesis thread."""
        self.close()


class SpeechEngine(Protocol):
    """What the TTS stage, ``visage say`` and ``visage bench tts`` need of an engine."""

    #: Shown in logs and errors, e.g. "espeak-ng" or "Piper".
    label: str

    @property
    def sample_rate(self) -> int:
        """Output sample rate in Hz."""
        ...
