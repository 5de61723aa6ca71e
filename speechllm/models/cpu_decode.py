"""Faster batch-1 bf16 decoding on CPUs: oneDNN off for single-token steps only.

Measured here (torch 2.13 CPU, AVX512-BF16, one thread): a bf16 matrix-vector product through
oneDNN (mkldnn) runs at about half the speed of ATen's own kernel (SmolLM2's 49152 x 576 LM head:
7.8 ms vs 3.6 ms), while for prompt-sized inputs oneDNN is several times faster (SmolLM2 prefill
of 180 tokens: 0.37 s vs 2.6 s). So during generation oneDNN stays on for the prefill and is
switched off for the steps that feed a handful of tokens: SmolLM2 decodes at ~31 instead of ~17
tokens/s. Outputs can differ in the last bf16 bits from a run with oneDNN on (a different
summation order), as between any two kernels. The switch is process-wide, so it is only used
around ``generate`` calls of single-threaded inference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

MAX_ROWS_WITHOUT_ONEDNN = 4  # input rows (batch x new tokens) at which ATen's kernel still wins

_TOKEN_KEYS = ("input_ids", "inputs_embeds", "decoder_input_ids")


def _rows(args: tuple, kwargs: dict[str, Any]) -> int | None:
    for key in _TOKEN_KEYS:
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            return int(value.shape[0] * value.shape[1])
    if args and isinstance(args[0], torch.Tensor) and args[0].dim() >= 2:
        return int(args[0].shape[0] * args[0].shape[1])
    return None


def wants_fast_cpu_decode(module: nn.Module) -> bool:
    """True for a bf16 model on the CPU whose torch build has oneDNN (where the switch helps)."""
    try:
        param = next(module.parameters())
    except StopIteration:
        return False
    return (param.device.type == "cpu" and param.dtype == torch.bfloat16
            and torch.backends.mkldnn.is_available())


def _cache_is_empty(kwargs: dict[str, Any]) -> bool:
    """True when the forward's KV cache holds nothing yet (its first step), or it has none."""
    for key in ("past_key_values", "cache"):
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length"):
            return cache.get_seq_length() == 0
    return True


@contextlib.contextmanager
def onednn_off_for_small_steps(module: nn.Module, enabled: bool | None = None, *,
                               first_step_on: bool = False) -> Iterator[None]:
    """Within the block, every forward of ``module`` with at most
    :data:`MAX_ROWS_WITHOUT_ONEDNN` input rows runs with oneDNN off; larger ones with it on.
    ``enabled=None`` decides by :func:`wants_fast_cpu_decode`. ``first_step_on`` keeps oneDNN on
    for a forward whose KV cache is still empty: an encoder-decoder's first step projects the
    whole encoder output into the cross-attention keys and values (Whisper: 1500 frames per
    layer, 0.28 s instead of ~0.02 s with ATen's bf16 kernel), whatever its token count."""
    if enabled is None:
        enabled = wants_fast_cpu_decode(module)
    if not enabled:
        yield
        return
    previous = torch.backends.mkldnn.enabled

    def before(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        rows = _rows(args, kwargs)
        small = rows is not None and rows <= MAX_ROWS_WITHOUT_ONEDNN
        if small and first_step_on and _cache_is_empty(kwargs):
            small = False
        torch.backends.mkldnn.enabled = not small

    handle = module.register_forward_pre_hook(before, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        torch.backends.mkldnn.enabled = previous
