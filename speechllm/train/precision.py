"""Precision, attention kernel and the memory/speed levers of a training run."""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)


def autocast_context(precision: str, device: str):
    """``torch.autocast`` for ``bf16``/``fp16`` training (the dtype from the one precision table),
    nothing for ``fp32``."""
    if precision in ("bf16", "fp16"):
        from speechllm.llm_runtime import torch_dtype

        return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                              dtype=torch_dtype(precision))
    return contextlib.nullcontext()


def resolve_attention(choice: str, device: str) -> str:
    """``auto``: fused on CPU (eager was measured ~10% faster per training step than SDPA's fused
    CPU kernels for SmolLM2-135M at ~160 positions, their backward being slow; ``fused`` is
    eager's maths without its copies: :mod:`speechllm.train.fused`), sdpa on GPU."""
    if choice == "auto":
        return "sdpa" if device.startswith("cuda") else "fused"
    return choice


def attention_context(choice: str, device: str):
    """For ``eager``, SDPA calls outside the LLM (the Q-Former) use the plain math kernel too
    (the forward picks the kernel; the backward follows it)."""
    if resolve_attention(choice, device) in ("eager", "fused"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()


def setup_memory_levers(model, tc, device: str) -> None:
    """The LLM's attention implementation, gradient checkpointing and ``torch.compile`` per the
    ``train`` config ``tc``."""
    base = model.base_causal_lm()
    attention = resolve_attention(tc.attention, device)
    if attention == "fused":
        from speechllm.train.fused import fuse_rms_norms, register

        attention = register()
        fuse_rms_norms(base)
    if getattr(base.config, "_attn_implementation", None) != attention:
        try:
            base.set_attn_implementation(attention)
        except (ValueError, ImportError) as e:
            log.warning("train.attention=%s not available for this LLM (%s); keeping %s", attention, e,
                        base.config._attn_implementation)
    if tc.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if tc.compile:
        model.adapter.compile(dynamic=True)
        base.get_decoder().compile(dynamic=True)
