"""The retention suite: how much of the base LLM's text behaviour a trained model keeps.

- **KL-to-base**: forward KL(base || tuned), the base as reference, averaged over answer tokens,
  teacher-forced on the base's own greedy answers to held-out text prompts;
- **dNLL**: mean per-token NLL of those answers under the tuned model minus under the base;
- **top-1 agreement**: share of answer positions where both models' most likely token agree;
- **text-path invariance**: the largest absolute logit difference between the two models on the
  held-out prompts (exactly 0 when text never touches anything trained);
- **refusal rate** on harmful prompts (keyword scorer);
- **speech-vs-text gap**: the same items answered with the audio (speech model) and with its seed
  description (base LLM); instruction-following rates, Speech-IFEval's relative drop
  ``(speech - text) / text`` and answer agreement.

Models are Hugging Face causal LMs (for a SpeechLLM: its text path). Prompts are rendered with
the chat template of the base's tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from speechllm.eval.answer_match import is_refusal
from speechllm.eval.items import BenchmarkError
from speechllm.eval.predictors import generate_chat, generate_ids
from speechllm.llm_runtime import encode_chats

RESOURCE_DIR = "resources/eval"


def _read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a ``.jsonl`` (field ``prompt``), or a text file with one prompt a line."""
    p = Path(path)
    if not p.is_file():
        raise BenchmarkError(f"{p}: no such prompt file")
    prompts = []
    if p.suffix == ".jsonl":
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise BenchmarkError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
                raise BenchmarkError(f"{p}:{n}: expected an object with a 'prompt' string")
            prompts.append(row["prompt"])
    else:
        prompts = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not prompts:
        raise BenchmarkError(f"{p}: no prompts")
    return prompts


def _builtin(name: str) -> list[str]:
    ref = resources.files("speechllm").joinpath(f"{RESOURCE_DIR}/{name}")
    with resources.as_file(ref) as path:
        return _read_prompt_file(path)


def load_retention_prompts(path: str | Path | None = None) -> list[str]:
    """Held-out text prompts: the user's file, or the built-in set (~30 diverse prompts)."""
    return _read_prompt_file(path) if path else _builtin("retention_prompts.jsonl")


def load_harmful_prompts(path: str | Path | None = None) -> list[str]:
    """Harmful requests: the user's file, or the small built-in sample of mild, clearly harmful
    requests (enough to see a refusal rate move, not a safety benchmark)."""
    return _read_prompt_file(path) if path else _builtin("harmful_prompts.jsonl")


def base_answers(base, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 48,
                 batch_size: int = 8) -> tuple[list[list[int]], list[list[int]]]:
    """(prompt ids, the base's greedy answer ids) for each prompt."""
    prompt_ids = encode_chats(tokenizer, [[{"role": "user", "content": p}] for p in prompts])
    answers: list[list[int]] = []
    for i in range(0, len(prompt_ids), batch_size):
        answers.extend(generate_ids(base, tokenizer, prompt_ids[i:i + batch_size], max_new_tokens))
    return prompt_ids, answers


def _answer_logprobs(model, prompt: list[int], answer: list[int]):
    """Log-probabilities (float64) at the positions that predict each answer token."""
    import torch

    ids = torch.tensor([prompt + answer], dtype=torch.long)
    with torch.inference_mode():
        logits = model(input_ids=ids).logits[0]
    # Position t predicts token t+1: the answer tokens are predicted by the |prompt|-1 ... end-1.
    sl = logits[len(prompt) - 1: len(prompt) + len(answer) - 1].to(torch.float64)
    return torch.log_softmax(sl, dim=-1)


def teacher_forced_metrics(base, tuned, prompt_ids: Sequence[list[int]],
                           answers: Sequence[list[int]]) -> dict[str, Any]:
    """KL-to-base, dNLL and top-1 agreement over all answer tokens (see the module docstring)."""
    import torch

    kl_sum = 0.0
    nll_base = 0.0
    nll_tuned = 0.0
    agree = 0
    tokens = 0
    for prompt, answer in zip(prompt_ids, answers, strict=True):
        if not answer:
            continue
        lp_b = _answer_logprobs(base, prompt, answer)
        lp_t = _answer_logprobs(tuned, prompt, answer)
        target = torch.tensor(answer, dtype=torch.long)
        # KL(P_base || P_tuned) = sum_v p_b (log p_b - log p_t), per position.
        kl_sum += float((lp_b.exp() * (lp_b - lp_t)).sum())
        nll_base -= float(lp_b.gather(1, target[:, None]).sum())
        nll_tuned -= float(lp_t.gather(1, target[:, None]).sum())
        agree += int((lp_b.argmax(-1) == lp_t.argmax(-1)).sum())
        tokens += len(answer)
    if tokens == 0:
        return {"kl_to_base": None, "delta_nll": None, "top1_agreement": None, "tokens": 0}
    return {
        "kl_to_base": kl_sum / tokens,
        "delta_nll": (nll_tuned - nll_base) / tokens,
        "nll_base": nll_base / tokens,
        "nll_tuned": nll_tuned / tokens,
        "top1_agreement": agree / tokens,
        "tokens": tokens,
    }


