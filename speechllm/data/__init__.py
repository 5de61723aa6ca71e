"""Manifests (JSONL, one utterance a row), Kaldi data dirs, corpus importers, synthetic corpus."""

from speechllm.data.manifest import (
    PROVENANCE_ANNOTATOR_PREFIX,
    PROVENANCE_CORPUS,
    PROVENANCE_USER,
    ManifestError,
    Utterance,
    annotator_provenance,
    is_valid_provenance,
    iter_manifest,
    read_manifest,
    write_manifest,
)

__all__ = [
    "PROVENANCE_ANNOTATOR_PREFIX",
    "PROVENANCE_CORPUS",
    "PROVENANCE_USER",
    "ManifestError",
    "Utterance",
    "annotator_provenance",
    "is_valid_provenance",
    "iter_manifest",
    "read_manifest",
    "write_manifest",
]
