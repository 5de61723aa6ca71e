"""A folder of audio files plus (optionally) a CSV/TSV of labels.

The labels file names each row's audio in a column called ``audio``, ``path``, ``file``,
``filename``, ``file_name`` or ``wav`` (relative to the folder, or absolute). Optional columns:
``id``, ``speaker`` (``speaker_id``, ``client_id``), ``transcript`` (``text``, ``sentence``),
``split``, ``offset``, ``duration``. Every other column is an attribute; names are normalised
(``Sex`` -> ``gender``, ``Accents`` -> ``accent``). Without a labels file every audio file below
the folder is imported with no labels.
"""

from __future__ import annotations

import csv
import math
import os
import re
from pathlib import Path

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    is_missing_value,
    normalise_attribute_name,
    register_importer,
    require_corpus_dir,
)
from speechllm.utils.textfile import not_utf8_error, utf8_lines

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
LABEL_FILES = ("labels.csv", "labels.tsv", "metadata.csv", "metadata.tsv")
_AUDIO_COLS = ("audio", "path", "file", "filename", "file_name", "wav", "audio_path")
_SPECIAL = {
    "id": ("id", "utt_id", "utterance_id"),
    "speaker": ("speaker", "speaker_id", "client_id", "spk"),
    "transcript": ("transcript", "text", "sentence", "transcription"),
    "split": ("split", "subset"),
    "offset": ("offset", "start"),
    "duration": ("duration",),
}


def _number(value: str, where: str, column: str) -> float | None:
    """A time column's value; blank or a placeholder (``nan``, ``n/a``) is ``None`` (unknown: the
    duration is then read from the audio header). ``inf`` is refused: no audio lasts forever."""
    if is_missing_value(value):
        return None
    try:
        number = float(value)
    except ValueError:
        raise CorpusError(f"{where}: column {column!r}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise CorpusError(f"{where}: column {column!r}: {value!r} is not a finite number")
    return number


def _id_from(rel: Path) -> str:
    return re.sub(r"[^\w.-]+", "_", str(rel.with_suffix("")))


@register_importer("folder", labels="every column of the labels CSV/TSV (attribute names normalised)",
                   source="your own recordings")
def prepare_folder(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
                   labels: str | os.PathLike | None = None) -> PreparedCorpus:
    """Import a folder of audio. ``labels`` is the CSV/TSV (default: ``labels.csv``,
    ``labels.tsv``, ``metadata.csv`` or ``metadata.tsv`` in the folder, if one exists)."""
    root = require_corpus_dir(corpus_dir, "folder")
    corpus = root.resolve().name
    if labels is None:
        labels = next((root / n for n in LABEL_FILES if (root / n).is_file()), None)
    builder = ManifestBuilder(corpus)
    if labels is None:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
        if not files:
            raise CorpusError(f"folder: no audio ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
        for audio in files:
            builder.add(id=_id_from(audio.relative_to(root)), audio=audio)
        return builder.finish(output_dir)

    labels_path = Path(labels)
    if not labels_path.is_file():
        raise CorpusError(f"folder: labels file {labels_path} does not exist")
    with open(labels_path, encoding="utf-8-sig", newline="") as f:
        try:
            head = f.read(4096)
        except UnicodeDecodeError:
            raise not_utf8_error(labels_path) from None
        f.seek(0)
        delimiter = "\t" if labels_path.suffix.lower() == ".tsv" or ("\t" in head and "," not in head) else ","
        reader = csv.DictReader(utf8_lines(f, labels_path), delimiter=delimiter)
        columns = {normalise_attribute_name(c): c for c in (reader.fieldnames or [])}
        audio_col = next((columns[c] for c in _AUDIO_COLS if c in columns), None)
        if audio_col is None:
            raise CorpusError(f"{labels_path}:1: no audio column; name one of: {', '.join(_AUDIO_COLS)}")
        special = {key: next((columns[c] for c in names if c in columns), None)
                   for key, names in _SPECIAL.items()}
        used = {audio_col, *(c for c in special.values() if c)}
        for line_no, row in enumerate(reader, start=2):
            where = f"{labels_path}:{line_no}"
            rel = (row.get(audio_col) or "").strip()
            if not rel:
                raise CorpusError(f"{where}: column {audio_col!r} is empty")
            audio = Path(rel) if Path(rel).is_absolute() else root / rel

            def get(key: str, row: dict[str, str] = row) -> str | None:
                col = special[key]
                value = (row.get(col) or "").strip() if col else ""
                return value or None

            builder.add(
                id=get("id") or _id_from(Path(rel)),
                audio=audio,
                split=get("split"),
                speaker=get("speaker"),
                transcript=get("transcript"),
                offset=_number(get("offset") or "", where, "offset") or 0.0,
                duration=_number(get("duration") or "", where, "duration"),
                attributes={c: row.get(c) for c in reader.fieldnames or [] if c not in used},
            )
    return builder.finish(output_dir)
