"""CPU thread settings.

On small shared machines torch's default of one intra-op thread per core is often many times
slower than one thread (two threads on two busy cores measured 10x slower), so every entry point
sets the thread count explicitly from ``--num-threads`` or ``$SPEECHLLM_NUM_THREADS``.

``auto`` counts the cores that are idle right now (from ``/proc/stat`` over a short window) and
uses that many, at least one: on an idle 2-core machine it gives 2 (the faster choice there), and
with another busy process beside it 1, instead of the oversubscribed 2 that runs up to 10-20x
slower (``benchmarks/threads_under_load.py`` measures the three settings side by side).

Load that arrives after a command started is the common case on a shared box (a second job is
launched half-way through training), so with ``auto`` a :class:`ThreadGovernor` re-counts the idle
cores every few seconds while a long loop runs, leaving out this process's own CPU time, and
moves torch's thread count down or back up. Long loops reach it through their progress bar
(:func:`speechllm.utils.progress.progress_bar` calls :func:`adapt_threads` on each update).
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


def _own_cpu_ticks() -> int | None:
    """This process's user + system CPU time, in the clock ticks /proc/stat counts in."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


# Seconds between re-counts: long enough that a count costs nothing, short enough to catch a
# second job within a few training steps.
GOVERNOR_INTERVAL_SECONDS = 5.0


class ThreadGovernor:
    """Keeps torch's intra-op threads at the cores other processes leave idle (``auto`` mode)."""

    def __init__(self, interval_seconds: float = GOVERNOR_INTERVAL_SECONDS):
        self.interval = interval_seconds
        self._reset()

    def _reset(self) -> None:
        self._time = time.monotonic()
        self._cpu = _cpu_times()
        self._own = _own_cpu_ticks()

    def _others_busy_cores(self, cpu: tuple[int, int] | None, own: int | None) -> float | None:
        """Cores other processes kept busy between the last count and ``cpu``/``own``."""
        if cpu is None or own is None or self._cpu is None or self._own is None:
            return None
        total = cpu[1] - self._cpu[1]
        if total <= 0:
            return None
        busy_by_others = max(0, total - (cpu[0] - self._cpu[0]) - (own - self._own))
        return busy_by_others / total * (os.cpu_count() or 1)

    def maybe_adjust(self) -> int | None:
        """Re-count at most every ``interval`` seconds; returns the new thread count when changed."""
        now = time.monotonic()
        if now - self._time < self.interval:
            return None
        cpu, own = _cpu_times(), _own_cpu_ticks()
        busy = self._others_busy_cores(cpu, own)
        self._time, self._cpu, self._own = now, cpu, own
        if busy is None:
            return None
        cores = usable_cores()
        wanted = max(1, min(cores, cores - round(busy)))
        import torch

        current = torch.get_num_threads()
        if wanted == current:
            return None
        torch.set_num_threads(wanted)
        logging.getLogger(__name__).info("torch threads: %d -> %d (other processes keep %.1f of %d cores busy)",
                                         current, wanted, busy, cores)
        return wanted


_governor: ThreadGovernor | None = None


def adapt_threads() -> int | None:
    """With ``auto`` threads, let the governor re-count idle cores (cheap; rate-limited)."""
    return _governor.maybe_adjust() if _governor is not None else None


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
        global _governor
        _governor = ThreadGovernor()
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
