"""The embedded persona: loading TOML files and matching imperfectly heard questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.persona import (
    DEFAULT_PERSONA_FILE,
    Persona,
    PersonaError,
    load_persona,
    similarity,
    tokenize,
)

MINIMAL = """
name = "Bob"
greeting = "Hello, I'm Bob."
fallback = "No idea, connect a real LLM."

[[qa]]
questions = ["what is your favourite colour", "colour"]
answer = "Blue."
"""


@pytest.fixture(scope="module")
def ava() -> Persona:
    """The bundled persona."""
    return load_persona()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "persona.toml"
    path.write_text(text, encoding="utf-8")
    return path


# Loading


def test_bundled_persona_loads_with_enough_answers(ava: Persona) -> None:
    assert ava.name == "Ava"
    assert 8 <= len(ava.qa) <= 14
    assert "VISAGE_LLM__BASE_URL" in ava.fallback
    assert load_persona(None) == load_persona(DEFAULT_PERSONA_FILE)


def test_bundled_answers_are_short_and_plain(ava: Persona) -> None:
    for line in [ava.greeting, ava.fallback, *(entry.answer for entry in ava.qa)]:
        assert len(line.split()) <= 45, line
        assert not any(mark in line for mark in ("*", "#", "`", "- ", "\n")), line


def test_custom_file_loads(tmp_path: Path) -> None:
    persona = load_persona(_write(tmp_path, MINIMAL))
    assert persona.name == "Bob"
    assert persona.qa[0].answer == "Blue."
    assert persona.threshold == 0.5
    assert persona.answer("what's your favorite color") == "Blue."


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(PersonaError, match=r"nope\.toml does not exist") as info:
        load_persona(missing)
    assert "persona_file" in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PersonaError, match="is a directory"):
        load_persona(tmp_path)


def test_bad_toml_names_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'name = "Bob"\ngreeting = "unterminated\n')
    with pytest.raises(PersonaError, match=r"persona.toml is not valid TOML: .*line 2"):
        load_persona(path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (MINIMAL.replace('name = "Bob"\n', ""), "name: Field required"),
        (MINIMAL.replace('answer = "Blue."\n', ""), r"qa\[0\]\.answer: Field required"),
        (MINIMAL.replace('"colour"]', '"!?"]'), r"qa\[0\]\.questions: .*'!\?' has no words"),
        (MINIMAL.replace('"Blue."', '""'), r"qa\[0\]\.answer: .*at least 1 character"),
        ("voice = 'x'\n" + MINIMAL, "voice: Extra inputs are not permitted"),
        (MINIMAL.replace("[[qa]]", "threshold = 2\n[[qa]]"), "threshold: .*less than or equal"),
    ],
)
def test_invalid_fields_are_named(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(PersonaError, match=r"persona.toml is invalid: " + problem):
        load_persona(_write(tmp_path, text))


# Matching


@pytest.mark.parametrize(
    ("heard", "question"),
    [
        # Exact and reworded.
        ("who are you", "who are you"),
        ("What's your name?", "what is your name"),
        ("what can you do", "what can you do"),
        ("how does this work", "how does this work"),
        ("what is visage", "what is visage"),
        ("how fast are you", "how fast are you"),
        ("is this running locally", "is this running locally"),
        ("how do I connect a real LLM", "how do i connect a real llm"),
        ("tell me a joke please", "tell me a joke"),
        ("thank you very much", "thank you"),
        ("goodbye", "goodbye"),
        # Speech-recognition corruptions (the first two came from pocketsphinx).
        ("oh how are you done to you", "how are you"),
        ("what's the weather like that day", "what is the weather"),
        ("hello how are you today", "how are you today"),
        ("what is vis age", "what is visage"),
        ("what is visa", "what is visage"),
        ("are you joking", "joke"),
        ("tell me about visas", "tell me about visage"),
        ("does it run off line", "offline"),
        ("what's the whether like", "what is the weather"),
        ("how do i connect a real l l m", "how do i connect a real llm"),
        ("um how does this thing work", "how does this work"),
    ],
)
def test_matches_exact_and_noisy_phrasings(ava: Persona, heard: str, question: str) -> None:
    match = ava.match(heard)
    assert (match.kind, match.question) == ("qa", question), match
    assert ava.answer(heard) == match.answer


def test_who_and_how_are_told_apart(ava: Persona) -> None:
    assert ava.answer("who are you") != ava.answer("how are you")
    assert "Ava" in ava.answer("who are you")


@pytest.mark.parametrize("heard", ["hello", "Hi there!", "hey", "good morning", "hallo there"])
def test_greetings_get_the_greeting(ava: Persona, heard: str) -> None:
    match = ava.match(heard)
    assert match.kind == "greeting"
    assert match.answer == ava.greeting


@pytest.mark.parametrize(
    "heard",
    [
        "what is the capital of france",
        "who won the football game yesterday",
        "explain quantum physics",
        "what do you think about politics",
        "i like turtles",
        "hello what is the capital of france",
        "",
        "um",
        "?!",
    ],
)
def test_unrelated_input_gets_the_fallback(ava: Persona, heard: str) -> None:
    match = ava.match(heard)
    assert match.kind == "fallback", match
    assert match.answer == ava.fallback
    assert match.score < ava.threshold


def test_threshold_is_per_persona(tmp_path: Path) -> None:
    strict = load_persona(_write(tmp_path, MINIMAL.replace("[[qa]]", "threshold = 1.0\n[[qa]]")))
    assert strict.answer("colour") == "Blue."
    assert strict.answer("what is your favourite colour then") == strict.fallback


def test_tokenize_expands_contractions_and_stems() -> None:
    assert tokenize("What's up? I'm RUNNING jokes") == ["what", "is", "up", "i", "am", "run", "jok"]
    assert {tokenize(w)[0] for w in ["joke", "jokes", "joked", "joking"]} == {"jok"}


def test_similarity_forgives_near_misses_of_long_words_only() -> None:
    assert similarity("weather", "whether") > 0.5
    assert similarity("how", "who") == 0.0
    assert similarity("joke", "cake") == 0.0
    assert similarity("visage", "visage") == 1.0
