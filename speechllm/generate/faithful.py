"""Per-row checks of a response against the row's trusted labels (the verdicts behind
:mod:`speechllm.generate.faithfulness`'s summary, for filtering targets and scoring probes).

- :func:`names_a_speaker`: does a response describe a speaker (a gender or an accent)? For a
  non-speech clip that is an invented speaker.
- :func:`invents_a_speaker`: that, or does it speak of a speaker, a voice or speech without
  saying there is none ("a solo speaker")? The probes' "no invented speaker" rule.
- :func:`copies_description`: does a response copy the seed description back (its markup, its
  "(Volume: ..." fields, or most of its words verbatim) instead of answering in its own words?
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


#: What only a copy of a seed description contains: the audio markup, a timestamp, or one of the
#: description's "Field: value" entries ("(Volume: normal, Duration: 4s)").
DESCRIPTION_MARKUP = re.compile(r"<\s*/?\s*(?:start|end)_audio\s*>|\[\d{1,2}:\d\d(?::\d\d)?|"
                                r"\b(?:volume|duration|gender|accent|pitch|speaking rate|emotion|snr|"
                                r"reverberation|noise|sound|transcript)\s*:", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9']+")


def _longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest run of words that ``a`` and ``b`` share verbatim."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def copies_description(response: str, description: str | None, transcript: str | None = None, *,
                       min_run: int = 5, share: float = 0.6, long_run: int = 8) -> bool:
    """Whether ``response`` copies the seed description back instead of answering.

    True when the response carries the description's markup (``<start_audio>``, a timestamp, a
    ``Volume:``-style field; :data:`DESCRIPTION_MARKUP`), or shares with the description a
    verbatim run of at least ``long_run`` words, or one of at least ``min_run`` words that makes
    up ``share`` of the response ("No speech, no speaker, only music."). The row's transcript is
    removed from both first: repeating what was said is not copying the description.
    """
    if DESCRIPTION_MARKUP.search(response):
        return True
    if not description:
        return False
    said = (transcript or "").strip().lower()
    resp, desc = response.lower(), description.lower()
    if said:
        resp, desc = resp.replace(said, " "), desc.replace(said, " ")
    words, source = _WORD.findall(resp), _WORD.findall(desc)
    if not words:
        return False
    run = _longest_common_run(words, source)
    return run >= long_run or (run >= min_run and run >= share * len(words))


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


#: Words that put someone speaking in a clip ("a solo speaker", "a normal conversation").
SPEAKER_WORDS = re.compile(r"\b(?:speakers?|voices?|speech|spoken|speaking|speaks|talk(?:s|ing)?|conversations?|"
                           r"narrat\w*|someone|somebody|person|people|he|she)\b")


def invents_a_speaker(response: str, transcript: str | None = None) -> bool:
    """Whether a reply about a clip without speech presents someone speaking: it names a gender
    or an accent (:func:`names_a_speaker`), or it speaks of a speaker, a voice or speech without
    saying that there is none ("The audio is from a solo speaker.")."""
    if names_a_speaker(response, transcript):
        return True
    text = response_text_for_matching(response, transcript)
    return not says_no_speech(response) and bool(SPEAKER_WORDS.search(text))


def unfaithful_reason(row: Mapping[str, Any], response_field: str = "response", *,
                      require_no_speaker: bool = False, reject_copies: bool = False) -> str | None:
    """Why ``row[response_field]`` contradicts the row's trusted labels, or None.

    Non-speech rows (``contains_speech`` false): naming a gender or an accent, and with
    ``require_no_speaker`` also not saying that nothing is spoken (:func:`says_no_speech`: an
    answer that only echoes the description teaches nothing about hearing no one). Speech rows:
    saying there is no speech, or naming another gender or accent than the label's
    (corpus/user provenance only). With ``reject_copies``, any row whose response copies its
    ``description`` back (:func:`copies_description`) is rejected too: trained on such targets
    the model learns to recite a description's format ("No speech, no speaker, only a single
    speaker.") rather than to answer.
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
        if reject_copies and copies_description(response, row.get("description"), row.get("transcript")):
            return "non-speech: copies the description"
        return None
    text = response_text_for_matching(response, row.get("transcript"))
    if NO_SPEECH.search(text):
        return "speech: says there is no speech"
    for name in ("gender", "accent"):
        if name in attrs and prov.get(name) in TRUSTED_PROVENANCE:
            verdict = DEFAULT_VOCABULARIES[name].judge(attrs[name], text)
            if verdict is not None and verdict[1]:
                return f"speech: contradicts the {name} label"
    if reject_copies and copies_description(response, row.get("description"), row.get("transcript")):
        return "speech: copies the description"
    return None
