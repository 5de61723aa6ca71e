"""The training loss of one or more runs as a Markdown table: the mean of each block of steps.

    python egs/synthetic/local/loss_curve.py exp/synthetic/train exp/synthetic_v3/train --block 50
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="train.output_dir folders (metrics.jsonl)")
    ap.add_argument("--block", type=int, default=50, help="steps per row of the table")
    args = ap.parse_args()
    curves = []
    for run in args.runs:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
        curves.append({r["step"]: r["loss"] for r in rows if "loss" in r})
    last = max(max(c) for c in curves)
    print("| steps | " + " | ".join(str(r) for r in args.runs) + " |")
    print("| --- | " + " | ".join("---:" for _ in args.runs) + " |")
    for start in range(1, last + 1, args.block):
        cells = []
        for c in curves:
            values = [c[s] for s in range(start, start + args.block) if s in c]
            cells.append(f"{sum(values) / len(values):.3f}" if values else "-")
        print(f"| {start}-{start + args.block - 1} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
