"""Verifiable instruction constraints (IFEval-style), dependency-free: speechllm's own rule set.

Speech-IFEval's own checkers, which its published rates depend on, are the ``speech-ifeval`` rule
set (:mod:`speechllm.eval.speech_ifeval`); :func:`check_constraint` takes either by name.

Each checker takes the response and keyword arguments and says whether the response follows the
instruction. Ids and keyword names follow IFEval's (``length_constraints:number_words`` with
``relation``/``num_words``, ...), so IFEval-derived data (VoiceBench's ``ifeval`` subset,
Speech-IFEval) loads unchanged; ``startend:start_checker`` is ours.

Sentences are counted with a regex splitter, not NLTK's punkt (whose data cannot be downloaded
offline): a sentence ends at ``.``, ``!`` or ``?`` (runs allowed, closing quotes/brackets kept)
followed by white space, except after common abbreviations (Mr., Dr., e.g., i.e., etc., vs.,
St., No.) and single initials; decimals like 3.14 do not split because no space follows the dot.
A trailing fragment without final punctuation counts as a sentence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

CheckFn = Callable[..., bool]
_REGISTRY: dict[str, tuple[CheckFn, str]] = {}

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e",
                  "no", "fig", "approx", "inc", "ltd", "co", "mt"}


def constraint(cid: str, description: str) -> Callable[[CheckFn], CheckFn]:
    """Register a checker under an IFEval-style id."""

    def deco(fn: CheckFn) -> CheckFn:
        _REGISTRY[cid] = (fn, description)
        return fn

    return deco


#: The constraint rule sets: ``speechllm`` (this module's checkers) and ``speech-ifeval``
#: (Speech-IFEval's own, :mod:`speechllm.eval.speech_ifeval`).
RULE_SETS = ("speechllm", "speech-ifeval")


def _rule_set(rules: str) -> dict[str, tuple[CheckFn, str]]:
    if rules == "speechllm":
        return _REGISTRY
    if rules == "speech-ifeval":
        from speechllm.eval import speech_ifeval

        return speech_ifeval.CHECKERS
    raise ValueError(f"unknown constraint rules {rules!r}; known: {', '.join(RULE_SETS)}")


def list_constraints(rules: str = "speechllm") -> dict[str, str]:
    """Every constraint id of a rule set with a one-line description."""
    return {cid: desc for cid, (_, desc) in sorted(_rule_set(rules).items())}


def is_supported(cid: str, rules: str = "speechllm") -> bool:
    return cid in _rule_set(rules)


def check_constraint(cid: str, response: str, kwargs: dict[str, Any] | None = None, *,
                     rules: str = "speechllm") -> bool | None:
    """Whether ``response`` follows constraint ``cid`` under a rule set; None when the set does
    not have the id. ``None``-valued kwargs (IFEval data carries many) are dropped."""
    if rules == "speech-ifeval":
        from speechllm.eval import speech_ifeval

        return speech_ifeval.check(cid, response, kwargs)
    registry = _rule_set(rules)
    if cid not in registry:
        return None
    fn = registry[cid][0]
    clean = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return bool(fn(response, **clean))


# --------------------------------------------------------------------------- text units


def split_sentences(text: str) -> list[str]:
    """Sentences by the documented regex rule (see the module docstring)."""
    pieces: list[str] = []
    start = 0
    for m in re.finditer(r"[.!?]+[\"')\]”’]*(?=\s+|$)", text):
        end = m.end()
        before = text[start:m.start()]
        last_word = re.findall(r"[\w.]+$", before)
        if m.group(0).startswith(".") and last_word:
            word = last_word[0].lower().rstrip(".")
            if word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                continue
        piece = text[start:end].strip()
        if piece:
            pieces.append(piece)
        start = end
    tail = text[start:].strip()
    if tail:
        pieces.append(tail)
    return pieces


def count_words(text: str) -> int:
    """Words = runs of letters/digits (apostrophes and hyphens inside a word keep it whole)."""
    return len(re.findall(r"\w+(?:['’-]\w+)*", text))


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by the markdown divider ``***`` (IFEval's rule)."""
    return [p for p in re.split(r"\s?\*\*\*\s?", text)]


def _compare(value: int, relation: str, target: int) -> bool:
    relation = relation.strip().lower()
    if relation in ("less than", "<"):
        return value < target
    if relation in ("at least", ">="):
        return value >= target
    if relation in ("at most", "<="):
        return value <= target
    if relation in ("exactly", "=", "=="):
        return value == target
    if relation in ("more than", ">"):
        return value > target
    raise ValueError(f"unknown relation {relation!r} (less than, at least, at most, exactly, more than)")


# --------------------------------------------------------------------------- checkers


@constraint("change_case:english_lowercase", "the whole response is in lower case")
def _lowercase(response: str) -> bool:
    return response == response.lower() and any(c.isalpha() for c in response)


@constraint("change_case:english_capital", "the whole response is in capital letters")
def _uppercase(response: str) -> bool:
    return response == response.upper() and any(c.isalpha() for c in response)


@constraint("change_case:capital_word_frequency", "words in ALL CAPS appear a number of times")
def _capital_words(response: str, capital_frequency: int, capital_relation: str) -> bool:
    words = re.findall(r"\b[A-Z]{2,}\b", response)
    return _compare(len(words), capital_relation, int(capital_frequency))


