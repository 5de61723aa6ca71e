"""The manifest: JSONL, one utterance a row, read lazily.

A row::

    {"id": "198-209-0000", "audio": "wav/198-209-0000.flac", "offset": 0.0, "duration": 13.9,
     "speaker": "198", "transcript": "...", "corpus": "librispeech", "split": "train",
     "attributes": {"gender": "female"}, "provenance": {"gender": "corpus"}}

``audio`` is relative to the manifest's folder, or absolute. ``attributes`` is an open set
(gender, age, accent, emotion, intent, pitch, ...); ``provenance`` says where each came from:
``corpus`` (shipped labels), ``annotator:<name>`` (measured or predicted) or ``user``. Later stages
add fields (``description``, ``response``, ...); unknown fields are kept through every stage in
:attr:`Utterance.extra`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.errors import SpeechLLMError
from speechllm.utils.jsonl import JsonlFormatError, iter_jsonl

PROVENANCE_CORPUS = "corpus"
PROVENANCE_USER = "user"
#: Prefix of the provenance of a measured or predicted value: ``annotator:<name>``.
PROVENANCE_ANNOTATOR_PREFIX = "annotator:"


def annotator_provenance(name: str) -> str:
    """The provenance string of annotator ``name`` (``annotator:<name>``)."""
    return f"{PROVENANCE_ANNOTATOR_PREFIX}{name}"


def is_valid_provenance(value: str) -> bool:
    """``corpus``, ``user`` or ``annotator:<name>`` with a non-empty name."""
    return value in (PROVENANCE_CORPUS, PROVENANCE_USER) or (
        value.startswith(PROVENANCE_ANNOTATOR_PREFIX) and len(value) > len(PROVENANCE_ANNOTATOR_PREFIX)
    )

CORE_FIELDS = ("id", "audio", "offset", "duration", "speaker", "transcript", "corpus", "split",
               "attributes", "provenance")


class ManifestError(SpeechLLMError):
    """A manifest row that breaks the schema; the message names file, line and field."""


def read_times(row: dict[str, Any], where: str) -> tuple[float, float | None]:
    """``(offset, duration)`` of a row, checked: finite numbers, ``offset >= 0``, ``duration > 0``.

    Python's ``json`` reads ``NaN`` and ``Infinity`` although JSON has no such values; they would
    pass a ``< 0`` test and crash every reader of the audio later, so they are refused here with
    ``where`` (``file:line``) and the field. Shared by manifests and training rows.
    """

    def bad(fieldname: str, why: str) -> ManifestError:
        return ManifestError(f"{where}: field '{fieldname}': {why}")

    offset = row.get("offset", 0.0) or 0.0
    if not isinstance(offset, (int, float)) or isinstance(offset, bool):
        raise bad("offset", f"expected a number >= 0, got {offset!r}")
    if not math.isfinite(offset):
        raise bad("offset", f"expected a finite number, got {offset!r}")
    if offset < 0:
        raise bad("offset", f"expected a number >= 0, got {offset!r}")
    duration = row.get("duration")
    if duration is None:
        return float(offset), None
    if not isinstance(duration, (int, float)) or isinstance(duration, bool):
        raise bad("duration", f"expected a number > 0, got {duration!r}")
    if not math.isfinite(duration):
        raise bad("duration", f"expected a finite number, got {duration!r}")
    if duration <= 0:
        raise bad("duration", f"expected a number > 0, got {duration!r}")
    return float(offset), float(duration)


@dataclass
class Utterance:
    """One manifest row. ``audio_path`` is the resolved absolute path of ``audio``."""

    id: str
    audio: str | None
    offset: float = 0.0
    duration: float | None = None
    speaker: str | None = None
    transcript: str | None = None
    corpus: str | None = None
    split: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    base_dir: Path | None = field(default=None, repr=False, compare=False)

    @property
    def audio_path(self) -> Path | None:
        if self.audio is None:
            return None
        p = Path(self.audio)
        if not p.is_absolute() and self.base_dir is not None:
            p = self.base_dir / p
        return p

    def set_attribute(self, name: str, value: Any, provenance: str, *, overwrite: bool = False) -> bool:
        """Set ``attributes[name]`` with its provenance. An existing corpus or user label is kept
        unless ``overwrite``; returns whether the value was written."""
        current = self.provenance.get(name)
        if name in self.attributes and not overwrite and current in (PROVENANCE_CORPUS, PROVENANCE_USER):
            return False
        self.attributes[name] = value
        self.provenance[name] = provenance
        return True

    def to_dict(self, base_dir: Path | None = None) -> dict[str, Any]:
        """Plain row. ``audio`` is written relative to ``base_dir`` when it lies under it."""
        audio = self.audio
        same_folder = (audio is not None and base_dir is not None and self.base_dir is not None
                       and not os.path.isabs(audio) and Path(base_dir) == self.base_dir)
        if audio is not None and base_dir is not None and not same_folder:
            p = self.audio_path
            assert p is not None
            # abspath, not resolve(): no file-system calls per row (a million-row write would
            # otherwise stat every path component of every row).
            absolute = os.path.abspath(p)
            try:
                audio = os.path.relpath(absolute, os.path.abspath(base_dir))
                if audio.startswith(".."):
                    audio = absolute
            except ValueError:  # different drives on Windows
                audio = absolute
        row: dict[str, Any] = {"id": self.id, "audio": audio}
        if self.offset:
            row["offset"] = self.offset
        for key in ("duration", "speaker", "transcript", "corpus", "split"):
            value = getattr(self, key)
            if value is not None:
                row[key] = value
        row["attributes"] = dict(self.attributes)
        row["provenance"] = dict(self.provenance)
        row.update(self.extra)
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any], *, base_dir: Path | None = None,
                  where: str = "<row>") -> Utterance:
        """Validate a plain row; errors name ``where`` (``file:line``) and the field."""

        def bad(fieldname: str, why: str) -> ManifestError:
            return ManifestError(f"{where}: field '{fieldname}': {why}")

        if "id" not in row:
            raise bad("id", "missing (every row needs a unique id)")
        if not isinstance(row["id"], (str, int)) or str(row["id"]) == "":
            raise bad("id", f"expected a non-empty string, got {row['id']!r}")
        audio = row.get("audio")
        if audio is not None and (not isinstance(audio, str) or not audio):
            raise bad("audio", f"expected a path string, got {audio!r}")
        offset, duration = read_times(row, where)
        for key in ("speaker", "transcript", "corpus", "split"):
            value = row.get(key)
            if value is not None and not isinstance(value, str):
                if key == "speaker" and isinstance(value, int):
                    continue
                raise bad(key, f"expected a string, got {type(value).__name__}")
        attributes = row.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise bad("attributes", f"expected an object, got {type(attributes).__name__}")
        provenance = row.get("provenance") or {}
        if not isinstance(provenance, dict) or not all(isinstance(v, str) for v in provenance.values()):
            raise bad("provenance", "expected an object of attribute -> source string")
        for name, source in provenance.items():
            if not is_valid_provenance(source):
                raise bad(f"provenance.{name}", f"{source!r} is not 'corpus', 'user' or 'annotator:<name>'")
        extra = {k: v for k, v in row.items() if k not in CORE_FIELDS}
        speaker = row.get("speaker")
        return cls(
            id=str(row["id"]),
            audio=audio,
            offset=offset,
            duration=duration,
            speaker=str(speaker) if speaker is not None else None,
            transcript=row.get("transcript"),
            corpus=row.get("corpus"),
            split=row.get("split"),
            attributes=dict(attributes),
            provenance=dict(provenance),
            extra=extra,
            base_dir=base_dir,
        )


def iter_manifest(path: str | os.PathLike, *, check_unique_ids: bool = True) -> Iterator[Utterance]:
    """Lazily yield validated :class:`Utterance` rows, one line read at a time.

    With ``check_unique_ids`` a repeated id raises; the set of ids seen is then the only thing
    that grows (about 100 bytes a row). Pass ``False`` for strictly constant memory.
    """
    path = Path(path)
    base = path.resolve().parent
    seen: set[str] = set()
    try:
        for line_no, row in iter_jsonl(path):
            utt = Utterance.from_dict(row, base_dir=base, where=f"{path}:{line_no}")
            if check_unique_ids:
                if utt.id in seen:
                    raise ManifestError(f"{path}:{line_no}: field 'id': duplicate id {utt.id!r}")
                seen.add(utt.id)
            yield utt
    except JsonlFormatError as e:
        raise ManifestError(str(e)) from None


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    """All rows of a manifest (small manifests; iterate with :func:`iter_manifest` otherwise)."""
    return list(iter_manifest(path))


def write_manifest(path: str | os.PathLike, utterances: Iterable[Utterance]) -> int:
    """Write rows atomically (temporary file, then rename), streaming: a generator of a million
    rows is never held in memory. Audio paths become relative to the manifest's folder when they
    lie under it, absolute otherwise. Returns the row count."""
    from speechllm.utils.fs import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    count = 0
    with atomic_open(path, "w") as f:
        for utt in utterances:
            try:
                # allow_nan=False: NaN/Infinity are not JSON and crash every later reader.
                line = json.dumps(utt.to_dict(base), ensure_ascii=False, allow_nan=False)
            except ValueError:
                raise ManifestError(
                    f"{path}: row {utt.id!r}: a value is NaN or Infinity, which JSON cannot hold; "
                    "fix the value (or leave the field out) before writing"
                ) from None
            f.write(line + "\n")
            count += 1
    return count
