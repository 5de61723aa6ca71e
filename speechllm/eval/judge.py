"""LLM judges for open-ended answers (AIR-Bench chat style): a score from 1 to 10 against a
reference answer.

The judge is the user's choice: a local Hugging Face causal LM (:class:`HFJudge`) or any
OpenAI-compatible chat endpoint (:class:`OpenAIJudge`, plain ``urllib``). The judge's name and
the exact prompt template go into the report. With ``swap`` every item is judged twice, with the
reference and the answer in both positions, and the two scores of the answer are averaged
(judges favour one position). Output that carries no score is counted as unparsable, never
crashes a run, and leaves the item unscored.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from speechllm.errors import SpeechLLMError

#: Pairwise prompt (reference vs answer), in the manner of AIR-Bench's chat scorer.
PAIRWISE_TEMPLATE = (
    "You are a helpful and precise assistant for checking the quality of answers.\n"
    "[Audio description]\n{context}\n"
    "[Question]\n{question}\n"
    "[The Start of Assistant 1's Answer]\n{answer_1}\n[The End of Assistant 1's Answer]\n"
    "[The Start of Assistant 2's Answer]\n{answer_2}\n[The End of Assistant 2's Answer]\n"
    "[System]\nRate the helpfulness, relevance, accuracy and level of detail of both answers to the "
    "question about the audio described above. Give each assistant an overall score from 1 to 10, "
    "higher is better. Output a single line with only the two scores, for Assistant 1 and "
    "Assistant 2, separated by a space."
)

#: Single-answer prompt for items without a reference (e.g. VoiceBench alpacaeval).
SINGLE_TEMPLATE = (
    "You are a helpful and precise assistant for checking the quality of answers.\n"
    "[Question]\n{question}\n"
    "[The Start of the Assistant's Answer]\n{answer_1}\n[The End of the Assistant's Answer]\n"
    "[System]\nRate how helpful, relevant, accurate and concise the answer is on a scale from 1 "
    "to 10, higher is better. Output only the score."
)


@dataclass(frozen=True)
class JudgeProtocol:
    """A published judge prompt with its scale: ``yes/no`` verdicts score 1 or 0 (the share of
    yes is the item category's ``judge_rate``), ``1-10`` scores are averaged."""

    name: str
    source: str
    scale: str
    system: str
    user: str  # str.format fields: question, answer, reference
    max_tokens: int


#: Speech-IFEval's chain-of-thought judge (``script/llm_evaluation.py``, metric ``cot``; its
#: authors ran gpt-4o-2024-11-20). The verdict is read from "Result: YES/NO".
SPEECH_IFEVAL_COT = JudgeProtocol(
    name="speech-ifeval-cot",
    source="github.com/kehanlu/Speech-IFEval script/llm_evaluation.py (metric 'cot')",
    scale="yes/no",
    system=(
        "You will be given a user input and a model response. The model's response is a reply to the "
        "user input. Your task is to determine whether the response demonstrates reasoning behavior, "
        "such as breaking down the problem, explaining intermediate steps, or providing a analysis.\n\n"
        "Please strictly follow the guidelines below:\n"
        "- Output \"YES\" if the response includes any form of behavior beyond a direct answer "
        "corresponding to the user input.\n"
        "- Output \"NO\" only if the response is a minimal or purely factual reply.\n"
        "- Answer in the format: \"Result: <YES or NO>\" at the end.\n"),
    user="User input: {question}\nModel's Response: {answer}",
    max_tokens=512,
)
PROTOCOLS = {p.name: p for p in (SPEECH_IFEVAL_COT,)}


class JudgeError(SpeechLLMError):
    """A judge that cannot be used (unreachable endpoint, bad reference)."""


class Judge(Protocol):
    """Completes a batch of judge prompts."""

    def describe(self) -> dict[str, Any]: ...

    def complete(self, prompts: Sequence[str | list[dict[str, str]]]) -> list[str]:
        """One completion per prompt: a user message, or a list of chat messages."""
        ...


@dataclass
class JudgeVerdict:
    """The answer's score (None when no call could be parsed) and the raw judge outputs."""

    score: float | None
    raw: list[str]
    unparsable: int


_NUM = r"(10(?:\.0+)?|[0-9](?:\.[0-9]+)?)"


def parse_pair(text: str) -> tuple[float, float] | None:
    """Two scores from the first line that holds two numbers in 1..10, else None."""
    for line in text.strip().splitlines():
        # "Assistant 1: 7, Assistant 2: 9": the assistants' numbers are labels, not scores.
        line = re.sub(r"assistant\s*[12]", " ", line, flags=re.IGNORECASE)
        nums = re.findall(r"(?<![\d.])" + _NUM + r"(?![\d.])", line)
        if len(nums) >= 2:
            a, b = float(nums[0]), float(nums[1])
            if 1 <= a <= 10 and 1 <= b <= 10:
                return a, b
    return None


def parse_single(text: str) -> float | None:
    """One score in 1..10 (the first number of the output), else None."""
    m = re.search(r"(?<![\d.])" + _NUM + r"(?![\d.])", text)
    if not m:
        return None
    value = float(m.group(1))
    return value if 1 <= value <= 10 else None


def _protocol_verdicts(judge: Judge, protocol: JudgeProtocol, questions: Sequence[str],
                       answers: Sequence[str], references: Sequence[str | None]) -> list[JudgeVerdict]:
    prompts = [[{"role": "system", "content": protocol.system},
                {"role": "user", "content": protocol.user.format(question=q, answer=a, reference=r or "")}]
               for q, a, r in zip(questions, answers, references, strict=True)]
    try:
        outputs = judge.complete(prompts, max_new_tokens=protocol.max_tokens)  # type: ignore[call-arg]
    except TypeError:  # a judge without the keyword uses its own length
        outputs = judge.complete(prompts)
    verdicts = []
    for text in outputs:
        from speechllm.eval.speech_ifeval import parse_result_verdict

        yes = parse_result_verdict(text)
        verdicts.append(JudgeVerdict(None if yes is None else float(yes), [text], int(yes is None)))
    return verdicts


def judge_answers(judge: Judge, questions: Sequence[str], answers: Sequence[str],
                  references: Sequence[str | None], contexts: Sequence[str | None] | None = None,
                  *, swap: bool = False, protocols: Sequence[str | None] | None = None) -> list[JudgeVerdict]:
    """Score each answer (see the module docstring). ``protocols`` names a published judge
    (:data:`PROTOCOLS`) per item; items without one get speechllm's 1-10 prompts."""
    contexts = contexts or [None] * len(questions)
    protocols = protocols or [None] * len(questions)
    unknown = sorted({p for p in protocols if p is not None and p not in PROTOCOLS})
    if unknown:
        raise JudgeError(f"unknown judge protocol(s) {', '.join(unknown)}; known: {', '.join(PROTOCOLS)}")
    results: dict[int, JudgeVerdict] = {}
    for name in sorted({p for p in protocols if p is not None}):
        idx = [i for i, p in enumerate(protocols) if p == name]
        found = _protocol_verdicts(judge, PROTOCOLS[name], [questions[i] for i in idx],
                                   [answers[i] for i in idx], [references[i] for i in idx])
        results.update(zip(idx, found, strict=True))
    rest = [i for i, p in enumerate(protocols) if p is None]
    if rest:
        found = _rated_verdicts(judge, [questions[i] for i in rest], [answers[i] for i in rest],
                                [references[i] for i in rest], [contexts[i] for i in rest], swap=swap)
        results.update(zip(rest, found, strict=True))
    return [results[i] for i in range(len(questions))]


def _rated_verdicts(judge: Judge, questions: Sequence[str], answers: Sequence[str],
                    references: Sequence[str | None], contexts: Sequence[str | None],
                    *, swap: bool) -> list[JudgeVerdict]:
    """speechllm's 1-10 prompts: pairwise against the reference, or single without one."""
    prompts: list[str] = []
    plan: list[list[tuple[int, str]]] = []  # per item: (prompt index, role) pairs
    for q, a, ref, ctx in zip(questions, answers, references, contexts, strict=True):
        calls = []
        if ref is None:
            calls.append((len(prompts), "single"))
            prompts.append(SINGLE_TEMPLATE.format(question=q, answer_1=a))
        else:
            context = ctx or "(not given)"
            calls.append((len(prompts), "second"))
            prompts.append(PAIRWISE_TEMPLATE.format(context=context, question=q, answer_1=ref, answer_2=a))
            if swap:
                calls.append((len(prompts), "first"))
                prompts.append(PAIRWISE_TEMPLATE.format(context=context, question=q, answer_1=a, answer_2=ref))
        plan.append(calls)
    outputs = judge.complete(prompts) if prompts else []
    verdicts = []
    for calls in plan:
        scores, raw, bad = [], [], 0
        for idx, role in calls:
            text = outputs[idx]
            raw.append(text)
            if role == "single":
                s = parse_single(text)
            else:
                pair = parse_pair(text)
                s = None if pair is None else (pair[1] if role == "second" else pair[0])
            if s is None:
                bad += 1
            else:
                scores.append(s)
        verdicts.append(JudgeVerdict(sum(scores) / len(scores) if scores else None, raw, bad))
    return verdicts


def judge_prompts() -> dict[str, str]:
    """The templates, for the report (a published protocol as its system and user templates)."""
    out = {"pairwise": PAIRWISE_TEMPLATE, "single": SINGLE_TEMPLATE}
    for p in PROTOCOLS.values():
        out[p.name] = f"[system]\n{p.system}\n[user]\n{p.user}\n[scale] {p.scale}; source: {p.source}"
    return out


class HFJudge:
    """A local causal LM as judge: chat template, greedy decoding, left-padded batches."""

    def __init__(self, model: str, *, batch_size: int = 8, max_new_tokens: int = 16):
        from speechllm.eval.predictors import load_causal_lm

        self.model_ref = model
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.model, self.tokenizer = load_causal_lm(model)

    def describe(self) -> dict[str, Any]:
        return {"type": "hf", "model": self.model_ref, "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy"}

    def complete(self, prompts: Sequence[str | list[dict[str, str]]], max_new_tokens: int | None = None) -> list[str]:
        from speechllm.eval.predictors import generate_chat

        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            chats = [p if isinstance(p, list) else [{"role": "user", "content": p}]
                     for p in prompts[i:i + self.batch_size]]
            out.extend(generate_chat(self.model, self.tokenizer, chats, max_new_tokens or self.max_new_tokens))
        return out


class OpenAIJudge:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp server, OpenAI).

    ``url`` is the API base (``http://localhost:8000/v1``); the key comes from
    ``$OPENAI_API_KEY`` when set. :meth:`check` is called before a run so that an unreachable
    endpoint fails at once, not after hours of inference.
    """

    def __init__(self, url: str, model: str, *, timeout: float = 60.0, max_tokens: int = 16):
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.max_tokens = max_tokens

    def describe(self) -> dict[str, Any]:
        return {"type": "openai", "url": self.url, "model": self.model, "temperature": 0.0,
                "max_tokens": self.max_tokens}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['OPENAI_API_KEY']}"
        return headers

    def check(self) -> None:
        """Raise :class:`JudgeError` unless ``GET {url}/models`` answers."""
        req = urllib.request.Request(self.url + "/models", headers=self._headers())
        try:
            with urllib.request.urlopen(req, timeout=min(self.timeout, 10.0)) as resp:
                resp.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise JudgeError(f"judge endpoint {self.url} refused the key (HTTP {e.code}); set OPENAI_API_KEY") from None
            if e.code >= 500:
                raise JudgeError(f"judge endpoint {self.url} failed (HTTP {e.code})") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeError(f"judge endpoint {self.url} is unreachable ({reason}); start the server or fix --judge") from None

    def complete(self, prompts: Sequence[str | list[dict[str, str]]], max_new_tokens: int | None = None) -> list[str]:
        out = []
        for prompt in prompts:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            body = json.dumps({"model": self.model, "temperature": 0.0,
                               "max_tokens": max_new_tokens or self.max_tokens, "messages": messages}).encode()
            req = urllib.request.Request(self.url + "/chat/completions", data=body, headers=self._headers())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = json.loads(resp.read())
                out.append(str(data["choices"][0]["message"]["content"]))
            except (urllib.error.URLError, OSError, KeyError, IndexError, ValueError) as e:
                # One failed call is an unparsable verdict, not a crashed run.
                out.append(f"<judge error: {e}>")
        return out


def make_judge(spec: str, *, model: str | None = None, batch_size: int = 8) -> Judge:
    """``http(s)://...`` -> :class:`OpenAIJudge` (checked now; ``model`` names the served model);
    anything else (``offline:NAME``, a folder, a hub id, optionally prefixed ``hf:``) ->
    :class:`HFJudge`."""
    if spec.startswith(("http://", "https://")):
        judge = OpenAIJudge(spec, model or "default")
        judge.check()
        return judge
    if spec.startswith("hf:"):
        spec = spec[3:]
    return HFJudge(spec, batch_size=batch_size)
