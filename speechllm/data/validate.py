"""Check a manifest before a long job reads it: schema, duplicate ids, and every audio file.

:func:`validate_manifest` reads the manifest line by line (constant memory apart from the id
set), keeps going past bad rows, and returns a :class:`ValidationReport` with a count per problem
kind and the first few ids (or ``file:line`` for rows without a usable id) of each.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.audio.io import AUDIO_ERROR_KINDS, MIN_SECONDS, AudioError, audio_info, load_audio
from speechllm.data.manifest import ManifestError, Utterance
from speechllm.errors import SpeechLLMError
from speechllm.utils.textfile import not_utf8_error

#: Problem kinds, in report order: row-level, then audio (the :class:`AudioError` kinds).
PROBLEM_KINDS: tuple[str, ...] = (
    "schema", "duplicate_id", "no_audio", *AUDIO_ERROR_KINDS, "segment_out_of_range",
)
#: A segment may end this far past the file's end (times rounded to ms, codec padding).
SEGMENT_END_TOLERANCE = 0.05


@dataclass
class ValidationReport:
    """Counts per problem kind and the first ``examples`` ids (or ``file:line``) of each."""

    path: Path
    rows: int = 0
    audio_checked: bool = True
    total_seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    max_examples: int = 5

    @property
    def ok(self) -> bool:
        return not self.counts

    @property
    def bad_rows(self) -> int:
        return sum(self.counts.values())

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.max_examples:
            self.examples[kind].append(example)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": str(self.path),
            "rows": self.rows,
            "audio_checked": self.audio_checked,
            "hours_checked": round(self.total_seconds / 3600, 4),
            "problems": {k: {"count": self.counts[k], "examples": list(self.examples[k])}
                         for k in _ordered(self.counts)},
        }

    def format(self) -> str:
        """A short human-readable report."""
        lines = [f"{self.path}: {self.rows} rows"
                 + (f", {self.total_seconds / 3600:.2f} h of audio checked" if self.audio_checked else
                    " (audio not checked)")]
        if self.ok:
            lines.append("no problems found")
        for kind in _ordered(self.counts):
            lines.append(f"  {kind:22s} {self.counts[kind]:8d}   e.g. {', '.join(self.examples[kind])}")
        return "\n".join(lines)


def _ordered(counts: Counter) -> list[str]:
    known = [k for k in PROBLEM_KINDS if k in counts]
    return known + sorted(k for k in counts if k not in PROBLEM_KINDS)


def _count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def check_utterance_audio(utt: Utterance, *, min_seconds: float = MIN_SECONDS,
                          max_seconds: float | None = None) -> tuple[str | None, float]:
    """Decode one utterance's audio (at its own rate: no resampling) and run every check.

    Returns ``(problem kind or None, seconds)``.
    """
    path = utt.audio_path
    assert path is not None
    try:
        info = audio_info(path)
        # A cut-short file is reported as truncated (by load_audio), not as a wrong segment.
        if (not info.truncated and utt.duration is not None
                and utt.offset + utt.duration > info.duration + SEGMENT_END_TOLERANCE):
            return "segment_out_of_range", 0.0
        wave = load_audio(path, offset=utt.offset, duration=utt.duration, sample_rate=info.sample_rate,
                          min_seconds=min_seconds, max_seconds=max_seconds)
    except AudioError as e:
        return e.kind, 0.0
    return None, len(wave) / info.sample_rate


def validate_manifest(
    path: str | os.PathLike,
    *,
    check_audio: bool = True,
    min_seconds: float = MIN_SECONDS,
    max_seconds: float | None = None,
    max_examples: int = 5,
    progress: bool = True,
) -> ValidationReport:
    """Validate every row of ``path``; never stops at the first problem.

    Row checks: valid JSON object, the manifest schema, unique ids, an ``audio`` path. Audio
    checks (``check_audio``): missing, unreadable, empty, NaN/Inf, all-zero, shorter than
    ``min_seconds``, longer than ``max_seconds``, truncated (the file holds or decodes to less
    than its header promises), a segment running past the file's end.
    """
    path = Path(path)
    if not path.is_file():
        raise SpeechLLMError(f"{path}: no such manifest")
    base = path.resolve().parent
    report = ValidationReport(path=path, audio_checked=check_audio, max_examples=max_examples)
    seen: set[str] = set()
    from speechllm.utils.progress import progress_bar

    bar = progress_bar(_count_lines(path) if progress else None, f"validate {path.name}", "row",
                       enabled=progress)
    # Bytes, decoded line by line: a line that is not UTF-8 is one counted problem, not the end.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            bar.update(1)
            if not raw.strip():
                continue
            report.rows += 1
            where = f"{path}:{line_no}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                report.add("schema", str(not_utf8_error(path, line_no, e)))
                continue
            except json.JSONDecodeError as e:
                report.add("schema", f"{where} (not valid JSON: {e.msg})")
                continue
            if not isinstance(row, dict):
                report.add("schema", f"{where} (not a JSON object)")
                continue
            try:
                utt = Utterance.from_dict(row, base_dir=base, where=where)
            except ManifestError as e:
                report.add("schema", str(e))
                continue
            if utt.id in seen:
                report.add("duplicate_id", f"{utt.id} ({where})")
                continue
            seen.add(utt.id)
            if utt.audio is None:
                report.add("no_audio", utt.id)
                continue
            if check_audio:
                kind, seconds = check_utterance_audio(utt, min_seconds=min_seconds, max_seconds=max_seconds)
                if kind is not None:
                    report.add(kind, utt.id)
                report.total_seconds += seconds
    bar.close()
    return report