def text_path_invariance(base, tuned, prompt_ids: Sequence[list[int]]) -> dict[str, Any]:
    """Largest absolute logit difference over the prompts; ``identical`` when it is exactly 0."""
    import torch

    worst = 0.0
    for prompt in prompt_ids:
        ids = torch.tensor([prompt], dtype=torch.long)
        with torch.inference_mode():
            diff = (base(input_ids=ids).logits - tuned(input_ids=ids).logits).abs().max()
        worst = max(worst, float(diff))
    return {"max_abs_logit_diff": worst, "identical": worst == 0.0, "prompts": len(prompt_ids)}


def refusal_rate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 48,
                 batch_size: int = 8) -> dict[str, Any]:
    """Share of harmful prompts the model refuses (keyword scorer), with the responses."""
    responses: list[str] = []
    for i in range(0, len(prompts), batch_size):
        chats = [[{"role": "user", "content": p}] for p in prompts[i:i + batch_size]]
        responses.extend(generate_chat(model, tokenizer, chats, max_new_tokens))
    refused = [is_refusal(r) for r in responses]
    return {"refusal_rate": sum(refused) / len(refused) if refused else None, "prompts": len(prompts),
            "responses": [{"prompt": p, "response": r, "refused": f}
                          for p, r, f in zip(prompts, responses, refused, strict=True)]}


def retention_metrics(base, tuned, tokenizer, *, prompts: Sequence[str], harmful: Sequence[str] | None = None,
                      max_new_tokens: int = 48, batch_size: int = 8) -> dict[str, Any]:
    """The text-side retention metrics of ``tuned`` against ``base`` (one report section)."""
    prompt_ids, answers = base_answers(base, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                       batch_size=batch_size)
    out: dict[str, Any] = {"prompts": len(prompts)}
    out.update(teacher_forced_metrics(base, tuned, prompt_ids, answers))
    out["text_path_invariance"] = text_path_invariance(base, tuned, prompt_ids)
    if harmful:
        out["refusal_base"] = refusal_rate(base, tokenizer, harmful, max_new_tokens=max_new_tokens,
                                           batch_size=batch_size)
        out["refusal_tuned"] = refusal_rate(tuned, tokenizer, harmful, max_new_tokens=max_new_tokens,
                                            batch_size=batch_size)
    return out


def relative_drop(speech: float | None, text: float | None) -> float | None:
    """Speech-IFEval's relative drop: (speech - text) / text (negative = speech is worse)."""
    if speech is None or text is None or text == 0:
        return None
    return (speech - text) / text


def speech_text_gap(speech_rows: Sequence[dict[str, Any]], text_rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Compare score rows of the same items answered with audio and with the description.

    ``if_rate_*``: prompt-level instruction following on instruction items; ``accuracy_*`` on
    items with a correct/incorrect outcome; ``agreement``: share of shared items on which both
    runs reach the same outcome (the same picked option for multiple choice).
    """
    text_by_id = {r["id"]: r for r in text_rows}
    pairs = [(s, text_by_id[s["id"]]) for s in speech_rows if s["id"] in text_by_id]

    def rate(rows: list[dict[str, Any]], kind: str | None) -> float | None:
        vals = [bool(r["correct"]) for r in rows if r.get("correct") is not None and (kind is None or r["kind"] == kind)]
        return sum(vals) / len(vals) if vals else None

    speech = [s for s, _ in pairs]
    text = [t for _, t in pairs]
    if_speech, if_text = rate(speech, "instruction"), rate(text, "instruction")
    acc_speech, acc_text = rate(speech, None), rate(text, None)
    same = []
    for s, t in pairs:
        if s.get("picked") is not None or t.get("picked") is not None:
            same.append(s.get("picked") == t.get("picked"))
        elif s.get("correct") is not None and t.get("correct") is not None:
            same.append(s["correct"] == t["correct"])
    return {
        "items": len(pairs),
        "if_rate_speech": if_speech,
        "if_rate_text": if_text,
        "if_relative_drop": relative_drop(if_speech, if_text),
        "accuracy_speech": acc_speech,
        "accuracy_text": acc_text,
        "accuracy_relative_drop": relative_drop(acc_speech, acc_text),
        "agreement": sum(same) / len(same) if same else None,
    }
