"""What every peer benchmark prints about the machine it ran on (imported by the scripts here).

CPU model, the ISA flags that decide which kernels run (AVX-512, AVX512-BF16, AMX), the measured
bf16 and fp32 matmul peak of one thread (a 2048^3 matmul in CPU seconds), the load average, and
the process's peak resident memory, so a figure can be read against the machine that made it.
"""

from __future__ import annotations

import os
import resource
import time

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


class Clock:
    """CPU seconds (this process) and wall seconds of a block."""

    def __enter__(self) -> Clock:
        self.cpu0, self.wall0 = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu = time.process_time() - self.cpu0
        self.wall = time.perf_counter() - self.wall0


def isa_flags() -> list[str]:
    """The flags of :data:`ISA_FLAGS` that ``/proc/cpuinfo`` lists."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []
    return [name for name in ISA_FLAGS if name in flags]


def matmul_peak_gflops(n: int = 2048, reps: int = 6, dtypes: tuple[str, ...] = ("bf16", "fp32")) -> dict[str, float]:
    """One thread's matmul rate (GFLOP per CPU second) in bf16 and fp32 (or just ``dtypes``)."""
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        if name not in dtypes:
            continue
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        t = time.process_time()
        for _ in range(reps):
            a @ b
        out[name] = 2 * n**3 * reps / (time.process_time() - t) / 1e9
    return out


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe_machine(peak: bool = True) -> str:
    """One line: CPU, ISA flags, cores, load average, torch threads and (``peak``) matmul peak."""
    import torch

    from speechllm.utils.hardware import cpu_model

    parts = [cpu_model(), "flags " + ",".join(isa_flags()), f"{os.cpu_count()} cores",
             "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), f"torch {torch.__version__} threads {torch.get_num_threads()}"]
    if peak:
        p = matmul_peak_gflops()
        parts.append(f"matmul peak bf16 {p['bf16']:.0f} / fp32 {p['fp32']:.0f} GFLOP/CPU-s")
    return "; ".join(parts)
