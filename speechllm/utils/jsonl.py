"""JSONL reading and crash-safe, resumable appending.

Every long job (describe, generate, infer, eval) writes one JSON object per line through
:class:`ResumableJsonlWriter`: a row is written with a single ``write`` call and flushed as soon
as it is finished, so a job killed with SIGKILL loses at most the row in flight. On restart the
writer cuts a torn final line, reads the ids already written, and the job skips them: every id
ends up in the file exactly once.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError


class JsonlFormatError(SpeechLLMError):
    """A line of a JSONL file that is not a JSON object."""


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-blank line, lazily (constant memory).

    Raises :class:`JsonlFormatError` naming ``file:line`` for a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise JsonlFormatError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise JsonlFormatError(f"{path}:{line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise JsonlFormatError(
                    f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}"
                )
            yield line_no, row


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a whole JSONL file into a list (for small files; use :func:`iter_jsonl` otherwise)."""
    return [row for _, row in iter_jsonl(path)]


def dump_row(row: dict[str, Any], path: str | os.PathLike, key: str = "id") -> str:
    """One JSONL line (with its newline). NaN and Infinity are not JSON and crash later readers,
    so a row holding one raises :class:`JsonlFormatError` naming the file and the row's id."""
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        raise JsonlFormatError(
            f"{path}: row {str(row.get(key, '?'))!r}: a value is NaN or Infinity, which JSON cannot hold; "
            "fix the value (or leave the field out) before writing"
        ) from None


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows to ``path`` atomically (temporary file, then rename). Returns the row count."""
    from speechllm.utils.fs import atomic_write_text

    lines = [dump_row(r, path) for r in rows]
    atomic_write_text(path, "".join(lines))
    return len(lines)


def repair_torn_tail(path: str | os.PathLike) -> int:
    """Cut an unterminated final line (left by a killed writer). Returns the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline; everything after it is a torn row.
        pos = size
        block = 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                f.truncate(keep)
                return size - keep
            pos = start
        f.truncate(0)
        return size


class ResumableJsonlWriter:
    """Append-only JSONL writer that knows which ids are already in the file.

    >>> with ResumableJsonlWriter("out.jsonl") as w:          # doctest: +SKIP
    ...     for row in rows:
    ...         if row["id"] in w.done_ids:
    ...             continue
    ...         w.write({**row, "response": ...})
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", *, resume: bool = True):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_ids: set[str] = set()
        self.torn_bytes = 0
        if resume and self.path.exists():
            self.torn_bytes = repair_torn_tail(self.path)
            for _, row in iter_jsonl(self.path):
                if key in row:
                    self.done_ids.add(str(row[key]))
        elif not resume and self.path.exists():
            self.path.unlink()
        self.written = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, row: dict[str, Any]) -> None:
        """Append one row in a single write, so a kill leaves either the whole line or a torn
        tail that the next open removes. Duplicate ids raise ``ValueError``."""
        rid = str(row[self.key])
        if rid in self.done_ids:
            raise ValueError(f"{self.path}: id {rid!r} already written")
        data = dump_row(row, self.path, self.key).encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.done_ids.add(rid)
        self.written += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ResumableJsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_shard(spec: str | None) -> tuple[int, int]:
    """Parse ``"i/N"`` (0-based ``i``) into ``(i, N)``; ``None`` means ``(0, 1)``."""
    if spec is None or spec == "":
        return 0, 1
    try:
        i_str, n_str = spec.split("/")
        i, n = int(i_str), int(n_str)
    except ValueError:
        raise SpeechLLMError(f"--shard {spec!r}: expected 'i/N', e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SpeechLLMError(f"--shard {spec!r}: need 0 <= i < N (shards are numbered from 0)")
    return i, n


def shard_of(key: str, num_shards: int) -> int:
    """Stable shard index of an id (CRC32; the same on every machine and Python run)."""
    return zlib.crc32(key.encode("utf-8")) % num_shards
