"""Wall time per stage from the log of egs/TEMPLATE/stages.sh (its "[date time] (corpus) stage N"
lines), as a Markdown table.

    bash egs/synthetic/run.sh 2>&1 | tee run.log; python egs/synthetic/local/stage_times.py run.log
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] \([^)]*\) (stage (\d) \(([^)]*)\)|done)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("log", type=Path)
    args = ap.parse_args()
    marks: list[tuple[datetime, str]] = []
    for line in args.log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = LINE.match(line)
        if m:
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
            name = f"{m.group(3)} {m.group(4)}" if m.group(3) else "done"
            if not marks or marks[-1][1] != name:
                marks.append((when, name))
    print("| stage | wall time |\n| --- | ---: |")
    for (start, name), (end, _) in zip(marks, marks[1:]):
        s = int((end - start).total_seconds())
        print(f"| {name} | {s // 60} min {s % 60:02d} s |")
    total = int((marks[-1][0] - marks[0][0]).total_seconds()) if len(marks) > 1 else 0
    print(f"| total | **{total // 60} min {total % 60:02d} s** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
