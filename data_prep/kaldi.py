"""A Kaldi data dir (``wav.scp``, ``segments``, ``text``, ``utt2spk``, ``spk2gender``, ...)."""

from __future__ import annotations

import os
from pathlib import Path

from speechllm.data.importers import (
    ManifestBuilder,
    PreparedCorpus,
    register_importer,
    require_corpus_dir,
)
from speechllm.data.kaldi import read_kaldi_dir


@register_importer("kaldi", labels="transcript (text), speaker (utt2spk), gender (spk2gender), "
                   "segments, every utt2<name> table as an attribute",
                   source="any Kaldi/ESPnet recipe's data/<set> folder")
def prepare_kaldi(corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None, *,
                  allow_pipes: bool = False, root: str | os.PathLike | None = None) -> PreparedCorpus:
    """Import a Kaldi data dir; ``split`` is the folder's name (``data/train`` -> ``train``).

    ``root`` is the folder relative paths and pipe commands are taken from (Kaldi recipes run
    from ``egs/<corpus>/s5``; default: the data dir's grandparent, i.e. the recipe folder for
    ``<recipe>/data/<set>``). ``allow_pipes`` runs ``cmd |`` entries of wav.scp: only for data
    dirs you trust, since that executes their shell code. Piped audio is saved as FLAC under
    ``<output_dir>/pipe_audio``.
    """
    data_dir = require_corpus_dir(corpus_dir, "kaldi")
    recipe_root = Path(root) if root is not None else data_dir.resolve().parent.parent
    pipe_dir = Path(output_dir) / "pipe_audio" if output_dir is not None else None
    builder = ManifestBuilder("kaldi")
    for utt in read_kaldi_dir(data_dir, allow_pipes=allow_pipes, root=recipe_root, pipe_audio_dir=pipe_dir):
        builder.add(id=utt.id, audio=utt.audio, split=data_dir.name, speaker=utt.speaker,
                    transcript=utt.transcript, offset=utt.offset, duration=utt.duration,
                    attributes=utt.attributes)
    return builder.finish(output_dir)
