"""The embedded persona: canned answers picked by fuzzy matching what speech recognition heard."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import cached_property, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails

DEFAULT_PERSONA_FILE = Path(__file__).parent / "personas" / "default.toml"

# Function words carry little meaning, so they count for little in a match; question words
# ("who", "how") are kept out on purpose: they tell "who are you" from "how are you".
STOP_WORDS = frozenset(
    """
    a an the is are am was were be been being do does did doing to of in on at for from by with
    about as into and or but if so than then that this these those there here it its i me my
    mine we us our you your yours he she they them their please can could would will shall
    should may might must just really very tell say let lets like know okay ok well oh uh um
    er ah hmm yeah yes no not any some have has had get got go going want wanna gonna good
    """.split()
)
GREETING_WORDS = frozenset(
    "hello hi hey hiya howdy hallo hullo greetings morning afternoon evening yo".split()
)
STOP_WEIGHT = 0.2
# Extra heard words lower a score only gently: recognisers insert junk words ("done to you").
PRECISION_EXPONENT = 0.4
# Below this, two different words are not taken for a misrecognition of one another.
FUZZY_MIN = 0.8
# A greeting with more unexplained content words than this is a question we can't answer.
GREETING_MAX_OTHER_WORDS = 2

_CONTRACTIONS = (
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"'re\b"), " are"),
    (re.compile(r"'m\b"), " am"),
    (re.compile(r"'ll\b"), " will"),
    (re.compile(r"'ve\b"), " have"),
    (re.compile(r"'d\b"), " would"),
    (re.compile(r"'s\b"), " is"),
)
_WORD = re.compile(r"[a-z0-9]+")
_SUFFIXES = ("ing", "ed", "ly", "s")


class PersonaError(ValueError):
    """A persona file is missing or invalid; the message names the file and the problem."""


class QA(BaseModel):
    """One canned answer and the phrasings (questions or keywords) that ask for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    questions: list[str] = Field(min_length=1, description="Phrasings or keywords.")
    answer: str = Field(min_length=1, description="The spoken reply, one or two sentences.")

    @field_validator("questions")
    @classmethod
    def _questions_have_words(cls, questions: list[str]) -> list[str]:
        for question in questions:
            if not tokenize(question):
                raise ValueError(f"question {question!r} has no words")
        return questions


@dataclass(frozen=True)
class Match:
    """How a persona answered what it heard, and why."""

    kind: Literal["qa", "greeting", "fallback"]
    answer: str
    score: float = 0.0
    question: str | None = None


