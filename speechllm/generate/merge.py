"""Join the outputs of sharded runs (``--shard i/N``) into one file, checking every id once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from speechllm.errors import SpeechLLMError
from speechllm.utils.jsonl import iter_jsonl, repair_torn_tail


class MergeError(SpeechLLMError):
    """Shards that do not join into one complete output (duplicates or missing ids)."""


@dataclass
class MergeReport:
    """What a merge found: rows per shard, duplicated ids, ids expected but missing."""

    rows: int = 0
    per_shard: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # id -> files holding it
    missing: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.duplicates and not self.missing

    def lines(self) -> list[str]:
        out = [f"{name}: {n} rows" for name, n in self.per_shard.items()]
        out.append(f"total: {self.rows} rows")
        if self.duplicates:
            some = list(self.duplicates.items())[:5]
            out.append(f"duplicate ids: {len(self.duplicates)} (e.g. "
                       + "; ".join(f"{k} in {', '.join(v)}" for k, v in some) + ")")
        if self.missing:
            out.append(f"missing ids: {len(self.missing)} (e.g. {', '.join(self.missing[:5])})")
        return out


def merge_shards(
    shards: list[str | os.PathLike],
    output: str | os.PathLike,
    *,
    expected: str | os.PathLike | None = None,
    require_description: bool = True,
    allow_incomplete: bool = False,
) -> MergeReport:
    """Concatenate shard files into ``output`` (atomically), in shard order.

    Every id must occur exactly once across the shards; with ``expected`` (the described input)
    every input id that has a description (all ids when ``require_description`` is false) must be
    present. Problems raise :class:`MergeError` listing them, and nothing is written, unless
    ``allow_incomplete`` (missing ids are then only reported; duplicates always raise).
    Ids a run dropped as degenerate (``<shard>.dropped.jsonl`` beside a shard) count as present.
    """
    from speechllm.generate.targets import sidecar_path

    if not shards:
        raise MergeError("give at least one shard file")
    report = MergeReport()
    where: dict[str, list[str]] = {}
    present: set[str] = set()
    for shard in shards:
        path = Path(shard)
        if not path.is_file():
            raise MergeError(f"{path}: no such shard file")
        if Path(output).resolve() == path.resolve():
            raise MergeError(f"{path}: the merged output must not be one of the shards")
        repair_torn_tail(path)  # a shard whose writer was killed: its last line is incomplete
        count = 0
        for line_no, row in iter_jsonl(path):
            if "id" not in row:
                raise MergeError(f"{path}:{line_no}: row without an 'id'")
            rid = str(row["id"])
            where.setdefault(rid, []).append(str(path))
            count += 1
        report.per_shard[str(path)] = count
        dropped = sidecar_path(path, "dropped.jsonl")
        if dropped.is_file():
            present.update(str(r["id"]) for _, r in iter_jsonl(dropped) if "id" in r)
    report.rows = sum(report.per_shard.values())
    report.duplicates = {k: v for k, v in where.items() if len(v) > 1}
    present.update(where)
    if expected is not None:
        for _, row in iter_jsonl(expected):
            if "id" not in row:
                continue
            description = row.get("description")
            if require_description and not (isinstance(description, str) and description.strip()):
                continue
            if str(row["id"]) not in present:
                report.missing.append(str(row["id"]))
    if report.duplicates or (report.missing and not allow_incomplete):
        raise MergeError("; ".join(report.lines()[-2:] if report.duplicates and report.missing else report.lines()[-1:])
                         + " — nothing written; re-run the shards that lack ids (a restart skips finished ids)"
                         + (" and remove duplicated rows" if report.duplicates else ""))
    _concatenate([Path(s) for s in shards], Path(output))
    return report


def _concatenate(shards: list[Path], output: Path) -> None:
    """Stream the shards' lines into ``output`` through a temporary file and a rename."""
    from speechllm.utils.fs import atomic_open

    with atomic_open(output, "wb") as out:
        for shard in shards:
            with open(shard, "rb") as f:
                for line in f:
                    if line.strip():
                        out.write(line if line.endswith(b"\n") else line + b"\n")


