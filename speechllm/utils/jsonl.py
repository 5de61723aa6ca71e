"""JSONL reading and crash-safe, resumable appending.

Every long job (describe, generate, infer, eval) writes one JSON object per line through
:class:`ResumableJsonlWriter`: a row is written with a single ``write`` call and flushed as soon
as it is finished, so a job killed with SIGKILL loses at most the row in flight. On restart the
writer cuts a torn final line, reads the ids already written, and the job skips them: every id
ends up in the file exactly once.

One process writes an output at a time: the writer holds an exclusive ``flock`` on the file for
as long as it is open, and a second writer is refused at once (two appenders would each think
the other's ids are still to do and write them again). The kernel drops the lock when its
process dies, so a killed run never blocks the rerun.

A writer given ``settings`` records them beside the output and refuses to append to rows written
with other settings (:func:`check_same_settings`): resuming must not mix two configurations.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError
from speechllm.utils.textfile import utf8_lines

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no advisory locks, one writer is trusted
    fcntl = None  # type: ignore[assignment]


class JsonlFormatError(SpeechLLMError):
    """A line of a JSONL file that is not a JSON object."""


class OutputLockedError(SpeechLLMError):
    """Another process is writing the same output file."""


class SettingsChangedError(SpeechLLMError):
    """An output whose rows were written with other settings than the ones asked for now."""


def _settings_diff(stored: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ. Keys absent from ``stored`` are not compared: a file
    written before a setting existed was written with that setting's default behaviour."""
    changed = []
    for key, value in current.items():
        if key not in stored:
            continue
        old = stored[key]
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            changed += _settings_diff(old, value, f"{prefix}{key}.")
        elif old != value:
            changed.append(f"{prefix}{key}")
    return changed


def _lookup(settings: Mapping[str, Any], dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = value[part]
    return value


def check_same_settings(output_path: str | os.PathLike, stored: Mapping[str, Any],
                        current: Mapping[str, Any]) -> None:
    """Refuse to continue ``output_path`` when the settings its rows were written with
    (``stored``) differ from ``current``: a resumed run would mix rows of two configurations in
    one file, and a finished one would silently keep the old rows. Raises
    :class:`SettingsChangedError` naming the first differing settings."""
    changed = _settings_diff(stored, current)
    if changed:
        detail = "; ".join(f"{k}: {_lookup(stored, k)!r} in the file, {_lookup(current, k)!r} now"
                           for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise SettingsChangedError(
            f"{output_path}: its rows were written with other settings ({detail}{more}); continuing would "
            "mix two configurations. Write to a new file, or delete this one (and its sidecars) to start over"
        )


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-blank line, lazily (constant memory).

    Raises :class:`JsonlFormatError` naming ``file:line`` for a line that is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise JsonlFormatError(f"{path}: no such file")
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(utf8_lines(f, path), start=1):
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


def _lock_exclusively(fd: int, path: Path) -> None:
    """Take the exclusive advisory lock on an open output, or refuse at once (never wait: a
    second writer that waited would then redo the first one's rows)."""
    if fcntl is None:  # pragma: no cover
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputLockedError(
            f"{path}: another process is writing this file; wait for it to finish, or write to another file"
        ) from None
    except OSError as e:  # a file system without locks (some network mounts): say so, go on
        import logging

        logging.getLogger(__name__).warning(
            "%s: cannot lock (%s); make sure no other process writes this file", path, e.strerror or e)


def _parse_settings(path: Path, text: str) -> Any:
    """Settings text as stored in ``path`` (YAML for ``.yaml``/``.yml``, else JSON)."""
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def _dump_settings(path: Path, settings: Mapping[str, Any]) -> str:
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_dump(dict(settings), sort_keys=False, allow_unicode=True)
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


class ResumableJsonlWriter:
    """Append-only JSONL writer that knows which ids are already in the file.

    >>> with ResumableJsonlWriter("out.jsonl") as w:          # doctest: +SKIP
    ...     for row in rows:
    ...         if row["id"] in w.done_ids:
    ...             continue
    ...         w.write({**row, "response": ...})

    The file is locked against other writers while the writer is open (:class:`OutputLockedError`).
    ``settings`` (JSON-able) are recorded in ``settings_path`` (default ``<file>.settings.json``;
    a ``.yaml`` path is written as YAML) and checked on resume (:class:`SettingsChangedError`).
    """

    def __init__(self, path: str | os.PathLike, key: str = "id", *, resume: bool = True,
                 settings: Mapping[str, Any] | None = None, settings_path: str | os.PathLike | None = None):
        self.path = Path(path)
        self.key = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_ids: set[str] = set()
        self.torn_bytes = 0
        self.written = 0
        # Open (never truncate) and lock before reading or cutting anything: the lock is what
        # keeps a second process from reading ids that the first one is still appending.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock_exclusively(self._fd, self.path)
            if resume:
                self.torn_bytes = repair_torn_tail(self.path)
                for _, row in iter_jsonl(self.path):
                    if key in row:
                        self.done_ids.add(str(row[key]))
            else:
                os.ftruncate(self._fd, 0)
            if settings is not None:
                self._record_settings(settings, settings_path)
        except BaseException:
            self.close()
            raise

    def _record_settings(self, settings: Mapping[str, Any], settings_path: str | os.PathLike | None) -> None:
        from speechllm.utils.fs import atomic_write_text

        record = Path(settings_path) if settings_path is not None else \
            self.path.with_name(self.path.name + ".settings.json")
        text = _dump_settings(record, settings)
        if os.path.getsize(self.path) > 0:
            if not record.is_file():
                raise SettingsChangedError(
                    f"{self.path}: has rows but no record of the settings they were written with "
                    f"({record}), so resuming could mix two configurations; write to a new file, or "
                    "delete this one to start over")
            # Compare what the record will hold (after its format's round trip: tuples become
            # lists, and so on) with what it holds.
            try:
                stored = _parse_settings(record, record.read_text(encoding="utf-8"))
            except Exception:  # JSON or YAML syntax: reported below as not a record
                stored = None
            if not isinstance(stored, Mapping):
                raise SettingsChangedError(
                    f"{record}: not a settings record (expected a mapping); delete {self.path} and this "
                    "file to start over, or write to a new file")
            check_same_settings(self.path, stored, _parse_settings(record, text))
        atomic_write_text(record, text)

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
        """Flush to disk and release the file (and its lock)."""
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
