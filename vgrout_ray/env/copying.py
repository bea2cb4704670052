"""Is a student hack a copy of a teacher completion, or a hack of its own? (pure)

The rule: a completion's *code* (its fenced block, else the whole text) is cut into tokens that
ignore whitespace (identifiers / numbers, and each other non-space character alone, so
``x=1`` and ``x = 1`` read the same), then into token n-grams (n = 8). A student hack is a
**copy** when at least half (``COPY_THRESHOLD``) of its n-grams occur in the teacher completions
of the same problem (the group's teacher rows and the run's teacher pool for the problem). A
completion shorter than n tokens is one gram: a copy when its tokens occur contiguously in a
teacher's. With no teacher text every hack is novel.
"""
from __future__ import annotations

import re

NGRAM = 8
COPY_THRESHOLD = 0.5
_TOKEN = re.compile(r"\w+|[^\w\s]")
_FENCE = re.compile(r"```[^\n]*\n(.*?)(?:```|\Z)", re.S)


def code_of(text: str) -> str:
    """The fenced code blocks of ``text`` joined (the whole text when it has none)."""
    blocks = _FENCE.findall(text or "")
    return "\n".join(blocks) if blocks else (text or "")


def code_tokens(text: str) -> list[str]:
    """Whitespace-insensitive tokens of the completion's code."""
    return _TOKEN.findall(code_of(text))


def ngrams(tokens: list[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    if n < 1:
        raise ValueError(f"ngrams: n must be >= 1, got {n}")
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def copy_fraction(student: str, teachers: list[str], n: int = NGRAM) -> float:
    """Share of the student's code n-grams that occur in any teacher completion (0 when no teacher
    or an empty student)."""
    s = code_tokens(student)
    ts = [code_tokens(t) for t in teachers if t]
    if not s or not ts:
        return 0.0
    if len(s) < n:  # one short gram: found contiguously in a teacher's tokens?
        k = len(s)
        return float(any(tuple(t[i:i + k]) == tuple(s) for t in ts for i in range(len(t) - k + 1)))
    mine = [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]
    theirs = set().union(*(ngrams(t, n) for t in ts))
    return sum(g in theirs for g in mine) / len(mine)


def is_teacher_copy(student: str, teachers: list[str], n: int = NGRAM, threshold: float = COPY_THRESHOLD) -> bool:
    """The module's rule: ≥ ``threshold`` of the student's code n-grams occur in a teacher completion."""
    if not 0 < threshold <= 1:
        raise ValueError(f"is_teacher_copy: threshold must be in (0, 1], got {threshold}")
    return copy_fraction(student, teachers, n) >= threshold
