"""Prefix tuning (Li & Liang 2021): learned key/value vectors for P virtual positions in every
decoder layer, pre-filled into the LLM's KV cache before each input (``model.prefix_tuning``).

The model's one input path applies them (:meth:`SpeechLLM.llm_inputs`): the cache holds the
prefix, the attention mask gains P leading ones, and the real tokens' positions start at P. In
training the decoder reads that cache; in ``generate`` the same cache is passed with P
placeholder embeddings in front (transformers takes a given cache as covering the first
cache-length positions of the input and skips them), so that generation and the training
forward compute the same logits. The base forward (``disable_lora``: KL-to-base, STM, the ``kl``
teacher) reads no prefix. The vectors are saved as ``prefix.safetensors`` (fp32).
"""

from __future__ import annotations

from typing import Any

import torch

from speechllm.errors import ConfigError
from speechllm.utils.hf_compat import cache_kwargs, output_cache


def prefix_shape(causal_lm, num_tokens: int) -> tuple[int, int, int, int, int]:
    """``(layers, 2, kv_heads, num_tokens, head_dim)``: keys and values of every layer."""
    c = causal_lm.config
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return (c.num_hidden_layers, 2, heads, num_tokens, head_dim)


def init_prefix(causal_lm, tokenizer, num_tokens: int, init_text: str, seed: int) -> torch.Tensor:
    """Start values (fp32, CPU): the LLM's own keys and values over ``init_text``'s tokens
    (repeated to ``num_tokens``; Li & Liang's initialisation from real words), or seeded small
    random ones (std 0.02: the prefix starts close to absent) when it is empty."""
    shape = prefix_shape(causal_lm, num_tokens)
    table = causal_lm.get_input_embeddings().weight
    if table.is_meta:  # FSDP2's other ranks: nothing to read
        return torch.zeros(shape)
    if not init_text:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return torch.randn(shape) * 0.02
    ids = tokenizer(init_text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError(f"model.prefix_tuning.init_text: {init_text!r} has no tokens; give a text or leave it empty")
    ids = (ids * (num_tokens // len(ids) + 1))[:num_tokens]
    with torch.no_grad():
        out = causal_lm(input_ids=torch.tensor([ids], device=table.device), use_cache=True)
    cache = output_cache(out)
    layers = [(layer.keys[0], layer.values[0]) for layer in cache.layers]
    return torch.stack([torch.stack([k, v]) for k, v in layers]).float().cpu()


def prefix_cache(prefix: torch.Tensor, causal_lm, batch_size: int, dtype: torch.dtype) -> Any:
    """A fresh DynamicCache holding ``prefix`` for ``batch_size`` rows (gradients reach it)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=causal_lm.config)
    for i in range(prefix.shape[0]):
        k = prefix[i, 0].to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        v = prefix[i, 1].to(dtype).unsqueeze(0).expand(batch_size, -1, -1, -1)
        cache.update(k, v, i)
    return cache


def with_prefix(inputs: dict[str, torch.Tensor], prefix: torch.Tensor, causal_lm) -> dict[str, Any]:
    """``inputs`` (``attention_mask``, ``position_ids``, ``inputs_embeds``) read after the prefix:
    the cache, P leading ones in the mask, positions shifted by P (as generation counts them)."""
    embeds = inputs["inputs_embeds"]
    b, n = embeds.shape[0], prefix.shape[3]
    mask = inputs["attention_mask"]
    out = dict(inputs)
    out["attention_mask"] = torch.cat([torch.ones((b, n), dtype=mask.dtype, device=mask.device), mask], 1)
    if inputs.get("position_ids") is not None:
        out["position_ids"] = inputs["position_ids"] + n
    # The keyword the installed transformers takes the cache by (``cache`` from 5.2x on).
    out.update(cache_kwargs(causal_lm, prefix_cache(prefix, causal_lm, b, embeds.dtype)))
    return out


def for_generate(inputs: dict[str, Any], prefix: torch.Tensor) -> dict[str, Any]:
    """``with_prefix`` inputs made ready for ``generate``: P placeholder embeddings in front (the
    positions the cache covers, which generate skips) and no position ids (it counts them from
    the mask)."""
    embeds = inputs["inputs_embeds"]
    n = prefix.shape[3]
    out = dict(inputs)
    out.pop("position_ids", None)
    out["inputs_embeds"] = torch.cat([embeds.new_zeros((embeds.shape[0], n, embeds.shape[2])), embeds], 1)
    return out
