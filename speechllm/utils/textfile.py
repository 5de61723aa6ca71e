"""Text inputs must be UTF-8: when one is not, one line naming the file and line, and the fix.

Readers open text the fast way (text mode, or JSON from bytes) and only on a
:class:`UnicodeDecodeError` call :func:`not_utf8_error`, which finds the first offending line by
re-reading the file as bytes; :func:`utf8_lines` wraps a text-mode file for loops and ``csv``. A latin-1 ``é`` in a manifest, a label CSV or a Kaldi ``text`` file
then ends in ``m.jsonl:2: not UTF-8 text (byte 0xe9 at position 50); re-encode ...`` instead of
a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from speechllm.errors import SpeechLLMError


class NotUtf8Error(SpeechLLMError):
    """A text input (manifest, training rows, label file, Kaldi table) that is not UTF-8."""


def first_non_utf8(path: str | os.PathLike) -> tuple[int, int, int] | None:
    """``(line, position, byte)`` of the first byte of ``path`` that is not UTF-8 (line and
    position counted from 1, position in bytes within the line), or ``None`` when it all is."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                return line_no, e.start + 1, raw[e.start]
    return None


def not_utf8_error(path: str | os.PathLike, line_no: int | None = None,
                   err: UnicodeDecodeError | None = None) -> NotUtf8Error:
    """The error for ``path`` failing to decode as UTF-8.

    With ``line_no`` and ``err`` (the line's own bytes failed to decode: ``err.object`` is that
    line) the place is taken from them; otherwise the file is scanned for the first bad byte.
    """
    path = Path(path)
    place: tuple[int, int, int] | None = None
    if line_no is not None and err is not None and isinstance(err.object, (bytes, bytearray)):
        place = (line_no, err.start + 1, err.object[err.start])
    else:
        place = first_non_utf8(path)
    if place is None:  # decoded fine on a second look (the file changed meanwhile)
        where, what = str(path), "not UTF-8 text"
    else:
        where, what = f"{path}:{place[0]}", f"not UTF-8 text (byte 0x{place[2]:02x} at position {place[1]})"
    return NotUtf8Error(
        f"{where}: {what}; re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > "
        f"{path.stem}.utf8{path.suffix}"
    )


def utf8_lines(lines: Iterable[str], path: str | os.PathLike) -> Iterator[str]:
    """The lines of a file opened in text mode as UTF-8 (a file object, or what iterates one,
    for ``csv`` readers too); a decode error becomes :func:`not_utf8_error`."""
    try:
        yield from lines
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None
