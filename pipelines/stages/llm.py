"""The LLM stage: an OpenAI-compatible streaming endpoint, or the embedded persona responder."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import openai
from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
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
from pipecat.utils.http import TIMEOUT_EXCEPTIONS

from pipelines.config import LLMSettings
from pipelines.health import DependencyHealth
from pipelines.persona import Persona, load_persona

_WORD_WITH_SPACE = re.compile(r"\s*\S+")
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*$")
#: Longest piece of an error message that goes into the log.
_MAX_DETAIL = 200


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
    """pipecat's OpenAI service, tuned for any OpenAI-compatible server, that never leaves
    the caller in silence.

    A reply's first token must come within ``timeout_s`` of the turn reaching the LLM, and
    each later piece within ``stall_timeout_s`` of the one before. The openai client's own
    bounded retries (``retries``: connection errors, 408/429/5xx) run inside that deadline,
    and its HTTP timeout is the same few seconds, so nothing waits the client's default
    600 s. When the request fails, or the deadline passes, the reply ends with
    ``fallback_line`` (after whatever was already said) through the normal
    LLMFullResponseStart/Text/End frames, so TTS speaks it and the context records it; the
    failure is logged once and reported to ``health`` as ``"llm"``; a reply that succeeds
    reports it ok. An interruption still cancels the frame task as everywhere in pipecat
    (it is not a failure).

    pipecat's ``retry_on_timeout`` stays off: its retry has no deadline.
    """

    # Many compatible servers (Ollama, llama.cpp) reject OpenAI's "developer" role;
    # the adapter then sends those messages as "user".
    supports_developer_role = False

    def __init__(
        self,
        *,
        timeout_s: float = 2.5,
        stall_timeout_s: float = 2.5,
        retries: int = 1,
        fallback_line: str = LLMSettings.model_fields["fallback_line"].default,
        health: DependencyHealth | None = None,
        **kwargs: Any,
    ) -> None:
        """``kwargs`` go to pipecat's ``OpenAILLMService``."""
        # Read by create_client, which the base __init__ calls.
        self._timeout_s = timeout_s
        self._stall_timeout_s = stall_timeout_s
        self._retries = retries
        super().__init__(retry_on_timeout=False, **kwargs)
        self._fallback_line = fallback_line
        self._health = health or DependencyHealth()
        self._api_key = str(kwargs.get("api_key") or "")
        self._endpoint = _log_safe_url(str(kwargs.get("base_url") or "the OpenAI API"))
        # The running reply's deadline (first token, then each next piece) and its text.
        self._deadline: asyncio.Timeout | None = None
        self._said: list[str] = []

    def create_client(self, *args: Any, **kwargs: Any) -> Any:
        """pipecat's client, with a few-second HTTP timeout and our bounded retries."""
        client = super().create_client(*args, **kwargs)
        return client.with_options(
            timeout=max(self._timeout_s, self._stall_timeout_s), max_retries=self._retries
        )

    async def _process_context(self, context: LLMContext) -> None:
        """Stream a reply under the deadline; on a failure, end it with the fallback line."""
        started = time.monotonic()
        self._said = []
        deadline = asyncio.timeout(self._timeout_s)
        try:
            async with deadline:
                self._deadline = deadline
                await super()._process_context(context)
        except Exception as e:  # not CancelledError: an interruption is no failure
            timed_out = deadline.expired() or isinstance(
                e, (openai.APITimeoutError, *TIMEOUT_EXCEPTIONS)
            )
            why, detail = self._describe_failure(e, timed_out=timed_out)
        else:
            self._health.ok("llm")
            return
        finally:
            self._deadline = None
        if timed_out:
            await self._call_event_handler("on_completion_timeout")
        self._health.failed("llm", why)
        said = "".join(self._said)
        logger.warning(
            f"{self}: LLM {self._model_name()!r} at {self._endpoint}: {why} ({detail}); "
            f"{time.monotonic() - started:.1f} s into the turn, {len(said.split())} words "
            "said; saying the fallback line"
        )
        await self.push_frame(LLMTextFrame(self._fallback_after(said)))

    async def _push_llm_text(self, text: str) -> None:
        """Each piece of the reply resets the deadline to ``stall_timeout_s`` from now."""
        if self._deadline is not None:
            self._deadline.reschedule(asyncio.get_running_loop().time() + self._stall_timeout_s)
        self._said.append(text)
        await super()._push_llm_text(text)

    def _describe_failure(self, error: Exception, *, timed_out: bool) -> tuple[str, str]:
        """(a short state for /health, details for the log) of a failed reply."""
        midway = any(piece.strip() for piece in self._said)
        if isinstance(error, TimeoutError) and not str(error):
            detail = "the deadline passed"
        else:
            detail = f"{type(error).__name__}: {error}"
            cause = error.__cause__
            if cause is not None:
                detail += f"; {type(cause).__name__}: {cause}"
        detail = self._redact(detail)
        if timed_out:
            if midway:
                return f"stalled for {self._stall_timeout_s:g} s mid-reply", detail
            return f"no answer within {self._timeout_s:g} s", detail
        if midway:  # a lost connection too: openai wraps it as a connection error
            return "broke off mid-reply", detail
        if isinstance(error, openai.APIStatusError):
            return f"answered HTTP {error.status_code}", detail
        if isinstance(error, openai.APIConnectionError):
            return "unreachable", detail
        return f"failed ({type(error).__name__})", detail

    def _fallback_after(self, said: str) -> str:
        """The fallback line, set apart from a reply that broke off mid-sentence."""
        said = said.strip()
        if not said:
            return self._fallback_line
        return (" " if _SENTENCE_END.search(said) else "... ") + self._fallback_line

    def _model_name(self) -> str:
        return str(self.settings.model)

    def _redact(self, text: str) -> str:
        """``text`` without the API key (a server may echo it) and cut to a log line."""
        if len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."

    async def cleanup(self) -> None:
        """Close the HTTP client, which pipecat leaves open, so sockets don't pile up."""
        await super().cleanup()
        await self._client.close()


def _log_safe_url(url: str) -> str:
    """``url`` without user:password, query or fragment (which may carry credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an invalid URL"
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


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


def create_llm_service(
    settings: LLMSettings, health: DependencyHealth | None = None
) -> tuple[LLMService[Any], str]:
    """The LLM stage for these settings, and a line saying which one and why; a real LLM
    reports each reply's success or failure to ``health`` (the persona is always ok)."""
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
            timeout_s=settings.timeout_s,
            stall_timeout_s=settings.stall_timeout_s,
            retries=settings.retries,
            fallback_line=settings.fallback_line,
            health=health,
        )
        why = (
            f"OpenAI-compatible LLM {settings.model!r} at {_log_safe_url(settings.base_url)} "
            f"(llm.base_url set; first token within {settings.timeout_s:g} s, "
            f"{settings.retries} retries, else the fallback line)"
        )
    else:
        persona = load_persona(settings.persona_file)
        source = settings.persona_file or "the bundled persona"
        service = PersonaLLMService(persona)
        if health is not None:
            health.ok("llm")  # in-process: nothing to reach
        why = (
            f"embedded persona {persona.name!r} from {source} (llm.base_url unset; set "
            "VISAGE_LLM__BASE_URL or [llm] base_url to use an OpenAI-compatible LLM)"
        )
    logger.info(f"LLM: {why}")
    return service, why
