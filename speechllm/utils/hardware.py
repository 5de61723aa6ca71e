"""Hardware facts that change which code path is fast."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (AVX512-BF16 or AMX). There bf16 matmuls run
    ~4x faster than fp32 on one thread; elsewhere bf16 is emulated and slower, so we check."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_dtype_name(device: str = "cpu") -> str:
    """The precision that ``auto`` resolves to: bf16 on CUDA with bf16 support or a CPU with fast
    bf16, else fp32. fp16 is never chosen automatically (unusably slow on CPUs, overflow-prone)."""
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"
