"""Word error rate: how far a transcript's words are from what was said."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Spellings that differ only in form, not in the word heard.
_SAME = {
    "ok": "okay",
    "alright": "all right",
    "to-day": "today",
    "centre": "center",
    "colour": "color",
    "favourite": "favorite",
    "theatre": "theater",
}
_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation; hyphens join ("to-day" -> "today"), digits up
    to 12 become words ("3" -> "three"), apostrophes stay ("what's")."""
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    words: list[str] = []
    for raw in text.split():
        word = _SAME.get(raw.strip('.,!?;:"()[]'), raw)
        word = re.sub(r"[^\w' ]", "", word.replace("-", "")).strip("'")
        for part in word.split():
            if part.isdigit() and int(part) < len(_NUMBERS):
                part = _NUMBERS[int(part)]
            if part:
                words.append(part)
    return words


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Substitutions + deletions + insertions that turn ``ref`` into ``hyp``."""
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        diag, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (r != h))
    return row[-1]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(errors, reference words) of one utterance, after :func:`normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    return edit_distance(ref, hyp), len(ref)


def wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Pooled word error rate of (reference, hypothesis) pairs: all errors over all
    reference words (so long sentences weigh more than short ones)."""
    errors = words = 0
    for reference, hypothesis in pairs:
        e, n = word_errors(reference, hypothesis)
        errors, words = errors + e, words + n
    return errors / words if words else 0.0