@constraint("length_constraints:number_words", "word count relative to a number")
def _num_words(response: str, num_words: int, relation: str) -> bool:
    return _compare(count_words(response), relation, int(num_words))


@constraint("length_constraints:number_sentences", "sentence count relative to a number")
def _num_sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _compare(len(split_sentences(response)), relation, int(num_sentences))


@constraint("length_constraints:number_paragraphs", "exactly N paragraphs separated by ***")
def _num_paragraphs(response: str, num_paragraphs: int) -> bool:
    paragraphs = split_paragraphs(response)
    if any(not p.strip() for i, p in enumerate(paragraphs) if 0 < i < len(paragraphs) - 1):
        return False  # an empty paragraph in the middle
    return len([p for p in paragraphs if p.strip()]) == int(num_paragraphs)


@constraint("length_constraints:nth_paragraph_first_word",
            "N paragraphs (blank-line separated), paragraph i starts with a given word")
def _nth_paragraph(response: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", response) if p.strip()]
    if len(paragraphs) != int(num_paragraphs) or not 1 <= int(nth_paragraph) <= len(paragraphs):
        return False
    words = re.findall(r"[\w'’-]+", paragraphs[int(nth_paragraph) - 1])
    return bool(words) and words[0].lower() == first_word.lower()


@constraint("detectable_format:json_format", "the response is valid JSON (a ```json fence allowed)")
def _json(response: str) -> bool:
    text = response.strip()
    fence = re.fullmatch(r"```(?:json|JSON)?\s*(.*?)\s*```", text, flags=re.DOTALL)
    if fence:
        text = fence.group(1)
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@constraint("detectable_format:number_bullet_lists", "exactly N markdown bullet points (* or -)")
def _bullets(response: str, num_bullets: int) -> bool:
    bullets = re.findall(r"^\s*[*-]\s+\S", response, flags=re.MULTILINE)
    return len(bullets) == int(num_bullets)


@constraint("detectable_format:title", "a title wrapped in double angular brackets, <<title>>")
def _title(response: str) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", response))


@constraint("detectable_format:number_highlighted_sections", "at least N *highlighted* sections")
def _highlights(response: str, num_highlights: int) -> bool:
    spans = re.findall(r"\*[^\n*]+\*", response) + re.findall(r"\*\*[^\n*]+\*\*", response)
    return sum(1 for s in spans if s.strip("* ")) >= int(num_highlights)


@constraint("detectable_format:multiple_sections", "N sections, each starting with a marker like 'SECTION 1'")
def _sections(response: str, section_spliter: str, num_sections: int) -> bool:
    parts = re.split(r"\s?" + re.escape(section_spliter) + r"\s?\d+\s?", response)
    return len(parts) - 1 >= int(num_sections)


@constraint("detectable_format:constrained_response", "the answer is one of: My answer is yes/no/maybe.")
def _constrained(response: str) -> bool:
    options = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    return any(o in response.strip() for o in options)


@constraint("detectable_content:number_placeholders", "at least N [placeholders] in square brackets")
def _placeholders(response: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[[^\[\]\n]+\]", response)) >= int(num_placeholders)


@constraint("detectable_content:postscript", "ends with a postscript starting with a marker (P.S.)")
def _postscript(response: str, postscript_marker: str = "P.S.") -> bool:
    marker = postscript_marker.strip()
    if marker.upper() == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker.upper() == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return re.search(pattern, response.lower(), flags=re.MULTILINE) is not None


@constraint("keywords:existence", "every given keyword appears")
def _keywords(response: str, keywords: list[str]) -> bool:
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in keywords)


@constraint("keywords:forbidden_words", "none of the given words appears (whole words, any case)")
def _forbidden(response: str, forbidden_words: list[str]) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", response, flags=re.IGNORECASE)
                   for w in forbidden_words)


@constraint("keywords:frequency", "a keyword appears a number of times")
def _keyword_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    count = len(re.findall(r"\b" + re.escape(keyword) + r"\b", response, flags=re.IGNORECASE))
    return _compare(count, relation, int(frequency))


@constraint("keywords:letter_frequency", "a letter appears a number of times")
def _letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(response.lower().count(letter.lower()), let_relation, int(let_frequency))


@constraint("punctuation:no_comma", "no commas at all")
def _no_comma(response: str) -> bool:
    return "," not in response and "，" not in response


@constraint("startend:quotation", "the whole response is wrapped in double quotes")
def _quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] in "\"“" and text[-1] in "\"”"


@constraint("startend:end_checker", "ends with an exact phrase (nothing after it)")
def _end_phrase(response: str, end_phrase: str) -> bool:
    return response.strip().strip("\"”").lower().endswith(end_phrase.strip().lower())


@constraint("startend:start_checker", "starts with an exact phrase")
def _start_phrase(response: str, start_phrase: str) -> bool:
    return response.strip().lstrip("\"“").lower().startswith(start_phrase.strip().lower())


@constraint("combination:two_responses", "two different responses separated by ******")
def _two_responses(response: str) -> bool:
    parts = [p.strip() for p in response.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


@constraint("combination:repeat_prompt", "repeats the request word for word first, then answers")
def _repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    return response.strip().lower().startswith(prompt_to_repeat.strip().lower())
