"""The training-curve plot: training loss (per step and smoothed) and validation loss against step.

Read from a run folder's ``metrics.jsonl`` (one row per optimizer step) and ``valid.jsonl`` (one
row per validation), so it can be drawn for a finished, stopped or running job alike:
``plot_training_curves(run_dir)`` writes ``run_dir/plots/training_curves.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

PLOT_NAME = "training_curves.png"


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def last_per_step(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Steps and values of ``key``, the last row winning where a resumed run repeated a step."""
    by_step = {r["step"]: float(r[key]) for r in rows if isinstance(r.get(key), (int, float))}
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to ``window`` values (as long as the input)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_training_curves(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Draw loss and validation loss against step; None when the run has no logged step."""
    run = Path(run_dir)
    steps, loss = last_per_step(_rows(run / "metrics.jsonl"), "loss")
    if not steps:
        return None
    vsteps, vloss = last_per_step(_rows(run / "valid.jsonl"), "valid_loss")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(steps, loss, color="#4c72b0", alpha=0.3, linewidth=0.8, label="training loss (per step)")
    window = max(1, len(steps) // 20)
    ax.plot(steps, moving_average(loss, window), color="#4c72b0", linewidth=1.8,
            label=f"training loss (mean of {window} steps)")
    if vsteps:
        ax.plot(vsteps, vloss, color="#dd8452", marker="o", linewidth=1.8, label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"Training curves: {run.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path) if path is not None else run / "plots" / PLOT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
