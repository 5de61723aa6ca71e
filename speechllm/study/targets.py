"""The forgetting study's target sources, for the same audio and questions (docs/forgetting.md).

``gold``        "human" answers written from the labels by a template
``self``        the frozen LLM's own answer to the seed description (DeSTA2)
``paraphrase``  the LLM rewrites the gold answer in its own words (``generate-replay``'s paraphrase)
``minchange``   the LLM's own answer with only wrong gender words corrected against the labels (a
                deterministic offline editor: a miniature of the GPT-4 minimum-change editor)
``verified``    self-output with a verifier: the LLM's answer when it states the labelled gender,
                else gold

The learned attribute is the speaker's gender: a binary label every synthetic speech row has,
whose words are easy to find and to correct deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

TARGET_SOURCES = ("gold", "self", "paraphrase", "minchange", "verified")

# The training and evaluation questions (one per row, by a seeded draw in the study).
QUESTIONS = (
    "Describe the speaker's voice in one sentence.",
    "Who is speaking, a man or a woman? Answer briefly.",
    "What can you tell about the speaker from their voice?",
)

# The minimum change: each gender word and the word that replaces it for the other gender ("her"
# becomes "his", the commoner reading; "him" and "his" both become "her").
_TO_MALE = {"woman": "man", "female": "male", "girl": "boy", "lady": "gentleman", "she": "he", "her": "his",
            "hers": "his", "herself": "himself", "women": "men"}
_TO_FEMALE = {"man": "woman", "male": "female", "boy": "girl", "gentleman": "lady", "he": "she", "him": "her",
              "his": "her", "himself": "herself", "men": "women"}
_WORDS = {"female": tuple(_TO_MALE), "male": tuple(_TO_FEMALE)}
_M, _F = r"(?:a |an )?(?:man|male|boy|gentleman)", r"(?:a |an )?(?:woman|female|girl|lady)"
# An echo of the question ("a man or a woman", "male or female") states no gender: it is skipped
# when reading an answer and left alone when correcting one.
_GENDER_RX = re.compile(
    rf"(?P<echo>\b(?:{_M} or {_F}|{_F} or {_M})\b)"
    r"|\b(?P<word>" + "|".join(sorted([*_TO_MALE, *_TO_FEMALE], key=len, reverse=True)) + r")\b",
    re.IGNORECASE)


def stated_gender(text: str) -> str | None:
    """The gender the first gender word of ``text`` states (``male``/``female``), or None; an
    echo of the question ("a man or a woman") is not a statement."""
    m = next((m for m in _GENDER_RX.finditer(text) if m.group("word")), None)
    if m is None:
        return None
    word = m.group("word").lower()
    return "female" if word in _WORDS["female"] else "male"


def gold_answer(row: dict[str, Any]) -> str:
    """The template answer written from a row's labels (gender, and pitch / rate when labelled)."""
    a = row.get("attributes", {})
    noun = {"female": "woman", "male": "man"}.get(str(a.get("gender", "")).lower(), "person")
    parts = [f"The speaker is a {noun}"]
    if a.get("pitch"):
        parts.append(f"with a {a['pitch']}-pitched voice")
    if a.get("speaking_rate"):
        parts.append(f"speaking at a {a['speaking_rate']} pace")
    return " ".join(parts[:2]) + (", " + parts[2] if len(parts) > 2 else "") + "."


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word.capitalize() if like[:1].isupper() else word


def minimum_change(answer: str, row: dict[str, Any]) -> str:
    """``answer`` with every gender word that contradicts the row's label swapped for its
    counterpart (woman -> man, she -> he, ...); an answer that states no gender gets the gold
    sentence in front. Deterministic: the same answer and labels give the same edit."""
    label = str(row.get("attributes", {}).get("gender", "")).lower()
    if label not in _WORDS:
        return answer
    if stated_gender(answer) is None:
        return f"{gold_answer(row)} {answer}".strip()
    swap = _TO_FEMALE if label == "female" else _TO_MALE

    def fix(m: re.Match) -> str:
        w = m.group("word")
        if w is None:
            return m.group(0)
        return _match_case(swap[w.lower()], w) if w.lower() in swap else w

    return _GENDER_RX.sub(fix, answer)


def verified(answer: str, row: dict[str, Any]) -> tuple[str, bool]:
    """(target, kept): the LLM's answer when its first gender word states the row's label, else gold."""
    label = str(row.get("attributes", {}).get("gender", "")).lower()
    ok = bool(answer.strip()) and stated_gender(answer) == label
    return (answer if ok else gold_answer(row)), ok


def self_answers(backend, rows: Sequence[dict[str, Any]], model_cfg, *, max_new_tokens: int = 64,
                 batch_size: int = 16) -> list[str]:
    """The frozen LLM's greedy answers with each row's seed description where its audio stands
    (as ``speechllm generate`` shows it: the shared chat layout and description renderer)."""
    from speechllm.describe.renderer import render_description
    from speechllm.generate.backend import SamplingParams
    from speechllm.models.chat_layout import substitute_audio_text

    params = SamplingParams(max_new_tokens=max_new_tokens)
    prompts = [backend.render(substitute_audio_text(r["messages"], [render_description(r)], model_cfg))
               for r in rows]
    out: list[str] = []
    for k in range(0, len(prompts), batch_size):
        out.extend(c.text.strip() for c in backend.generate(prompts[k:k + batch_size], params))
    return out


def paraphrases(backend, rows: Sequence[dict[str, Any]], questions: Sequence[str], work_file,
                config) -> list[str]:
    """The LLM's rewrite of each row's gold answer (``generate-replay`` paraphrase rows, resumable
    in ``work_file``); a row it left empty keeps its gold answer."""
    import json

    from speechllm.generate.replay import generate_replay

    items = [{"id": r["id"], "instruction": q, "answer": gold_answer(r)} for r, q in zip(rows, questions, strict=True)]
    generate_replay(work_file, "paraphrase", config, instructions=items, backend=backend, progress=False)
    got = {}
    with open(work_file, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                got[row["id"]] = row["response"].strip()
    return [got.get(r["id"]) or gold_answer(r) for r in rows]
