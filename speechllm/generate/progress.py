"""Generation progress: rows/s and generated tokens/s, as a bar or as log lines (off a terminal)."""

from __future__ import annotations

import time


class GenerationProgress:
    """Progress over rows (:func:`speechllm.utils.progress.progress_bar`), generated tokens/s in its postfix."""

    def __init__(self, total: int | None, desc: str, *, enabled: bool = True):
        from speechllm.utils.progress import progress_bar

        self.start = time.perf_counter()
        self.rows = 0
        self.tokens = 0
        self.bar = progress_bar(total, desc, "row", enabled=enabled)

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens / elapsed:.1f} tok/s", refresh=False)
        self.bar.update(rows)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def close(self) -> None:
        self.bar.close()
