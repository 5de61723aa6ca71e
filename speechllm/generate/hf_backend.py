"""Hugging Face backend: a batched decode loop over a KV cache, on CPU or GPU.

Why not ``model.generate``: for a small frozen LLM on a CPU the per-step overhead of
``generate`` (logits processors, stopping criteria, finished rows kept in the batch and fed pad
tokens until the longest row ends) costs as much as the model. This loop

- prefills a left-padded batch once, keeping only the last position's logits;
- decodes one token per step for the *unfinished* rows only: a row that emits an end token is
  dropped from the batch and from the KV cache (``DynamicCache.batch_select_indices``), so the
  cost of a batch follows its rows' actual lengths, not the longest one;
- samples each row with its own seeded ``torch.Generator``, so a row's sample does not depend on
  which rows share its batch.

Greedy results equal ``model.generate`` row by row (a test checks it on a tiny model).
"""

from __future__ import annotations

import logging
from typing import Any

from speechllm.generate.backend import (
    Completion,
    GenerationError,
    SamplingParams,
    folder_fingerprint,
    missing_chat_template_error,
    read_chat_template,
    text_sha256,
)

log = logging.getLogger(__name__)

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype_name(dtype: str, device: str) -> str:
    """``auto`` -> bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16/AMX)."""
    from speechllm.utils.hardware import default_dtype_name

    if dtype == "auto":
        return default_dtype_name(device)
    if dtype not in _DTYPES:
        raise GenerationError(f"dtype {dtype!r}: expected auto, fp32, bf16 or fp16")
    return dtype


class HFBackend:
    """Batched generation with a transformers causal LM (frozen, ``torch.inference_mode``)."""

    name = "hf"

    def __init__(
        self,
        llm: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        chat_template: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from speechllm.assets import resolve_model
        from speechllm.errors import ModelResolutionError

        self.llm_ref = llm
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype_name(dtype, self.device)
        self.resolved = resolve_model(llm)
        self.revision = revision
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                self.resolved, revision=revision, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                self.resolved, revision=revision, dtype=getattr(torch, _DTYPES[self.dtype_name]),
                trust_remote_code=trust_remote_code)
        except OSError as e:
            raise ModelResolutionError(f"cannot load LLM {llm!r} ({e})") from None
        if chat_template:
            self.tokenizer.chat_template = read_chat_template(chat_template)
        if not getattr(self.tokenizer, "chat_template", None):
            raise missing_chat_template_error(llm)
        self.model.to(self.device)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        if not ids:
            raise GenerationError(f"LLM {self.llm_ref!r}: neither its config nor its tokenizer names an end token")
        return ids

    # -- interface ---------------------------------------------------------------------------

    def render(self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True) -> str:
        from speechllm.models.chat_layout import render_text

        return render_text(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt (the template already holds any BOS it wants)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def describe(self) -> dict[str, Any]:
        from pathlib import Path

        info: dict[str, Any] = {"model": self.llm_ref, "backend": self.name, "dtype": self.dtype_name,
                                "device": self.device}
        if Path(self.resolved).is_dir():
            info["path"] = self.resolved
            info["revision"] = self.revision or folder_fingerprint(self.resolved)
        else:
            info["revision"] = self.revision or getattr(self.model.config, "_commit_hash", None)
        info["chat_template"] = text_sha256(self.tokenizer.chat_template)
        return info

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
    ) -> list[Completion]:
        if not prompts:
            return []
        return self.generate_ids([self.encode(p) for p in prompts], params, seeds=seeds,
                                 stop_token_ids=stop_token_ids)

    # -- the decode loop ---------------------------------------------------------------------

    def generate_ids(
        self,
        prompt_ids: list[list[int]],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
    ) -> list[Completion]:
        """Generate for pre-tokenised prompts (one batch; the caller chooses its size)."""
        import torch

        with torch.inference_mode():
            return self._decode(prompt_ids, params, seeds, stop_token_ids)

    def _decode(self, prompt_ids, params: SamplingParams, seeds, stop_token_ids) -> list[Completion]:
        import torch
        from transformers import DynamicCache

        n = len(prompt_ids)
        if any(len(p) == 0 for p in prompt_ids):
            raise GenerationError("an empty prompt cannot be generated from")
        stops = torch.tensor(sorted(self.eos_ids | set(stop_token_ids or ())), device=self.device)
        width = max(len(p) for p in prompt_ids)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, ids in enumerate(prompt_ids):
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids):] = 1
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        # Positions count from each row's first real token, so left padding shifts nothing.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        generators = None
        if not params.greedy:
            generators = []
            for i in range(n):
                g = torch.Generator(device=self.device)
                g.manual_seed(int(seeds[i]) if seeds is not None else i)
                generators.append(g)
        seen = None
        if params.repetition_penalty != 1.0:
            vocab = self.model.get_output_embeddings().weight.shape[0]
            seen = torch.zeros((n, vocab), dtype=torch.bool, device=self.device)
            seen.scatter_(1, input_ids, attention.bool())

        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                         past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1, :]
        next_pos = positions[:, -1] + 1
        rows = list(range(n))  # original index of each row still in the batch
        generated: list[list[int]] = [[] for _ in range(n)]
        finish: list[str] = ["length"] * n
        for step in range(params.max_new_tokens):
            if seen is not None:
                logits = _apply_repetition_penalty(logits, seen, params.repetition_penalty)
            tokens = _choose_tokens(logits, params, [generators[r] for r in rows] if generators else None)
            ended = torch.isin(tokens, stops)
            tokens_list = tokens.tolist()
            ended_list = ended.tolist()
            for j, r in enumerate(rows):
                if ended_list[j]:
                    finish[r] = "stop"
                else:
                    generated[r].append(tokens_list[j])
            if step == params.max_new_tokens - 1:
                break
            if any(ended_list):
                keep = [j for j, e in enumerate(ended_list) if not e]
                if not keep:
                    break
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention, next_pos, tokens = attention[index], next_pos[index], tokens[index]
                if seen is not None:
                    seen = seen[index]
                rows = [rows[j] for j in keep]
            if seen is not None:
                seen.scatter_(1, tokens[:, None], True)
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
            out = self.model(input_ids=tokens[:, None], attention_mask=attention,
                             position_ids=next_pos[:, None], past_key_values=cache, use_cache=True)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        return [
            Completion(text=self.tokenizer.decode(ids, skip_special_tokens=True).strip(), token_ids=ids,
                       finish_reason=finish[i])  # type: ignore[arg-type]
            for i, ids in enumerate(generated)
        ]


def _apply_repetition_penalty(logits, seen, penalty: float):
    """HF's rule: a seen token's logit is divided by the penalty when positive, else multiplied."""
    import torch

    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _choose_tokens(logits, params: SamplingParams, generators):
    """Greedy argmax, or temperature / top-k / top-p sampling with one generator per row."""
    import torch

    if params.greedy:
        return logits.argmax(dim=-1)
    scores = logits.float() / params.temperature
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= params.top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(1, order, sorted_scores)
    probs = scores.softmax(dim=-1)
    picks = [torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(generators)]
    return torch.cat(picks)
