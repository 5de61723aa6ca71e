"""AccentDB (core and extended): ``data/<accent>/speaker_NN/<accent>_sNN_NNN.wav``."""

from __future__ import annotations

import os

from speechllm.data.importers import (
    CorpusError,
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)


@register_importer("accentdb", labels="speaker, accent (folder name: american, bangla, welsh, ...)",
                   source="https://accentdb.org")
def prepare_accentdb(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> PreparedCorpus:
    """Import AccentDB. ``corpus_dir`` is ``accentdb_core``/``accentdb_extended`` (holding
    ``data/``) or the ``data`` folder itself."""
    root = require_corpus_dir(corpus_dir, "accentdb")
    data = root / "data" if (root / "data").is_dir() else root
    files = sorted(data.glob("*/speaker_*/*.wav"))
    if not files:
        raise CorpusError(f"accentdb: no <accent>/speaker_NN/*.wav under {data}")
    builder = ManifestBuilder("accentdb")
    for audio in files:
        accent = audio.parents[1].name
        speaker = f"{accent}_{audio.parent.name}"
        builder.add(id=audio.stem, audio=audio, speaker=speaker,
                    attributes={"accent": accent.replace("_", " ").title()})
    return builder.finish(output_dir)
