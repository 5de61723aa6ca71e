"""Cheap checks on generated responses: empty, or degenerate (looping).

A small LLM that loops ("The speaker is a male. The speaker is a male. ...") makes a poor
training target; these checks count such responses (and the pipeline can drop them).
"""

from __future__ import annotations

from typing import Literal

Degeneracy = Literal["empty", "loop"]

_MIN_LOOP_WORDS = 12  # a repeated tail shorter than this is emphasis ("no, no, no"), not a loop
_MIN_REPEATS = 3


def _has_repeated_tail(units: list[str], max_unit: int, min_repeats: int, min_span: int) -> bool:
    """True when the sequence ends in ``>= min_repeats`` copies of one unit of length <= max_unit
    covering at least ``min_span`` items."""
    n = len(units)
    for size in range(1, min(max_unit, n // min_repeats) + 1):
        unit = units[n - size:]
        repeats = 1
        while (repeats + 1) * size <= n and units[n - (repeats + 1) * size: n - repeats * size] == unit:
            repeats += 1
        if repeats >= min_repeats and repeats * size >= min_span:
            return True
    return False


def degeneracy(text: str) -> Degeneracy | None:
    """``"empty"`` for a blank response, ``"loop"`` for one that repeats itself, else ``None``.

    A loop is a tail made of >= 3 copies of a 1-30 word unit spanning >= 12 words, a tail of >= 6
    copies of a 1-10 character unit (for text without spaces), or a response of >= 40 words whose
    distinct word 4-grams are under 40% of its 4-grams.
    """
    stripped = text.strip()
    if not stripped:
        return "empty"
    words = stripped.lower().split()
    if _has_repeated_tail(words, 30, _MIN_REPEATS, _MIN_LOOP_WORDS):
        return "loop"
    tail = list(stripped[-120:])
    if _has_repeated_tail(tail, 10, 6, 24):
        return "loop"
    if len(words) >= 40:
        grams = [tuple(words[i:i + 4]) for i in range(len(words) - 3)]
        if len(set(grams)) < 0.4 * len(grams):
            return "loop"
    return None
