"""Progress for every long stage: a tqdm bar on a terminal, periodic log lines everywhere else.

tqdm hides itself when stderr is not a terminal, so a stage whose output goes to a log file (the
stage scripts, cluster jobs) used to be silent for minutes. :func:`progress_bar` returns a tqdm bar
on a terminal and otherwise a :class:`LogLineProgress` that prints one line every
``$SPEECHLLM_PROGRESS_SECONDS`` (default 30) with the count, rate and ETA, plus a last line at the
end. Both take the same calls (``update``, ``set_postfix_str``, ``set_postfix``, ``close``).
Each update also lets ``auto`` threads follow the machine's load (:func:`~speechllm.utils.threads.adapt_threads`):
every long loop passes through here.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from speechllm.utils.threads import adapt_threads

DEFAULT_INTERVAL_SECONDS = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("SPEECHLLM_PROGRESS_SECONDS", DEFAULT_INTERVAL_SECONDS)))
    except ValueError:
        return DEFAULT_INTERVAL_SECONDS


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``."""
    seconds = int(round(max(seconds, 0.0)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LogLineProgress:
    """Prints ``desc: n/total unit (p%), r unit/s, elapsed, ETA [postfix]`` every ``interval`` s."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, initial: int = 0,
                 interval: float | None = None, stream: TextIO | None = None):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self._initial = initial
        self._interval = _interval() if interval is None else interval
        self._stream = stream
        self._start = self._last = time.monotonic()
        self._postfix = ""
        self._closed = False
        self._printed_n = initial

    def update(self, n: int = 1) -> None:
        self.n += n
        adapt_threads()
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._print(now)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._postfix = text

    def set_postfix(self, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def line(self, now: float | None = None) -> str:
        """The progress line as printed now."""
        elapsed = (time.monotonic() if now is None else now) - self._start
        done = self.n - self._initial
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.n}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        parts.append(f"{rate:.2f} {self.unit}/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {format_duration((self.total - self.n) / rate)}")
        if self._postfix:
            parts.append(self._postfix)
        return ", ".join(parts)

    def _print(self, now: float | None = None) -> None:
        self._printed_n = self.n
        print(self.line(now), file=self._stream or sys.stderr, flush=True)

    def close(self) -> None:
        """Print the final count, unless the last line already showed it."""
        if not self._closed:
            self._closed = True
            if self.n != self._printed_n:
                self._print()


class _NoProgress:
    n = 0

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def set_postfix(self, **values: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, desc: str, unit: str = "it", *, enabled: bool = True,
                 initial: int = 0):
    """A tqdm bar when stderr is a terminal, else a :class:`LogLineProgress`; nothing when disabled."""
    if not enabled:
        return _NoProgress()
    if sys.stderr.isatty():
        from tqdm import tqdm

        class _Bar(tqdm):
            def update(self, n: float | None = 1) -> bool | None:
                adapt_threads()
                return super().update(n)

        return _Bar(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, smoothing=0.1)
    return LogLineProgress(total, desc, unit, initial=initial)
