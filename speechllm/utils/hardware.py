"""Hardware facts that change which code path is fast."""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess


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


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> dict[str, float] | None:
    """Total and available memory in GiB (``/proc/meminfo``), or None where it is unavailable."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[1:2]}
    except (OSError, ValueError):
        return None
    gib = 1024 * 1024
    return {"total": round(kib.get("MemTotal", 0) / gib, 1),
            "available": round(kib.get("MemAvailable", 0) / gib, 1)}


# The external programs the offline corpus and Kaldi pipes use, with the flag that prints a version.
EXTERNAL_TOOLS = {"flite": "--version", "espeak-ng": "--version", "sox": "--version"}


def external_tools() -> dict[str, str | None]:
    """Each external program's version and path, or None when it is not on PATH."""
    found: dict[str, str | None] = {}
    for name, flag in EXTERNAL_TOOLS.items():
        path = shutil.which(name)
        if path is None:
            found[name] = None
            continue
        try:
            out = subprocess.run([path, flag], capture_output=True, text=True, timeout=10)
            version = re.search(r"\d+\.\d+(?:\.\d+)?", out.stdout + out.stderr)
        except (OSError, subprocess.SubprocessError):
            version = None
        found[name] = f"{version.group(0)} ({path})" if version else path
    return found


def cpu_counts() -> dict[str, int]:
    """Logical CPUs of the machine and those this process may use (its affinity)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    return {"logical": os.cpu_count() or 1, "usable": usable}
