"""Corpus importers: one module per corpus, each a ``prepare_<corpus>(corpus_dir, output_dir)``
function registered with :func:`speechllm.data.importers.register_importer`.

``speechllm prepare --list`` lists them; ``speechllm prepare NAME CORPUS_DIR OUT_DIR`` runs one.
Importers only parse a corpus's own metadata; :class:`speechllm.data.importers.ManifestBuilder`
reads durations from audio headers, normalises label names and values, and writes the manifest.
"""
