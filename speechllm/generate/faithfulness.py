"""Faithfulness of generated responses to labelled attributes.

A small LLM asked an open question about a seed description invents freely (a song, a band, a
year). Before training on its answers, a user should see how often a response *states* the
labelled value of an attribute and how often it *contradicts* it (names another value of the same
attribute: "male" for a female label, "fast" for a slow one, "Irish" for a Scottish accent).

Only labels whose provenance is trusted count (``corpus`` or ``user`` by default: measured values
are themselves estimates). Quoted text and the row's transcript are removed from the response
first, so "he said ..." inside a quotation is not read as a statement about the speaker.

:func:`faithfulness_summary` is a plain function over rows (targets, or any rows with
``attributes``, ``provenance`` and a response field), so reports can show it next to results.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TRUSTED_PROVENANCE = ("corpus", "user")


@dataclass(frozen=True)
class AttributeVocabulary:
    """How each value of an attribute is said: canonical value -> regular expressions (matched on
    lower-cased text). ``aliases`` maps label spellings to canonical values. With ``open_values``
    a label outside ``values`` (an unusual accent) is matched by its own words."""

    attribute: str
    values: Mapping[str, Sequence[str]]
    aliases: Mapping[str, str] = field(default_factory=dict)
    open_values: bool = False
    generic_words: frozenset[str] = frozenset()

    def canonical(self, label: Any) -> str | None:
        """The canonical value of a label, or None when it cannot be matched."""
        text = str(label).strip().lower()
        if not text:
            return None
        if text in self.values:
            return text
        if text in self.aliases:
            return self.aliases[text]
        for value, patterns in self.values.items():
            if any(re.search(p, text) for p in patterns):
                return value
        return text if self.open_values and self._own_patterns(text) else None

    def _own_patterns(self, label: str) -> list[str]:
        words = [w for w in re.findall(r"[a-z]+", label) if len(w) > 2 and w not in self.generic_words]
        return [rf"\b{re.escape(w)}\b" for w in words]

    def patterns(self, value: str) -> list[str]:
        return list(self.values.get(value, ())) or self._own_patterns(value)

    def judge(self, label: Any, text: str) -> tuple[bool, bool] | None:
        """``(states, contradicts)`` for a response ``text`` about a row labelled ``label``."""
        value = self.canonical(label)
        if value is None:
            return None
        own = self.patterns(value)
        states = any(re.search(p, text) for p in own)
        contradicts = False
        for other, patterns in self.values.items():
            if other == value:
                continue
            # A value whose words also describe the label ("British" for "Scottish English") is
            # not a contradiction.
            if any(re.search(p, str(label).lower()) for p in patterns):
                continue
            if any(re.search(p, text) for p in patterns):
                contradicts = True
                break
        return states, contradicts


def _near(word: str, anchor: str) -> list[str]:
    """``word`` within a few words of ``anchor`` (either order), e.g. high ... pitch."""
    return [rf"\b{word}\b(?:[\s,-]+\w+){{0,3}}?[\s,-]+{anchor}", rf"{anchor}\w*(?:[\s,]+\w+){{0,4}}?[\s,]+{word}\b"]


DEFAULT_VOCABULARIES: dict[str, AttributeVocabulary] = {
    "gender": AttributeVocabulary(
        "gender",
        values={
            "female": (r"\bfemale\b", r"\bwom[ae]n\b", r"\bgirl\b", r"\blady\b", r"\bshe\b", r"\bher\b",
                       r"\bherself\b", r"\bfeminine\b"),
            "male": (r"(?<!fe)\bmale\b", r"\bm[ae]n\b", r"\bboy\b", r"\bgentleman\b", r"\bhe\b", r"\bhis\b",
                     r"\bhim\b", r"\bhimself\b", r"\bmasculine\b"),
        },
        aliases={"f": "female", "m": "male", "woman": "female", "man": "male"},
    ),
    "emotion": AttributeVocabulary(
        "emotion",
        values={
            "neutral": (r"\bneutral\b",),
            "calm": (r"\bcalm(?:ly)?\b",),
            "happy": (r"\bhapp(?:y|ily|iness)\b", r"\bjoy(?:ful)?\b", r"\bcheerful\b"),
            "sad": (r"\bsad(?:ly|ness)?\b", r"\bunhappy\b", r"\bsorrow\w*"),
            "angry": (r"\bangr(?:y|ily)\b", r"\banger\b", r"\bfurious\b", r"\bannoyed\b"),
            "fearful": (r"\bfear(?:ful)?\b", r"\bafraid\b", r"\bscared\b", r"\bfrightened\b"),
            "disgusted": (r"\bdisgust(?:ed)?\b",),
            "surprised": (r"\bsurprise[d]?\b",),
            "frustrated": (r"\bfrustrat\w*",),
            "excited": (r"\bexcit\w*",),
        },
        aliases={"neu": "neutral", "hap": "happy", "ang": "angry", "fea": "fearful", "dis": "disgusted",
                 "sur": "surprised", "fru": "frustrated", "exc": "excited", "fear": "fearful"},
    ),
    "accent": AttributeVocabulary(
        "accent",
        values={
            "american": (r"\bamerican\b", r"\bunited states\b", r"\bu\.s\.", r"\busa\b"),
            "british": (r"\bbritish\b", r"\breceived pronunciation\b", r"\brp\b", r"\bengland\b",
                        r"\benglish accent\b",
                        r"\baccent (?:is|was|sounds|seems) (?:to be )?english\b"),
            "scottish": (r"\bscottish\b", r"\bscotland\b", r"\bscots\b"),
            "irish": (r"\birish\b", r"\bireland\b"),
            "welsh": (r"\bwelsh\b", r"\bwales\b"),
            "australian": (r"\baustralia\w*",),
            "canadian": (r"\bcanad\w*",),
            "indian": (r"\bindian?\b", r"\bsouth asia\w*"),
            "new zealand": (r"\bnew zealand\w*",),
            "south african": (r"\bsouth(?:ern)? africa\w*",),
            "caribbean": (r"\bcaribbean\b", r"\bjamaica\w*"),
            "new york": (r"\bnew york\w*",),
            "southern": (r"\bsouthern (?:us|american)\b",),
            "french": (r"\bfrench\b",),
            "german": (r"\bgerman\b",),
            "spanish": (r"\bspanish\b",),
            "chinese": (r"\bchinese\b",),
        },
        aliases={"us": "american", "england": "british", "english": "british", "scotland": "scottish",
                 "ireland": "irish", "wales": "welsh", "india": "indian"},
        open_values=True,
        generic_words=frozenset({"english", "accent", "and", "the", "region", "other"}),
    ),
    "pitch": AttributeVocabulary(
        "pitch",
        values={
            "low": (*_near("low", "pitch"), r"\blow(?:er)?[- ]pitched\b", r"\bdeep\b", r"\blow (?:voice|tone)\b"),
            "high": (*_near("high", "pitch"), r"\bhigh(?:er)?[- ]pitched\b", r"\bshrill\b", r"\bsqueaky\b",
                     r"\bhigh (?:voice|tone)\b"),
            "normal": (*_near("(?:normal|medium|moderate|average|mid)", "pitch"),),
        },
        aliases={"medium": "normal", "mid": "normal", "moderate": "normal"},
    ),
    "speaking_rate": AttributeVocabulary(
        "speaking_rate",
        values={
            "slow": (r"\bslow(?:ly|er)?\b", r"\bunhurried\b", r"\bleisurely\b"),
            "fast": (r"\bfast(?:er)?\b", r"\bquick(?:ly|er)?\b", r"\brapid(?:ly)?\b", r"\bhurried(?:ly)?\b"),
            "normal": (*_near("(?:normal|moderate|average|steady|medium)", "(?:pace|speed|rate|tempo)"),),
        },
        aliases={"medium": "normal", "moderate": "normal"},
    ),
    "volume": AttributeVocabulary(
        "volume",
        values={
            "quiet": (r"\bquiet(?:ly|er)?\b", r"\bsoft(?:ly|er)?\b", r"\bwhisper\w*", r"\bfaint\w*",
                      *_near("low", "volume")),
            "loud": (r"\bloud(?:ly|er)?\b", r"\bshout\w*", *_near("high", "volume")),
            "normal": (*_near("(?:normal|moderate|average|medium)", "volume"),),
        },
        aliases={"medium": "normal", "moderate": "normal", "soft": "quiet"},
    ),
}

_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|'[^'\n]{12,}'")


def response_text_for_matching(response: str, transcript: str | None = None) -> str:
    """Lower-cased response without quoted spans and without the row's transcript."""
    text = response.lower()
    if transcript and transcript.strip():
        text = text.replace(transcript.strip().lower(), " ")
    return _QUOTED.sub(" ", text)


