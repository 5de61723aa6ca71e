"""Manifests (JSONL, one utterance a row), Kaldi data dirs, corpus importers, synthetic corpus."""

from speechllm.data.manifest import (
    PROVENANCE_CORPUS,
    PROVENANCE_USER,
    ManifestError,
    Utterance,
    iter_manifest,
    read_manifest,
    write_manifest,
)

__all__ = [
    "PROVENANCE_CORPUS",
    "PROVENANCE_USER",
    "ManifestError",
    "Utterance",
    "iter_manifest",
    "read_manifest",
    "write_manifest",
]
