"""Mozilla Common Voice: ``<locale>/{train,dev,test,validated}.tsv`` and ``clips/*.mp3``.

TSV columns used: ``client_id`` (speaker), ``path`` (clip), ``sentence``, ``age`` (``twenties``,
...), ``gender``, ``accents`` (``accent`` in releases before 2021), ``locale``. Durations come
from ``clip_durations.tsv`` (milliseconds) when the release ships it, else from mp3 headers.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)
from speechllm.utils.textfile import utf8_lines

# Accent codes of the early English releases, made readable.
OLD_ACCENTS = {
    "us": "United States English", "england": "England English", "indian": "India and South Asia",
    "australia": "Australian English", "canada": "Canadian English", "scotland": "Scottish English",
    "african": "Southern African", "newzealand": "New Zealand English", "ireland": "Irish English",
    "philippines": "Filipino", "wales": "Welsh English", "bermuda": "Bermudian",
    "malaysia": "Malaysian English", "singapore": "Singaporean English", "hongkong": "Hong Kong English",
    "southatlandtic": "South Atlantic", "other": "other",
}
DEFAULT_SPLITS = ("train", "dev", "test")


def _locale_dir(root: Path) -> Path:
    if (root / "validated.tsv").is_file() or any((root / f"{s}.tsv").is_file() for s in DEFAULT_SPLITS):
        return root
    candidates = sorted(p.parent for p in root.glob("*/validated.tsv")) + sorted(
        p.parent for p in root.glob("*/*/validated.tsv"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CorpusError(f"commonvoice: no validated.tsv in {root} or its locale folders")
    raise CorpusError(f"commonvoice: {root} holds several locales ({', '.join(c.name for c in candidates)}); "
                      "give one locale folder")


def _read_tsv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a Common Voice TSV, lazily. Quotes are text, not CSV quoting (QUOTE_NONE)."""
    csv.field_size_limit(2**31 - 1)  # long sentences; sys.maxsize overflows on some platforms
    with open(path, encoding="utf-8", newline="") as f:
        yield from csv.DictReader(utf8_lines(f, path), delimiter="\t", quoting=csv.QUOTE_NONE)


@register_importer("commonvoice", labels="transcript, speaker (client_id), age, gender, accent, language",
                   source="https://commonvoice.mozilla.org/datasets")
def prepare_commonvoice(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
                        splits: Sequence[str] | None = None) -> PreparedCorpus:
    """Import one Common Voice locale (``corpus_dir`` is ``cv-corpus-*/<locale>`` or a folder
    with exactly one). ``splits`` are TSV names (default: ``train``, ``dev``, ``test`` where
    present, else ``validated``)."""
    root = _locale_dir(require_corpus_dir(corpus_dir, "commonvoice"))
    if splits:
        missing = [s for s in splits if not (root / f"{s}.tsv").is_file()]
        if missing:
            raise CorpusError(f"commonvoice: {', '.join(f'{s}.tsv' for s in missing)} not found in {root}")
        chosen = list(splits)
    else:
        chosen = [s for s in DEFAULT_SPLITS if (root / f"{s}.tsv").is_file()] or ["validated"]
    durations: dict[str, float] = {}
    if (root / "clip_durations.tsv").is_file():
        for row in _read_tsv(root / "clip_durations.tsv"):
            clip, ms = row.get("clip"), row.get("duration[ms]")
            if clip and ms and ms.strip().isdigit():
                durations[clip] = int(ms) / 1000
    builder = ManifestBuilder("commonvoice")
    for split in chosen:
        for row in _read_tsv(root / f"{split}.tsv"):
            clip = (row.get("path") or "").strip()
            if not clip:
                builder.skip("row_without_path", f"{split}.tsv")
                continue
            accent = row.get("accents") or row.get("accent") or ""
            # Old releases: one code ("us"); new ones: free text, several joined by "|".
            accent = OLD_ACCENTS.get(accent, accent) if "accents" not in row else accent.replace("|", ", ")
            builder.add(id=Path(clip).stem, audio=root / "clips" / clip, split=split,
                        speaker=row.get("client_id") or None, transcript=row.get("sentence"),
                        duration=durations.get(clip),
                        attributes={"age": row.get("age"), "gender": row.get("gender"),
                                    "accent": accent, "language": row.get("locale")})
    return builder.finish(output_dir)
