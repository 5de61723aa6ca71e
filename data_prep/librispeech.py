"""LibriSpeech (OpenSLR 12): ``LibriSpeech/<subset>/<speaker>/<chapter>/<id>.flac`` with
``<speaker>-<chapter>.trans.txt`` transcripts, and gender from ``SPEAKERS.TXT``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)
from speechllm.utils.textfile import not_utf8_error


def read_speakers_txt(path: Path) -> dict[str, str]:
    """Speaker id -> sex (``M``/``F``) from ``SPEAKERS.TXT``.

    Rows are ``ID | SEX | SUBSET | MINUTES | NAME``; lines starting with ``;`` are comments. A
    few names contain ``|``, so only the first four bars split.
    """
    speakers: dict[str, str] = {}
    if not path.is_file():
        return speakers
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|", 4)]
        if len(fields) >= 2 and fields[0]:
            speakers[fields[0]] = fields[1]
    return speakers


@register_importer("librispeech", labels="transcript, speaker, gender (SPEAKERS.TXT); split = subset",
                   source="https://www.openslr.org/12")
def prepare_librispeech(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
                        splits: Sequence[str] | None = None) -> PreparedCorpus:
    """Import LibriSpeech. ``corpus_dir`` is the ``LibriSpeech`` folder or its parent; ``splits``
    limits the subsets (e.g. ``["dev-clean", "test-clean"]``; default: every subset found)."""
    root = require_corpus_dir(corpus_dir, "librispeech")
    if (root / "LibriSpeech").is_dir():
        root = root / "LibriSpeech"
    subsets = sorted(p for p in root.iterdir() if p.is_dir() and next(p.glob("*/*/*.trans.txt"), None))
    if not subsets:
        raise CorpusError(f"librispeech: {root} has no subset folders (dev-clean/, train-clean-100/, ...) "
                          "holding <speaker>/<chapter>/*.trans.txt")
    if splits:
        missing = sorted(set(splits) - {p.name for p in subsets})
        if missing:
            raise CorpusError(f"librispeech: subset(s) {', '.join(missing)} not found under {root}")
        subsets = [p for p in subsets if p.name in splits]
    genders = read_speakers_txt(root / "SPEAKERS.TXT")
    builder = ManifestBuilder("librispeech")
    for subset in subsets:
        for trans in sorted(subset.glob("*/*/*.trans.txt")):
            try:
                text = trans.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise not_utf8_error(trans) from None
            for line in text.splitlines():
                if not line.strip():
                    continue
                utt_id, _, text = line.strip().partition(" ")
                speaker = utt_id.split("-")[0]
                builder.add(id=utt_id, audio=trans.parent / f"{utt_id}.flac", split=subset.name,
                            speaker=speaker, transcript=text,
                            attributes={"gender": genders.get(speaker)})
    return builder.finish(output_dir)
