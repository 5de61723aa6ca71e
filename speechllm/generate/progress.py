"""A progress bar that shows rows/s and generated tokens/s."""

from __future__ import annotations

import time


class GenerationProgress:
    """tqdm bar over rows, with generated tokens/s in its postfix."""

    def __init__(self, total: int | None, desc: str, *, enabled: bool = True):
        from tqdm import tqdm

        self.start = time.perf_counter()
        self.rows = 0
        self.tokens = 0
        self.bar = tqdm(total=total, desc=desc, unit="row", disable=not enabled or None,
                        dynamic_ncols=True, smoothing=0.1)

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
