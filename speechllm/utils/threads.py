"""CPU thread settings.

On small shared machines torch's default of one intra-op thread per core is often many times
slower than one thread (two threads on two busy cores measured 10x slower), so every entry point
sets the thread count explicitly from ``--num-threads`` or ``$SPEECHLLM_NUM_THREADS``.

``auto`` counts the cores that are idle right now (from ``/proc/stat`` over a short window) and
uses that many, at least one: on an idle 2-core machine it gives 2 (the faster choice there), and
with another busy process beside it 1, instead of the oversubscribed 2 that runs up to 10-20x
slower (``benchmarks/threads_under_load.py`` measures the three settings side by side).
"""

from __future__ import annotations

import logging
import os
import time

AUTO = "auto"
# Long enough to see a busy process (the kernel ticks at 100-1000 Hz), short enough to run per stage.
IDLE_SAMPLE_SECONDS = 0.3


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies of all CPUs, or None where /proc/stat is unavailable."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields[:8])


def busy_cores(sample_seconds: float = IDLE_SAMPLE_SECONDS) -> float | None:
    """How many of the machine's cores other processes kept busy over ``sample_seconds``."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(sample_seconds)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    idle_share = (second[0] - first[0]) / (second[1] - first[1])
    return (1.0 - idle_share) * (os.cpu_count() or 1)


def auto_num_threads(sample_seconds: float = IDLE_SAMPLE_SECONDS) -> int:
    """Threads for ``auto``: the usable cores not busy with other work, at least 1."""
    cores = usable_cores()
    busy = busy_cores(sample_seconds)
    if busy is None:
        return 1  # cannot measure: one thread is never the 10x-slow choice
    return max(1, min(cores, cores - round(busy)))


def _parse(value: str | int | None) -> int | str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == AUTO:
        return AUTO
    if text.isdigit() and int(text) > 0:
        return int(text)
    return None


def resolve_num_threads(requested: int | str | None = None) -> int | None:
    """Return the thread count to use: the request, else ``$SPEECHLLM_NUM_THREADS``, else
    ``$OMP_NUM_THREADS``, else None (leave torch's default). ``auto`` is resolved to a number."""
    choice = _parse(requested)
    if choice is None:
        for var in ("SPEECHLLM_NUM_THREADS", "OMP_NUM_THREADS"):
            choice = _parse(os.environ.get(var))
            if choice is not None:
                break
    if choice == AUTO:
        n = auto_num_threads()
        logging.getLogger(__name__).info("torch threads: %d (auto: %d of %d usable cores idle)",
                                         n, n, usable_cores())
        return n
    return choice


def set_num_threads(requested: int | str | None = None) -> int | None:
    """Apply :func:`resolve_num_threads` to torch (if torch is importable). Returns the count set."""
    n = resolve_num_threads(requested)
    if n is None:
        return None
    # Worker processes and libraries that read OMP_NUM_THREADS get the resolved number ("auto"
    # is not a valid OpenMP value).
    if _parse(os.environ.get("OMP_NUM_THREADS")) in (None, AUTO):
        os.environ["OMP_NUM_THREADS"] = str(n)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return n
    torch.set_num_threads(n)
    return n