def faithfulness_summary(
    rows: Iterable[Mapping[str, Any]],
    *,
    attributes: Sequence[str] | None = None,
    provenances: Sequence[str] = TRUSTED_PROVENANCE,
    response_field: str = "response",
    vocabularies: Mapping[str, AttributeVocabulary] | None = None,
) -> dict[str, Any]:
    """Per attribute: labelled rows, the share of responses stating the label and the share
    contradicting it, overall and per labelled value.

    ``attributes`` defaults to every attribute with a vocabulary (gender, accent, emotion, pitch,
    speaking_rate, volume). Rows whose label has another provenance, or a label the vocabulary
    cannot read, are not counted (``unreadable`` counts the latter).
    """
    vocabs = dict(vocabularies or DEFAULT_VOCABULARIES)
    names = list(attributes) if attributes else list(vocabs)
    stats: dict[str, dict[str, Any]] = {
        a: {"labelled": 0, "states": 0, "contradicts": 0, "unreadable": 0, "values": {}} for a in names
        if a in vocabs
    }
    total = 0
    for row in rows:
        response = row.get(response_field)
        if not isinstance(response, str):
            continue
        total += 1
        attrs = row.get("attributes") or {}
        prov = row.get("provenance") or {}
        text = response_text_for_matching(response, row.get("transcript"))
        for name, s in stats.items():
            if name not in attrs or prov.get(name) not in provenances:
                continue
            verdict = vocabs[name].judge(attrs[name], text)
            if verdict is None:
                s["unreadable"] += 1
                continue
            states, contradicts = verdict
            value = vocabs[name].canonical(attrs[name])
            per = s["values"].setdefault(value, {"labelled": 0, "states": 0, "contradicts": 0})
            for target in (s, per):
                target["labelled"] += 1
                target["states"] += int(states)
                target["contradicts"] += int(contradicts)
    for s in stats.values():
        for target in (s, *s["values"].values()):
            n = target["labelled"]
            target["states_share"] = round(target["states"] / n, 4) if n else None
            target["contradicts_share"] = round(target["contradicts"] / n, 4) if n else None
    return {"rows": total, "provenance": list(provenances), "attributes": stats}


def format_faithfulness_table(summary: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`faithfulness_summary` (one line per attribute and value)."""
    lines = [f"{'attribute':22s} {'labelled':>8s} {'states':>8s} {'contradicts':>12s}"]
    shown = False
    for name, s in summary["attributes"].items():
        if not s["labelled"]:
            continue
        shown = True
        lines.append(f"{name:22s} {s['labelled']:8d} {s['states_share']:8.1%} {s['contradicts_share']:12.1%}")
        for value, v in sorted(s["values"].items()):
            lines.append(f"  = {value:18s} {v['labelled']:8d} {v['states_share']:8.1%} {v['contradicts_share']:12.1%}")
    if not shown:
        lines.append(f"(no row has a labelled attribute with provenance {'/'.join(summary['provenance'])})")
    return "\n".join(lines)


def write_faithfulness(path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """Write the summary as JSON (atomically)."""
    from speechllm.utils.fs import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