class Persona(BaseModel):
    """A named character with a greeting, canned answers and a fallback line."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The persona's name.")
    greeting: str = Field(min_length=1, description="Said first, and when greeted.")
    fallback: str = Field(min_length=1, description="Said when nothing matches.")
    threshold: float = Field(0.5, gt=0.0, le=1.0, description="Lowest score that answers.")
    qa: list[QA] = Field(default_factory=list, description="Canned answers.")

    def answer(self, heard: str) -> str:
        """The reply to what speech recognition heard."""
        return self.match(heard).answer

    def match(self, heard: str) -> Match:
        """The best canned answer above the threshold, else the greeting or the fallback."""
        tokens = tokenize(heard)
        if not tokens:
            return Match("fallback", self.fallback)
        best = Match("fallback", self.fallback)
        for entry, entry_tokens in zip(self.qa, self._question_tokens, strict=True):
            for question, q_tokens in zip(entry.questions, entry_tokens, strict=True):
                score = self._score(q_tokens, tokens)
                if score > best.score:
                    best = Match("qa", entry.answer, score, question)
        if best.score >= self.threshold:
            return best
        if _is_greeting(tokens):
            return Match("greeting", self.greeting, best.score)
        return Match("fallback", self.fallback, best.score)

    @cached_property
    def _question_tokens(self) -> list[list[list[str]]]:
        return [[tokenize(q) for q in entry.questions] for entry in self.qa]

    @cached_property
    def _document_frequency(self) -> dict[str, int]:
        # Documents are entries, not questions: a word repeated across one entry's
        # phrasings is still specific to that entry.
        df: dict[str, int] = {}
        for entry_tokens in self._question_tokens:
            for token in {t for q in entry_tokens for t in q}:
                df[token] = df.get(token, 0) + 1
        return df

    def _weight(self, token: str) -> float:
        if token in STOP_WORDS or token in GREETING_WORDS:
            return STOP_WEIGHT
        # Words many entries share say little about which entry was meant; unknown words
        # (df 0) weigh most, so an unrelated question drags every score down.
        return 1.0 / (1.0 + math.log(max(self._document_frequency.get(token, 0), 1)))

    def _score(self, question: list[str], heard: list[str]) -> float:
        """How much of the question was heard, discounted by what was heard besides, in [0, 1]."""
        # Adjacent heard words are also tried joined, so "off line" can match "offline".
        pairs = [a + b for a, b in pairwise(heard)]
        recall = _weighted_mean(
            question, [max(_best(q, heard), _best(q, pairs)) for q in question], self._weight
        )
        found = [_best(h, question) for h in heard]
        for i, pair in enumerate(pairs):
            joined = _best(pair, question)
            found[i], found[i + 1] = max(found[i], joined), max(found[i + 1], joined)
        precision = _weighted_mean(heard, found, self._weight)
        return recall * precision**PRECISION_EXPONENT


def _best(token: str, others: list[str]) -> float:
    """The best similarity of `token` to any of `others`."""
    return max((similarity(token, other) for other in others), default=0.0)


def _weighted_mean(tokens: list[str], values: list[float], weight: Callable[[str], float]) -> float:
    """Mean of per-token values, each token weighted by `weight`."""
    weights = [weight(t) for t in tokens]
    total = sum(weights)
    return sum(w * v for w, v in zip(weights, values, strict=True)) / total if total else 0.0


@lru_cache(maxsize=65536)
def similarity(a: str, b: str) -> float:
    """1 for the same word, 0.5 to 1 for a likely misrecognition, else 0."""
    if a == b:
        return 1.0
    # Short words differ by one letter from unrelated words ("how"/"who"), so only
    # longer ones get fuzzy credit.
    if min(len(a), len(b)) < 4 or 2 * min(len(a), len(b)) / (len(a) + len(b)) < FUZZY_MIN:
        return 0.0
    ratio = SequenceMatcher(None, a, b).ratio()
    # Rescaled so a borderline look-alike ("think"/"thank") earns only half a word.
    return 0.5 + 0.5 * (ratio - FUZZY_MIN) / (1.0 - FUZZY_MIN) if ratio >= FUZZY_MIN else 0.0


def tokenize(text: str) -> list[str]:
    """Lower-case, contraction-expanded, lightly stemmed words."""
    text = text.lower().replace("’", "'")
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return [_stem(w) for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    # Crude suffix stripping is enough here: fuzzy matching absorbs what it gets wrong.
    # "joke", "jokes", "joked", "joking" all become "jok"; "running" becomes "run".
    if word in STOP_WORDS or word in GREETING_WORDS:
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if len(word) >= 4 and word.endswith("e"):
        word = word[:-1]
    if len(word) >= 4 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    return word


def _is_greeting(tokens: list[str]) -> bool:
    """Whether the words are mostly a greeting ("hello there", "good morning")."""
    greeted = any(max(similarity(t, g) for g in GREETING_WORDS) > 0 for t in tokens)
    others = [t for t in tokens if t not in STOP_WORDS and t not in GREETING_WORDS]
    return greeted and len(others) <= GREETING_MAX_OTHER_WORDS


def load_persona(path: Path | None = None) -> Persona:
    """Load a persona from TOML; None loads the bundled default."""
    path = DEFAULT_PERSONA_FILE if path is None else Path(path)
    hint = "set [llm] persona_file to a valid persona TOML, or unset it for the bundled one"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise PersonaError(f"persona file {path} {what}; {hint}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PersonaError(f"persona file {path} cannot be read ({e}); {hint}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PersonaError(f"persona file {path} is not valid TOML: {e}") from e
    try:
        return Persona.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(_describe(err) for err in e.errors())
        raise PersonaError(f"persona file {path} is invalid: {problems}") from e


def _describe(error: ErrorDetails) -> str:
    """One pydantic error as `qa[2].answer: Field required`."""
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    return f"{where or 'file'}: {error['msg']}"
