"""Corpus importers: one module per corpus, each a ``prepare_<corpus>(corpus_dir, output_dir)``
function registered with :func:`speechllm.data.importers.register_importer`.

``speechllm prepare --list`` lists them; ``speechllm prepare NAME CORPUS_DIR OUT_DIR`` runs one.
Importers only parse a corpus's own metadata; :class:`speechllm.data.importers.ManifestBuilder`
reads durations from audio headers, normalises label names and values, and writes the manifest.
"""

# Importing the package registers every built-in importer (the CLI's discovery).
from data_prep import (  # noqa: F401, E402
    accentdb,
    commonvoice,
    cremad,
    folder,
    iemocap,
    kaldi,
    librispeech,
    ravdess,
    vctk,
)
