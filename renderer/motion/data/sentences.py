"""A seeded English sentence generator: templates filled from word lists.

Two disjoint pools: ``"train"`` (also used for validation) and ``"test"``. The test pool
has its own templates, its own interjections and its own words in every slot, so no
test sentence can equal a train sentence: each one holds a word the train pool never
uses (``held_out_words``). Sentences mix statements, questions, numbers, names and
comma lists, from two words to three joined sentences, so the audio has pauses.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

Pool = Literal["train", "test"]


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


@dataclass(frozen=True)
class _Vocab:
    """The words one pool fills its templates with."""

    names: tuple[str, ...]
    places: tuple[str, ...]
    noun: tuple[str, ...]
    nouns: tuple[str, ...]
    food: tuple[str, ...]
    adj: tuple[str, ...]
    verb: tuple[str, ...]
    verbed: tuple[str, ...]
    day: tuple[str, ...]
    adv: tuple[str, ...]
    job: tuple[str, ...]


_TRAIN_VOCAB = _Vocab(
    names=_words(
        "Anna Peter Maria John Sofia David Laura Michael Emma James Olivia Robert Lucy Daniel "
        "Grace Thomas Hannah Samuel Alice Benjamin Chloe Henry Isabel Oscar Ruby Victor Nora "
        "Felix Clara Hugo Martha Leo Julia Adam Rosa Simon Eva Paul Mia Arthur"
    ),
    places=_words(
        "station library market office kitchen garden museum hospital airport harbour bakery "
        "school theatre hotel bank beach park bridge cinema pharmacy stadium village castle "
        "factory gallery"
    ),
    noun=_words(
        "book window letter bicycle table camera ticket phone bottle jacket lamp umbrella "
        "picture wallet basket blanket guitar mirror pencil bucket ladder suitcase clock "
        "map candle hammer kettle engine ribbon helmet"
    ),
    nouns=_words(
        "apples chairs boxes cars flowers plates stamps shoes cups keys coins rooms stones "
        "cookies papers maps bags tools songs horses boats pens lemons shirts glasses"
    ),
    food=_words(
        "bread cheese rice coffee tea soup butter milk honey salad pasta chicken oranges "
        "potatoes beans yogurt pepper sugar carrots mushrooms"
    ),
    adj=_words(
        "big small red blue old new quiet loud warm cold heavy light bright dark strange "
        "simple lovely busy cheap early happy tired clean broken perfect"
    ),
    verb=_words(
        "open close carry paint fix clean move find bring check sell wash build borrow "
        "visit order count pack follow answer"
    ),
    verbed=_words(
        "opened closed carried painted fixed cleaned moved found brought checked sold washed "
        "built borrowed visited ordered counted packed followed answered"
    ),
    day=_words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday tomorrow today tonight"),
    adv=_words("very really quite rather truly so fairly pretty"),
    job=_words("teacher doctor driver farmer painter nurse pilot baker lawyer cook"),
)

_TEST_VOCAB = _Vocab(
    names=_words(
        "Gwendolyn Rupert Beatrix Ignatius Philippa Desmond Ottilie Barnaby Winifred Cornelius "
        "Rosalind Percival Imogen Thaddeus Florence Ambrose Delphine Jasper Marigold Leopold"
    ),
    places=_words(
        "observatory greenhouse laundrette aquarium lighthouse vineyard monastery planetarium "
        "warehouse boathouse courthouse orchard"
    ),
    noun=_words(
        "telescope saxophone lantern compass spatula thermos paperweight wheelbarrow "
        "harmonica stopwatch typewriter parachute microscope hammock"
    ),
    nouns=_words(
        "pineapples envelopes marbles pebbles feathers buttons violins crayons teapots "
        "sandals postcards seashells walnuts lanterns"
    ),
    food=_words(
        "porridge cabbage lentils dumplings pancakes raspberries cinnamon spinach turnips "
        "noodles apricots crumpets"
    ),
    adj=_words(
        "gigantic tiny crimson turquoise ancient polished gloomy cheerful slippery fragrant "
        "wobbly gorgeous peculiar shiny fancy"
    ),
    verb=_words("polish inspect repair deliver decorate measure unwrap sharpen rescue juggle"),
    verbed=_words(
        "polished inspected repaired delivered decorated measured unwrapped sharpened "
        "rescued juggled"
    ),
    day=_words("fortnight weekend midnight lunchtime afterwards yesterday"),
    adv=_words("extremely awfully incredibly terribly remarkably"),
    job=_words("plumber librarian astronaut carpenter gardener jeweller"),
)

_TRAIN_TEMPLATES = (
    "{name} bought {num} {nouns} at the {place}.",
    "Did you see the {adj} {noun} near the {place}?",
    "I think we should {verb} the {noun}, and then go home.",
    "Well, {name}, the {noun} is {adj}, but the {noun2} is not.",
    "We need {food}, {food2}, and {food3}.",
    "On {day}, {name} will {verb} the {adj} {noun}.",
    "How many {nouns} does {name} have?",
    "Where is the {place}?",
    "It costs {num} dollars and {num2} cents.",
    "Honestly, I never {verbed} a {noun} before.",
    "What time does the {place} open on {day}?",
    "Oh, that is {adv} {adj}!",
    "My friend {name} is a {job}.",
    "Can you {verb} the {noun} for me, please?",
    "The {noun} was {adv} {adj}, so we left it at the {place}.",
    "{name} and {name2} {verbed} {num} {nouns} yesterday.",
    "Is it {adj} or {adj2}?",
    "Please bring {food} and {food2} to the {place}.",
    "I have {num} {nouns}, {num2} {nouns2}, and one {noun}.",
    "After the {place}, we went to the {place2}, and then to the {place3}.",
    "Why did {name} {verb} the {noun}?",
    "The train leaves at {hour} {minute}.",
    "In {year}, the {place} was {adj}.",
    "Yes, {name}, I {verbed} it.",
    "No, the {noun} is in the {place}.",
    "Would you like {food} or {food2}?",
    "That {job} {verbed} my {noun}, and I was {adv} {adj}.",
    "Let me think, maybe {num}, maybe {num2}.",
    "First {verb} the {noun}, then {verb2} the {noun2}.",
    "The {adj} {noun} belongs to {name}.",
    "Who {verbed} the {nouns} at the {place}?",
    "Remember, {name}, the {place} closes on {day}.",
    "There are {num} {adj} {nouns} in the {place}.",
    "Could {name} {verb} it before {day}?",
)
_TEST_TEMPLATES = (
    "According to {name}, the {noun} is {adv} {adj}.",
    "Have you ever {verbed} a {adj} {noun}?",
    "Meanwhile, at the {place}, {name} {verbed} {num} {nouns}.",
    "If the {noun} is {adj}, then {verb} it carefully.",
    "Besides {food} and {food2}, we bought {food3}.",
    "Unfortunately, the {place} was {adj} during the {day}.",
    "Which {noun} did the {job} {verb}?",
    "Exactly {num} {nouns} were hidden inside the {place}.",
    "Surprisingly, {name} prefers {food} to {food2}.",
    "Goodness, what a {adj} {noun}!",
    "Whenever {name} visits, the {nouns} disappear.",
    "Somebody {verbed} {num} {nouns} near the {place}, remarkably quickly.",
    "Tell {name} that the {noun} arrives around {hour} {minute}.",
    "Perhaps the {job} could {verb} the {noun} instead?",
)
_TRAIN_SHORT = (
    "Yes.",
    "No.",
    "Okay.",
    "Thank you.",
    "Hello there.",
    "Good morning.",
    "Really?",
    "Sure, why not?",
    "Of course.",
    "I see.",
    "Right.",
    "Not at all.",
    "Goodbye.",
)
_TEST_SHORT = (
    "Absolutely.",
    "Nonsense!",
    "Splendid.",
    "Whatever for?",
    "Cheerio.",
    "Indeed.",
    "Marvellous, truly.",
    "Heavens, no.",
)

_SLOT = re.compile(r"\{([a-z]+?)(\d?)\}")


def _number(rng: np.random.Generator) -> str:
    """Small counts mostly, sometimes bigger numbers espeak reads in words."""
    r = rng.random()
    if r < 0.6:
        return str(int(rng.integers(2, 13)))
    if r < 0.9:
        return str(int(rng.integers(13, 100)))
    return str(int(rng.integers(100, 2000)))


def _fill(template: str, vocab: _Vocab, rng: np.random.Generator) -> str:
    """Fill each ``{slot}`` (``{slot2}`` is a second, different draw of the same list)."""
    used: dict[str, set[str]] = {}

    def pick(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "num":
            return _number(rng)
        if kind == "year":
            return str(int(rng.integers(1890, 2030)))
        if kind == "hour":
            return str(int(rng.integers(1, 13)))
        if kind == "minute":
            return str(int(rng.choice([15, 20, 30, 45, 10, 50])))
        options: tuple[str, ...] = getattr(
            vocab, "names" if kind == "name" else "places" if kind == "place" else kind
        )
        taken = used.setdefault(kind, set())
        free = [w for w in options if w not in taken] or list(options)
        word = free[int(rng.integers(len(free)))]
        taken.add(word)
        return word

    return _SLOT.sub(pick, template)


def _pool(pool: Pool) -> tuple[_Vocab, tuple[str, ...], tuple[str, ...]]:
    if pool == "train":
        return _TRAIN_VOCAB, _TRAIN_TEMPLATES, _TRAIN_SHORT
    if pool == "test":
        return _TEST_VOCAB, _TEST_TEMPLATES, _TEST_SHORT
    raise ValueError(f"pool must be 'train' or 'test', got {pool!r}")


def sentence(rng: np.random.Generator, pool: Pool = "train") -> str:
    """One utterance: a short reply, one filled template, or two or three of them joined."""
    vocab, templates, short = _pool(pool)
    r = rng.random()
    if r < 0.08:
        return str(short[int(rng.integers(len(short)))])
    n = 1 if r < 0.72 else 2 if r < 0.94 else 3
    parts = [_fill(templates[int(rng.integers(len(templates)))], vocab, rng) for _ in range(n)]
    return " ".join(parts)


def sentences(seed: int, pool: Pool = "train", exclude: set[str] | None = None) -> Iterator[str]:
    """Distinct sentences from ``pool`` for ``seed``, skipping those in ``exclude``; endless."""
    rng = np.random.default_rng([seed, 0 if pool == "train" else 1])
    seen = set(exclude or ())
    misses = 0
    while True:
        s = sentence(rng, pool)
        if s in seen:
            misses += 1
            if misses > 100_000:  # the pool is many millions; this means a bug
                raise RuntimeError(f"sentence pool {pool!r} seems exhausted")
            continue
        seen.add(s)
        yield s


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z']+", text.lower()))


def train_words() -> set[str]:
    """Every word a train-pool sentence can contain (lower case)."""
    vocab, templates, short = _pool("train")
    words: set[str] = set()
    for text in (*templates, *short):
        words |= _tokens(_SLOT.sub(" ", text))
    for field in vocab.__dataclass_fields__:
        words |= _tokens(" ".join(getattr(vocab, field)))
    return words


def held_out_words(text: str) -> set[str]:
    """Words of ``text`` that no train-pool sentence can contain."""
    return _tokens(text) - train_words()
