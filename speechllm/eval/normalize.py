"""Whisper's text normalisers, from the ``whisper-normalizer`` package or transformers' copies.

Scores are only comparable when everyone normalises the same way, so the implementation in use is
recorded in every report (:func:`normalizer_info`). ``whisper-normalizer`` ships the English
spelling map (British -> American); transformers' English normaliser is used without it when the
package is absent, which can change WER on British spellings: the report says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable


@functools.lru_cache(maxsize=1)
def _basic() -> tuple[Callable[[str], str], str]:
    try:
        from whisper_normalizer.basic import BasicTextNormalizer

        return BasicTextNormalizer(), "whisper_normalizer.basic.BasicTextNormalizer"
    except ImportError:
        from transformers.models.whisper.english_normalizer import BasicTextNormalizer

        return BasicTextNormalizer(), "transformers BasicTextNormalizer"


@functools.lru_cache(maxsize=1)
def _english() -> tuple[Callable[[str], str], str]:
    try:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer(), "whisper_normalizer.english.EnglishTextNormalizer"
    except ImportError:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        return EnglishTextNormalizer({}), "transformers EnglishTextNormalizer (no spelling map)"


def basic_normalize(text: str) -> str:
    """Whisper's basic normaliser (lower case, symbols and bracketed text removed), with runs of
    spaces collapsed."""
    return " ".join(_basic()[0](text or "").split())


def english_normalize(text: str) -> str:
    """Whisper's English normaliser (numbers, spellings, contractions), spaces collapsed."""
    return " ".join(_english()[0](text or "").split())


def normalizer_info() -> dict[str, str]:
    """Which implementations are in use (recorded in reports)."""
    return {"basic": _basic()[1], "english": _english()[1]}
