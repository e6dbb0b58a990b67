"""The LLM stage: an OpenAI-compatible streaming endpoint, or the embedded persona responder."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
)
from pipecat.processors.aggregators.llm_context import (
    LLMContext,
    LLMSpecificMessage,
    standard_message_text,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.services.settings import LLMSettings as PipecatLLMSettings

from pipelines.config import LLMSettings
from pipelines.persona import Persona, load_persona

_WORD_WITH_SPACE = re.compile(r"\s*\S+")


class PersonaLLMService(LLMService):
    """Answers from a Persona, streamed in small pieces like a real LLM."""

    def __init__(
        self,
        persona: Persona,
        *,
        words_per_piece: int = 3,
        piece_delay_s: float = 0.01,
        **kwargs,
    ) -> None:
        """Answer as `persona`, `words_per_piece` words every `piece_delay_s` seconds."""
        if words_per_piece < 1 or piece_delay_s < 0:
            raise ValueError("words_per_piece must be >= 1 and piece_delay_s >= 0")
        # Every field set: pipecat treats service settings as a complete store.
        settings = PipecatLLMSettings(
            model=f"persona:{persona.name}",
            system_instruction=None,
            temperature=None,
            max_tokens=None,
            top_p=None,
            top_k=None,
            frequency_penalty=None,
            presence_penalty=None,
            seed=None,
            filter_incomplete_user_turns=False,
            user_turn_completion_config=None,
        )
        super().__init__(settings=settings, **kwargs)
        self._persona = persona
        self._words_per_piece = words_per_piece
        self._piece_delay_s = piece_delay_s

    @property
    def persona(self) -> Persona:
        """The persona answering."""
        return self._persona

    def can_generate_metrics(self) -> bool:
        """TTFB and processing metrics are reported."""
        return True

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Answer each LLMContextFrame; pass everything else on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._respond(frame.context)
        else:
            await self.push_frame(frame, direction)

    def reply_to(self, context: LLMContext) -> str:
        """The whole reply to a context: the greeting before the user has said anything."""
        heard = last_user_text(context)
        if heard is None:
            logger.debug(f"{self}: no user message yet, greeting")
            return self._persona.greeting
        match = self._persona.match(heard)
        logger.debug(
            f"{self}: heard {heard!r} -> {match.kind} ({match.score:.2f}, {match.question!r})"
        )
        return match.answer

    async def _respond(self, context: LLMContext) -> None:
        # Runs in the processor's frame task, which an InterruptionFrame cancels: the
        # sleeps between pieces are where that cancellation lands, so nothing more is pushed.
        await self.push_frame(LLMFullResponseStartFrame())
        await self.start_processing_metrics()
        await self.start_ttfb_metrics()
        try:
            reply = self.reply_to(context)
            for i, piece in enumerate(split_pieces(reply, self._words_per_piece)):
                if i == 0:
                    await self.stop_ttfb_metrics()
                else:
                    await asyncio.sleep(self._piece_delay_s)
                await self._push_llm_text(piece)
        finally:
            # Mirrors pipecat's OpenAI service, so downstream sees the same frames either way.
            await self.stop_processing_metrics()
            await self.push_frame(LLMFullResponseEndFrame())


class OpenAICompatibleLLMService(OpenAILLMService):
    """pipecat's OpenAI service, tuned for any OpenAI-compatible server."""

    # Many compatible servers (Ollama, llama.cpp) reject OpenAI's "developer" role;
    # the adapter then sends those messages as "user".
    supports_developer_role = False

    async def cleanup(self) -> None:
        """Close the HTTP client, which pipecat leaves open, so sockets don't pile up."""
        await super().cleanup()
        await self._client.close()


def last_user_text(context: LLMContext) -> str | None:
    """Text of the context's latest user message, or None when there is none."""
    for message in reversed(context.get_messages()):
        if isinstance(message, LLMSpecificMessage):
            continue
        if message.get("role") == "user":
            return standard_message_text(message)
    return None


def split_pieces(text: str, words_per_piece: int) -> list[str]:
    """Cut text into pieces of a few words that join back to exactly the text."""
    words = _WORD_WITH_SPACE.findall(text)
    pieces = [
        "".join(words[i : i + words_per_piece]) for i in range(0, len(words), words_per_piece)
    ]
    # Trailing whitespace isn't captured by the pattern; keep it so the join is exact.
    tail = text[len("".join(words)) :]
    if pieces and tail:
        pieces[-1] += tail
    return pieces or ([text] if text else [])


def create_llm_service(settings: LLMSettings) -> tuple[LLMService[Any], str]:
    """The LLM stage for these settings, and a line saying which one and why."""
    if settings.base_url:
        if not re.match(r"https?://", settings.base_url):
            raise ValueError(
                f"[llm] base_url must be an http(s) URL such as http://localhost:11434/v1, "
                f"got {settings.base_url!r}"
            )
        service: LLMService[Any] = OpenAICompatibleLLMService(
            # Never empty: the OpenAI client would fall back to OPENAI_API_KEY and send
            # that key to whatever server base_url names.
            api_key=settings.api_key.get_secret_value() or "none",
            base_url=settings.base_url,
            settings=OpenAILLMService.Settings(
                model=settings.model, system_instruction=settings.system_prompt or None
            ),
        )
        why = f"OpenAI-compatible LLM {settings.model!r} at {settings.base_url} (llm.base_url set)"
    else:
        persona = load_persona(settings.persona_file)
        source = settings.persona_file or "the bundled persona"
        service = PersonaLLMService(persona)
        why = (
            f"embedded persona {persona.name!r} from {source} (llm.base_url unset; set "
            "VISAGE_LLM__BASE_URL or [llm] base_url to use an OpenAI-compatible LLM)"
        )
    logger.info(f"LLM: {why}")
    return service, why
