"""CPU thread settings.

On small shared machines torch's default of one intra-op thread per core is often many times
slower than one thread (two threads on two busy cores measured 10x slower), so every entry point
sets the thread count explicitly from ``--num-threads`` or ``$SPEECHLLM_NUM_THREADS``.
"""

from __future__ import annotations

import os


def resolve_num_threads(requested: int | None = None) -> int | None:
    """Return the thread count to use: the request, else ``$SPEECHLLM_NUM_THREADS``, else
    ``$OMP_NUM_THREADS``, else None (leave torch's default)."""
    if requested is not None and requested > 0:
        return requested
    for var in ("SPEECHLLM_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def set_num_threads(requested: int | None = None) -> int | None:
    """Apply :func:`resolve_num_threads` to torch (if torch is importable). Returns the count set."""
    n = resolve_num_threads(requested)
    if n is None:
        return None
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return n
    torch.set_num_threads(n)
    return n
