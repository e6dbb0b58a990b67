"""How the LLM's streaming text is cut for the embedded voice: by sentence, as pipecat
does, except that a reply's first sentence gives up its first few words as soon as they
are known (see :func:`speech.piper.first_piece`), so synthesis starts while the LLM is
still writing the rest of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable

from pipecat.utils.text.base_text_aggregator import Aggregation, TextType
from pipecat.utils.text.simple_text_aggregator import SimpleTextAggregator

from pipelines import compat

#: (the start of a reply's first sentence) -> (a piece to speak now, the rest) or None.
FirstPiece = Callable[[str], "tuple[str, str] | None"]


class FirstPieceAggregator(SimpleTextAggregator):
    """pipecat's sentence aggregator that emits a reply's first words early.

    The pieces it cut early are remembered (:meth:`take_cut`), so the TTS service speaks
    each as the start of a sentence that runs on, not as a sentence of its own.
    """

    def __init__(self, first_piece: FirstPiece, **kwargs) -> None:
        super().__init__(**kwargs)
        self._first_piece = first_piece
        self._emitted = False  # something of this reply went out: no more early cuts
        self._cuts: deque[str] = deque()

    async def aggregate(self, text: str) -> AsyncIterator[Aggregation]:
        """Sentences as pipecat finds them; before the reply's first, its first piece."""
        async for sentence in super().aggregate(text):
            self._emitted = True
            yield sentence
        if self._emitted:
            return
        cut = self._first_piece(compat.aggregator_text(self))
        if cut is not None:
            piece, rest = cut
            compat.set_aggregator_text(self, rest)
            self._emitted = True
            self._cuts.append(piece)
            yield Aggregation(text=piece, type=TextType.SENTENCE)

    def take_cut(self, text: str) -> bool:
        """Whether ``text`` (about to be spoken) is a piece this aggregator cut early."""
        if self._cuts and self._cuts[0] == text.strip():
            self._cuts.popleft()
            return True
        return False

    async def flush(self) -> Aggregation | None:
        """The reply's remaining text; the next reply may be cut again."""
        self._emitted = False
        return await super().flush()

    async def handle_interruption(self) -> None:
        """Drop what was held; the next reply may be cut again."""
        self._forget_reply()
        await super().handle_interruption()

    async def reset(self) -> None:
        """Clear everything, as pipecat's does."""
        self._forget_reply()
        await super().reset()

    def _forget_reply(self) -> None:
        self._emitted = False
        self._cuts.clear()
