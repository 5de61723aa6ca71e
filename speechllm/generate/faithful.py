"""Per-row checks of a response against the row's trusted labels (the verdicts behind
:mod:`speechllm.generate.faithfulness`'s summary, for filtering targets and scoring probes).

- :func:`names_a_speaker`: does a response describe a speaker (a gender or an accent)? For a
  non-speech clip that is an invented speaker.
- :func:`unfaithful_reason`: why a response contradicts its row's labels, or None.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from speechllm.generate.faithfulness import (
    DEFAULT_VOCABULARIES,
    TRUSTED_PROVENANCE,
    response_text_for_matching,
)

#: A response saying that nothing is spoken.
NO_SPEECH = re.compile(r"\bno speech\b|\bnot (?:a )?speech\b|\bno(?:body| one) (?:is )?(?:speaking|talking)\b|"
                       r"\bthere is no speaker\b|\bno speaker\b|\bno (?:human )?voice\b|\bnon-speech\b")


def names_a_speaker(response: str, transcript: str | None = None) -> str | None:
    """``"gender"`` or ``"accent"`` when the response attributes one to a speaker, else None.

    Quoted text (and the transcript) is ignored; any gender word (male, woman, he, her, ...)
    or accent name counts, and so does the word "accent" itself.
    """
    text = response_text_for_matching(response, transcript)
    for name in ("gender", "accent"):
        vocab = DEFAULT_VOCABULARIES[name]
        if any(re.search(p, text) for patterns in vocab.values.values() for p in patterns):
            return name
    return "accent" if re.search(r"\baccent\b", text) else None


def says_no_speech(response: str) -> bool:
    """Whether the response says the clip holds no speech (or no speaker)."""
    return bool(NO_SPEECH.search(response.lower()))


def unfaithful_reason(row: Mapping[str, Any], response_field: str = "response", *,
                      require_no_speaker: bool = False) -> str | None:
    """Why ``row[response_field]`` contradicts the row's trusted labels, or None.

    Non-speech rows (``contains_speech`` false): naming a gender or an accent, and with
    ``require_no_speaker`` also not saying that nothing is spoken (:func:`says_no_speech`: an
    answer that only echoes the description teaches nothing about hearing no one). Speech rows:
    saying there is no speech, or naming another gender or accent than the label's
    (corpus/user provenance only).
    """
    response = row.get(response_field)
    if not isinstance(response, str) or not response.strip():
        return "empty response"
    attrs: Mapping[str, Any] = row.get("attributes") or {}
    prov: Mapping[str, Any] = row.get("provenance") or {}
    if attrs.get("contains_speech") is False:
        named = names_a_speaker(response, row.get("transcript"))
        if named:
            return f"non-speech: names {'a gender' if named == 'gender' else 'an accent'}"
        if require_no_speaker and not says_no_speech(response):
            return "non-speech: does not say there is no speaker"
        return None
    text = response_text_for_matching(response, row.get("transcript"))
    if NO_SPEECH.search(text):
        return "speech: says there is no speech"
    for name in ("gender", "accent"):
        if name in attrs and prov.get(name) in TRUSTED_PROVENANCE:
            verdict = DEFAULT_VOCABULARIES[name].judge(attrs[name], text)
            if verdict is not None and verdict[1]:
                return f"speech: contradicts the {name} label"
    return None
