"""Attention for one-token decode steps over a wide KV cache, without copying it.

Registered with transformers as the attention implementation ``speechllm_decode``. A forward with
one query position per row (a decode step) takes :func:`grouped_decode_attention`; every other
forward (prefill) goes to transformers' own SDPA function, unchanged.

Why: measured on this project's CPU (torch 2.13, one thread, bf16, 64 rows x 3 KV heads x 180
cached positions x 64 dims), ``scaled_dot_product_attention`` with a padding mask takes 1.23 ms per
layer, while two batched matmuls over the grouped query heads take 0.40 ms. Grouping the query
heads of a KV head into the matmul's row dimension also avoids ``repeat_kv``, which copies the
whole cache per layer.

Numerics follow transformers' eager attention: scores come out of a bf16 matmul (fp32
accumulation, bf16 result), the softmax runs in fp32, the weights are cast back for the value
matmul. So a decode step may differ from SDPA in the last bf16 bits, as between any two kernels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

NAME = "speechllm_decode"

_registered = False


def grouped_decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention of one query position per row.

    ``query``: ``(batch, heads, 1, dim)``; ``key``/``value``: ``(batch, kv_heads, columns, dim)``;
    ``attention_mask``: boolean ``(batch, 1, 1, columns)`` (True = attend) or additive float.
    Returns ``(batch, 1, heads, dim)`` as transformers' attention functions do.
    """
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    # (batch, kv_heads, groups, dim): the query heads that share a KV head become matmul rows.
    q = query.reshape(batch, kv_heads, groups, dim)
    # oneDNN on for these matmuls even where a one-token step switched it off for its Linear
    # layers (speechllm.models.cpu_decode): ATen's bf16 batched matmul is ~5x slower here
    # (Whisper's cross-attention over 1500 frames: 0.53 vs 0.11 ms).
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = True
    try:
        scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (batch, kv_heads, groups, columns)
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attention_mask, float("-inf"))
            else:
                scores = scores + attention_mask.float()
        weights = scores.softmax(dim=-1).to(value.dtype)
        out = torch.matmul(weights, value)  # (batch, kv_heads, groups, dim)
    finally:
        torch.backends.mkldnn.enabled = previous
    return out.reshape(batch, 1, heads, dim), None


def decode_or_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, **kwargs: Any):
    """The registered function: grouped matmuls for plain one-token steps, SDPA otherwise
    (prefill, dropout, soft-capping, sliding windows, attention sinks)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (query.shape[2] == 1 and not module.training and not kwargs.get("dropout")
             and kwargs.get("softcap") is None and kwargs.get("sliding_window") is None
             and kwargs.get("s_aux") is None and key.shape[1] and query.shape[1] % key.shape[1] == 0)
    if plain:
        return grouped_decode_attention(module, query, key, value, attention_mask, kwargs.get("scaling"))
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> str:
    """Register :data:`NAME` with transformers (idempotent); its masks are SDPA's (boolean)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, decode_or_sdpa)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        _registered = True
    return NAME


@contextlib.contextmanager
def decode_attention_within(model: torch.nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, a transformers model that uses SDPA runs its one-token attention steps
    through :data:`NAME` (everything else stays SDPA); its own setting is restored afterwards.
    A model class that refuses custom attention keeps SDPA."""
    previous = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if not enabled or previous != "sdpa":
        yield
        return
    try:
        model.set_attn_implementation(register())
    except (ValueError, ImportError):
        yield
        return
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
