"""Hand-written autograd functions for the training step's elementwise work on CPU.

Where they came from: ``benchmarks/profile_steps.py`` on the default training step (SmolLM2-135M,
batch 8, bf16, one thread) put ~16% of the step in transformers' eager attention outside its
matmuls (``repeat_kv``'s copies and, in the backward, their sums; the fp32 softmax and its casts)
and ~5% in the loss (an fp32 copy of the response logits, log-softmax, its backward, the casts).

- :func:`train_attention`, registered with transformers as the attention implementation
  :data:`NAME` (``train.attention: fused``, the CPU default): the query heads that share a KV head
  become rows of one matmul (no ``repeat_kv`` copy forward, no sum backward: the value and key
  gradients come out of one matmul each), the mask is added in the cast to fp32, and the backward
  is written out, saving the weights in the activation dtype only (not eager's fp32 copy).
- :func:`fuse_rms_norms`: the LLM's Llama-style RMSNorm with its input gradient written out
  (five passes over the activations instead of about ten in the backward; forward bit for bit
  transformers').
- :func:`cross_entropy_sum`: summed cross-entropy whose fp32 work runs row chunk by row chunk
  (a chunk stays in cache), saving the logits and one log-sum-exp per row instead of an fp32
  log-softmax of the whole ``(tokens, vocabulary)`` matrix.

Numerics: in fp32 both equal transformers' eager attention and ``F.cross_entropy`` to rounding
(``tests/test_train_fused.py``); in bf16 the attention weights are rounded to bf16 once, before
the backward rather than after it, so gradients differ in the last bf16 bits.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

NAME = "speechllm_train"

_registered = False


class _GroupedAttention(torch.autograd.Function):
    """Causal/padded attention of ``q (B, Hkv, G*T, D)`` (already scaled) over ``k``, ``v``
    ``(B, Hkv, S, D)`` with an additive mask ``(B, 1, G*T or T, S)`` broadcast over the groups."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                groups: int) -> torch.Tensor:
        b, hkv, gt, _ = q.shape
        scores = torch.matmul(q, k.transpose(-1, -2))  # (B, Hkv, G*T, S), q's dtype
        # The softmax runs in fp32 (as eager's): CPU's bf16 softmax kernel is ~2x slower than an
        # fp32 one plus the casts. The mask is added on the way to fp32, in the same pass.
        if mask is None:
            scores = scores.float()
        elif mask.dtype == torch.bool:  # True = attend
            scores = scores.float().view(b, hkv, groups, gt // groups, -1).masked_fill_(
                ~mask[:, :, None], torch.finfo(torch.float32).min).view(b, hkv, gt, -1)
        else:
            grouped = scores.view(b, hkv, groups, gt // groups, -1)
            scores = torch.add(grouped, mask[:, :, None].float()).view(b, hkv, gt, -1)
        weights = torch.softmax(scores, dim=-1).to(q.dtype)
        ctx.save_for_backward(q, k, v, weights)
        return torch.matmul(weights, v)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, weights = ctx.saved_tensors
        grad_out = grad_out.to(v.dtype)
        grad_v = torch.matmul(weights.transpose(-1, -2), grad_out)  # sums the groups in the matmul
        grad_w = torch.matmul(grad_out, v.transpose(-1, -2))
        grad_s = torch._softmax_backward_data(grad_w, weights, -1, weights.dtype)
        grad_q = torch.matmul(grad_s, k)
        grad_k = torch.matmul(grad_s.transpose(-1, -2), q)
        return grad_q, grad_k, grad_v, None, None


def _eager_of(module: torch.nn.Module):
    """The model family's own eager attention function (transformers defines one per model file)."""
    own = getattr(importlib.import_module(type(module).__module__), "eager_attention_forward", None)
    if own is not None:
        return own
    from transformers.models.llama.modeling_llama import eager_attention_forward

    return eager_attention_forward


def train_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                    **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: ``query (B, H, T, D)``, ``key``/``value``
    ``(B, Hkv, S, D)``, additive float ``attention_mask (B, 1, T, S)`` (eager's); returns
    ``((B, T, H, D), None)``. What it does not cover (dropout in training, soft-capping, sliding
    windows, attention sinks) goes to the model's own eager function."""
    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    plain = (not (dropout and module.training) and kwargs.get("softcap") is None
             and kwargs.get("sliding_window") is None and kwargs.get("s_aux") is None
             and kv_heads and heads % kv_heads == 0
             and (attention_mask is None or attention_mask.shape[1] == 1))
    if not plain:
        return _eager_of(module)(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                 **kwargs)
    groups = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    dtype = torch.result_type(query, key)
    # Scaling the queries is the same as scaling the scores (exactly so for head_dim 64 or 128,
    # whose scale is a power of two) on a tensor S/D times smaller.
    q = (query.to(dtype) * scale).reshape(batch, kv_heads, groups * length, dim)
    with torch.autocast(query.device.type, enabled=False):
        out = _GroupedAttention.apply(q, key.to(dtype), value.to(dtype), attention_mask, groups)
    return out.view(batch, heads, length, dim).transpose(1, 2), None


class _RMSNorm(torch.autograd.Function):
    """transformers' Llama RMSNorm (fp32 statistics, normalised values rounded to the input dtype,
    then times the weight) with a hand-written input gradient; the weight is frozen."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        x32 = x.float()
        r = torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
        normed = torch.empty_like(x)
        torch.mul(x32, r, out=normed)  # computed in fp32, rounded once to x's dtype, as .to() does
        ctx.save_for_backward(x, weight, r)
        return weight * normed

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, r = ctx.saved_tensors
        g = (grad * weight).float()  # rounded to the activations' dtype first, as autograd does
        x32 = x.float()
        # d/dx of x * r(x): r * g - x * r^3 * mean(g * x)
        coeff = (g * x32).mean(-1, keepdim=True) * r.pow(3)
        return torch.addcmul(g * r, x32, coeff, value=-1.0).to(x.dtype), None, None


#: RMSNorm classes whose forward is transformers' Llama one, line for line.
RMS_NORM_CLASSES = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm")


def _fused_rms_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if self.weight.requires_grad and torch.is_grad_enabled():  # a trained norm: its own forward
        return type(self).forward(self, hidden_states)
    with torch.autocast(hidden_states.device.type, enabled=False):
        return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


def fuse_rms_norms(model: torch.nn.Module) -> int:
    """Route the forward of every Llama-style RMSNorm in ``model`` through :class:`_RMSNorm`
    (instance attribute; the class and the saved weights are untouched). Returns how many."""
    import types

    count = 0
    for module in model.modules():
        if type(module).__name__ in RMS_NORM_CLASSES and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_fused_rms_forward, module)
            count += 1
    return count


def register() -> str:
    """Register :data:`NAME` with transformers (idempotent); its masks are eager's (additive)."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(NAME, train_attention)
        AttentionMaskInterface.register(NAME, eager_mask)
        _registered = True
    return NAME


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
        lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
        for s in range(0, logits.shape[0], chunk):
            lse[s:s + chunk] = torch.logsumexp(logits[s:s + chunk].float(), dim=-1)
        picked = logits.gather(1, targets[:, None]).squeeze(1).float()
        ctx.save_for_backward(logits, targets, lse)
        ctx.chunk = chunk
        return (lse - picked).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, targets, lse = ctx.saved_tensors
        out = torch.empty_like(logits)
        g = grad.float()
        for s in range(0, logits.shape[0], ctx.chunk):
            p = (logits[s:s + ctx.chunk].float() - lse[s:s + ctx.chunk, None]).exp_()  # softmax
            rows = torch.arange(p.shape[0], device=p.device)
            p[rows, targets[s:s + ctx.chunk]] -= 1.0
            out[s:s + ctx.chunk] = p.mul_(g)
        return out, None, None


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """``F.cross_entropy(logits.float(), targets, reduction="sum")`` (every target a real class,
    no ignore index), computed ``chunk`` rows at a time in fp32; the gradient has ``logits``' dtype."""
    if logits.shape[0] == 0:
        return logits.sum() * 0.0
    with torch.autocast(logits.device.type, enabled=False):
        return _ChunkedCrossEntropy.apply(logits, targets, chunk)
