"""Per-item scoring under a named scoring profile (:data:`PROFILES`: each benchmark's official rule
by default, speechllm's own and the variants by name), and aggregation into benchmark metrics.

Each kind has one primary metric (reported per category and plotted):

========================  ======================  =========================================
kind                      primary metric          notes
========================  ======================  =========================================
label                     accuracy                scorer: desta (default), exact, option_letter,
                                                  single_option (desta, but an answer naming
                                                  another option too is wrong); answers naming
                                                  several options counted (hedged)
multiple_choice           accuracy                lenient parser or MMAU's string_match (by
                                                  profile); unparsed answers counted (and wrong)
asr                       wer (lower is better)   corpus-level: total errors / total words; cer too
open                      judge_score (1-10)      unparsable verdicts counted, item unscored;
                          judge_rate (yes/no)     for a published yes/no judge protocol
instruction               prompt_accuracy         all constraints followed; instruction_accuracy too
refusal                   refusal_rate            keyword scorer
========================  ======================  =========================================

Rates (accuracy, prompt accuracy, refusal rate) carry a 95% Wilson interval (``ci95``); WER a
95% bootstrap interval over items (1000 resamples, seed 0). Label and multiple-choice categories
carry their baselines: ``chance`` (the mean of 1 / number of options over the items, when the items
list options) and ``majority`` (the share of items whose reference is the most common one: what
always giving that answer scores), so a small-n score can be read against both.

The **target score** of a run (the y axis of the learning-vs-forgetting plot) is the mean over
categories of the primary metric mapped to [0, 1], higher better: accuracy as is, 1 - min(WER, 1),
judge score / 10, prompt accuracy, refusal rate.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from speechllm.eval.answer_match import (
    DESTA25_ANSWER_PREFIX,
    LETTERS,
    char_errors,
    desta_label_match,
    exact_match,
    is_refusal,
    label_normalises_empty,
    mmau_pick,
    mmau_string_match,
    option_letter_match,
    parse_choice,
    word_errors,
)
from speechllm.eval.constraints import check_constraint
from speechllm.eval.items import (
    KIND_ASR,
    KIND_CHOICE,
    KIND_INSTRUCTION,
    KIND_LABEL,
    KIND_OPEN,
    KIND_REFUSAL,
    BenchItem,
)

PRIMARY_METRIC = {
    KIND_LABEL: "accuracy", KIND_CHOICE: "accuracy", KIND_ASR: "wer", KIND_OPEN: "judge_score",
    KIND_INSTRUCTION: "prompt_accuracy", KIND_REFUSAL: "refusal_rate",
}


@dataclass(frozen=True)
class ScoringProfile:
    """A named way of scoring a benchmark's answers, recorded in the report (``scoring``).

    Every benchmark scores with its authors' rule by default (the loader names it); the others
    stay available by name (``speechllm eval --scoring BENCH=PROFILE``). Fields, by item kind:

    - ``choice_rule`` (multiple choice): ``lenient``, speechllm's parser
      (:func:`~speechllm.eval.answer_match.parse_choice`: answer format, option letter, choice text),
      or ``mmau``, MMAU's ``string_match`` (:func:`~speechllm.eval.answer_match.mmau_string_match`);
    - ``answer_prefix``: text removed (every occurrence, case-sensitive) before the choice rule
      reads the answer, as DeSTA2.5 removes ``The correct answer is: `` for MMAU;
    - ``empty_label`` (label items scored by DeSTA's rule): ``desta`` credits any answer when the
      label normalises to nothing, as DeSTA does; ``raw`` compares such labels un-normalised;
    - ``constraint_rules`` (instruction items): ``speechllm`` or ``speech-ifeval`` checkers.
    """

    name: str
    description: str
    choice_rule: str = "lenient"
    answer_prefix: str | None = None
    empty_label: str = "desta"
    constraint_rules: str = "speechllm"


PROFILES: dict[str, ScoringProfile] = {p.name: p for p in (
    ScoringProfile("speechllm", "speechllm's own rules: multiple choice parsed leniently (answer "
                   "format, option letter, choice text), DeSTA's label rule, speechllm's "
                   "constraint checkers"),
    ScoringProfile("mmau-official", "MMAU's evaluation.py string_match on the answer with DeSTA2.5's "
                   f"{DESTA25_ANSWER_PREFIX.strip()!r} removed (the published MMAU figures)",
                   choice_rule="mmau", answer_prefix=DESTA25_ANSWER_PREFIX),
    ScoringProfile("mmau-string-match", "MMAU's evaluation.py string_match on the whole answer",
                   choice_rule="mmau"),
    ScoringProfile("desta", "DeSTA's consecutive_words_accuracy (Whisper basic normaliser; a label "
                   "that normalises to nothing credits any answer, as DeSTA's published figures do)"),
    ScoringProfile("desta-raw-empty", "DeSTA's consecutive_words_accuracy, but a label that "
                   "normalises to nothing ('(A)', '[laughter]') is matched un-normalised",
                   empty_label="raw"),
    ScoringProfile("speech-ifeval", "Speech-IFEval's evaluation_main (strict): its own constraint "
                   "checkers, an empty answer fails every constraint",
                   constraint_rules="speech-ifeval"),
)}


def get_profile(profile: str | ScoringProfile | None) -> ScoringProfile:
    """A profile by name (None: ``speechllm``); unknown names raise listing the known ones."""
    if isinstance(profile, ScoringProfile):
        return profile
    name = profile or "speechllm"
    if name not in PROFILES:
        from speechllm.eval.items import BenchmarkError

        raise BenchmarkError(f"unknown scoring profile {name!r}; known: {', '.join(PROFILES)}")
    return PROFILES[name]


BOOTSTRAP_RESAMPLES = 1000
Z_95 = 1.959964


def wilson_interval(successes: int, n: int, z: float = Z_95) -> list[float] | None:
    """The Wilson score interval of a binomial proportion (95% by default); None for n = 0.
    Unlike the normal approximation it stays inside [0, 1] and is honest at small n."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_wer_interval(rows: Sequence[dict[str, Any]], resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = 0) -> list[float] | None:
    """95% percentile-bootstrap interval of the corpus WER, resampling items."""
    import numpy as np

    errors = np.array([r["word_errors"] for r in rows], dtype=np.float64)
    words = np.array([r["words"] for r in rows], dtype=np.float64)
    if len(rows) < 2 or words.sum() == 0:
        return None
    picks = np.random.default_rng(seed).integers(0, len(rows), size=(resamples, len(rows)))
    totals = words[picks].sum(axis=1)
    rates = errors[picks].sum(axis=1) / np.where(totals > 0, totals, np.nan)
    lo, hi = np.nanpercentile(rates, [2.5, 97.5])
    return [float(lo), float(hi)]


def _baselines(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Chance and majority-answer baselines of label / multiple-choice rows."""
    out: dict[str, Any] = {}
    options = [r.get("n_choices") for r in rows]
    if rows and all(options):
        out["chance"] = sum(1.0 / k for k in options) / len(rows)
    refs = [str(r["reference"]).strip().lower() for r in rows if r.get("reference") is not None]
    if refs and len(refs) == len(rows):
        counts = Counter(refs)
        answer, count = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        out["majority"] = count / len(rows)
        out["majority_answer"] = answer
    return out


def score_item(item: BenchItem, response: str, profile: str | ScoringProfile | None = None) -> dict[str, Any]:
    """A score row for one answer under a scoring profile (default ``speechllm``). ``correct`` is
    a bool for every kind but asr and open."""
    rules = get_profile(profile)
    row: dict[str, Any] = {"id": item.id, "kind": item.kind, "category": item.category}
    if item.reference is not None:
        row["reference"] = item.reference
    if item.choices:
        row["n_choices"] = len(item.choices)
    for key, value in item.metadata.items():
        if isinstance(value, (str, int, float, bool)) and key not in ("source",):
            row.setdefault("meta", {})[key] = value
    if item.kind == KIND_LABEL:
        scorer = item.scorer or "desta"
        ref = item.reference or ""
        if scorer == "exact":
            ok = exact_match(response, ref)
        elif scorer == "option_letter":
            ok = option_letter_match(response, ref, len(item.choices) or None)
        elif scorer == "single_option":
            ok = desta_label_match(response, ref) and not any(
                desta_label_match(response, c) for c in item.choices if c != ref)
        else:
            ok = desta_label_match(response, ref, empty_label=rules.empty_label)
        row.update(correct=ok, scorer=scorer)
        if scorer in ("desta", "single_option") and label_normalises_empty(ref):
            row["empty_label"] = True  # DeSTA's rule credits any answer: counted in the report
        if item.choices and scorer in ("desta", "single_option"):
            # DeSTA's rule credits an answer that lists every option; flag such hedges.
            named = sum(desta_label_match(response, c) for c in item.choices)
            row["hedged"] = named > 1
    elif item.kind == KIND_CHOICE:
        answer = response.replace(rules.answer_prefix, "") if rules.answer_prefix else response
        if rules.choice_rule == "mmau":
            picked = mmau_pick(answer, item.choices)
            row.update(correct=mmau_string_match(item.reference or "", answer, item.choices),
                       picked=None if picked is None else LETTERS[picked], parse="mmau",
                       unparsed=picked is None)
        else:
            parsed = parse_choice(answer, item.choices)
            answer_index = item.choices.index(item.reference) if item.reference in item.choices else None
            row.update(correct=parsed.index is not None and parsed.index == answer_index,
                       picked=None if parsed.index is None else LETTERS[parsed.index],
                       parse=parsed.method, unparsed=parsed.index is None)
    elif item.kind == KIND_ASR:
        w = word_errors(item.reference or "", response)
        c = char_errors(item.reference or "", response)
        row.update(word_errors=w.errors, words=w.reference_length, char_errors=c.errors,
                   chars=c.reference_length, wer=w.rate)
    elif item.kind == KIND_INSTRUCTION:
        results = [check_constraint(c["id"], response, c.get("kwargs"), rules=rules.constraint_rules)
                   for c in item.constraints]
        supported = [r for r in results if r is not None]
        row.update(constraints=[{"id": c["id"], "followed": r} for c, r in zip(item.constraints, results, strict=True)],
                   correct=bool(supported) and all(supported) if supported else None,
                   unsupported=sum(r is None for r in results))
    elif item.kind == KIND_REFUSAL:
        row.update(correct=is_refusal(response), refused=is_refusal(response))
    elif item.kind == KIND_OPEN:
        row.update(score=None)  # filled in by the judge
        protocol = item.metadata.get("judge_protocol")
        if protocol:
            from speechllm.eval.judge import PROTOCOLS

            row.update(judge_protocol=protocol, scale=PROTOCOLS[protocol].scale if protocol in PROTOCOLS else None)
    return row


def _kind_metrics(kind: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    if kind in (KIND_LABEL, KIND_CHOICE):
        right = sum(bool(r.get("correct")) for r in rows)
        out["accuracy"] = right / n if n else None
        out["ci95"] = wilson_interval(right, n)
        out.update(_baselines(rows))
        if kind == KIND_LABEL and any("hedged" in r for r in rows):
            out["hedged"] = sum(bool(r.get("hedged")) for r in rows)
        if kind == KIND_LABEL and any(r.get("empty_label") for r in rows):
            out["empty_labels"] = sum(bool(r.get("empty_label")) for r in rows)
        if kind == KIND_CHOICE:
            out["unparsed"] = sum(bool(r.get("unparsed")) for r in rows)
    elif kind == KIND_ASR:
        words = sum(r["words"] for r in rows)
        chars = sum(r["chars"] for r in rows)
        out["wer"] = sum(r["word_errors"] for r in rows) / words if words else None
        out["cer"] = sum(r["char_errors"] for r in rows) / chars if chars else None
        out["ci95"] = bootstrap_wer_interval(rows)
    elif kind == KIND_OPEN:
        scored = [r["score"] for r in rows if r.get("score") is not None]
        if rows and all(r.get("scale") == "yes/no" for r in rows):
            # A yes/no judge (Speech-IFEval's chain-of-thought): the share of yes, unscored
            # items counted as no, as Speech-IFEval's rate counts every item.
            out["judge_rate"] = sum(scored) / n if n else None
        out["judge_score"] = sum(scored) / len(scored) if scored else None
        out["scored"] = len(scored)
        out["unparsable_verdicts"] = sum(int(r.get("unparsable", 0)) for r in rows)
        out["unscored"] = n - len(scored)
    elif kind == KIND_INSTRUCTION:
        judged = [r for r in rows if r.get("correct") is not None]
        followed = sum(bool(r["correct"]) for r in judged)
        out["prompt_accuracy"] = followed / len(judged) if judged else None
        out["ci95"] = wilson_interval(followed, len(judged))
        checks = [c["followed"] for r in rows for c in r.get("constraints", []) if c["followed"] is not None]
        out["instruction_accuracy"] = sum(checks) / len(checks) if checks else None
        out["unsupported_constraints"] = sum(int(r.get("unsupported", 0)) for r in rows)
    elif kind == KIND_REFUSAL:
        refused = sum(bool(r.get("refused")) for r in rows)
        out["refusal_rate"] = refused / n if n else None
        out["ci95"] = wilson_interval(refused, n)
    return out


def aggregate(rows: Iterable[dict[str, Any]], breakdown_keys: Sequence[str] = ()) -> dict[str, Any]:
    """Metrics by kind, by category (primary metric) and by metadata breakdown keys."""
    rows = list(rows)
    by_kind: dict[str, list] = defaultdict(list)
    by_cat: dict[str, list] = defaultdict(list)
    kinds_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        kinds_of[r["category"]].add(r["kind"])
    for r in rows:
        by_kind[r["kind"]].append(r)
        # A category holding several kinds is split by kind: their metrics do not mix.
        key = r["category"] if len(kinds_of[r["category"]]) == 1 else f"{r['category']}/{r['kind']}"
        by_cat[key].append(r)
    categories = {}
    for cat, cat_rows in sorted(by_cat.items()):
        kind = cat_rows[0]["kind"]
        metrics = _kind_metrics(kind, cat_rows)
        metric = "judge_rate" if "judge_rate" in metrics else PRIMARY_METRIC[kind]
        categories[cat] = {"kind": kind, "metric": metric, "value": metrics.get(metric), **metrics}
    breakdowns: dict[str, dict[str, Any]] = {}
    for key in breakdown_keys:
        groups: dict[str, list] = defaultdict(list)
        for r in rows:
            value = (r.get("meta") or {}).get(key)
            if value is not None and r.get("correct") is not None:
                groups[str(value)].append(bool(r["correct"]))
        if groups:
            breakdowns[key] = {v: {"n": len(g), "accuracy": sum(g) / len(g)} for v, g in sorted(groups.items())}
    return {"by_kind": {k: _kind_metrics(k, v) for k, v in sorted(by_kind.items())},
            "by_category": categories, "breakdowns": breakdowns,
            "target_score": target_score(categories)}


def normalized_primary(kind: str, value: float | None, metric: str | None = None) -> float | None:
    """A category's primary metric on [0, 1], higher better (see the module docstring)."""
    if value is None:
        return None
    if kind == KIND_ASR:
        return 1.0 - min(value, 1.0)
    if kind == KIND_OPEN and metric != "judge_rate":
        return value / 10.0
    return value


def target_score(categories: dict[str, dict[str, Any]]) -> float | None:
    values = [normalized_primary(c["kind"], c["value"], c.get("metric")) for c in categories.values()]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
