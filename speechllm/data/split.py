"""Split one manifest into train / dev / test manifests.

Two rules, both deterministic:

* **by an existing field** (``--map train=train-clean-100+train-clean-360 --map dev=dev-clean``):
  rows go where their ``split`` (or another field) value is mapped; unmapped values are dropped
  and counted. For corpora that ship splits (LibriSpeech subsets, IEMOCAP sessions, Common Voice).
* **by speaker hash** (``--dev 0.05 --test 0.05``): each speaker (or utterance, when a row has no
  speaker) lands in one split by a seeded CRC32 of its id, so no speaker is in two splits. For
  corpora that ship none (VCTK, CREMA-D, RAVDESS, AccentDB).
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from pathlib import Path

from speechllm.data.manifest import Utterance, iter_manifest, write_manifest
from speechllm.errors import SpeechLLMError

SPLITS = ("train", "dev", "test")


def parse_split_map(items: list[str]) -> dict[str, str]:
    """``["train=a+b", "dev=c"]`` -> ``{"a": "train", "b": "train", "c": "dev"}``."""
    mapping: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise SpeechLLMError(f"--map {item!r}: expected NAME=VALUE[+VALUE...], e.g. dev=dev-clean")
        name, values = item.split("=", 1)
        for value in values.split("+"):
            if not value:
                raise SpeechLLMError(f"--map {item!r}: empty value")
            if value in mapping and mapping[value] != name:
                raise SpeechLLMError(f"--map: {value!r} is mapped to both {mapping[value]} and {name}")
            mapping[value] = name
    return mapping


def _hash_fraction(key: str, seed: int) -> float:
    return zlib.crc32(f"{seed}:{key}".encode()) / 0xFFFFFFFF


def assign_by_speaker(utt: Utterance, dev: float, test: float, seed: int) -> str:
    """The split of ``utt`` under the speaker-hash rule."""
    x = _hash_fraction(utt.speaker or utt.id, seed)
    if x < test:
        return "test"
    if x < test + dev:
        return "dev"
    return "train"


def split_manifest(manifest: str | os.PathLike, out_dir: str | os.PathLike, *,
                   mapping: dict[str, str] | None = None, field: str = "split",
                   dev: float = 0.05, test: float = 0.05, seed: int = 0) -> dict[str, int]:
    """Write ``out_dir/<name>.jsonl`` for every split name; returns row counts (``dropped`` =
    rows whose field value is not mapped). Audio paths stay valid (rewritten relative to
    ``out_dir``)."""
    if not 0 <= dev < 1 or not 0 <= test < 1 or dev + test >= 1:
        raise SpeechLLMError(f"split fractions dev={dev}, test={test}: need 0 <= each and dev + test < 1")
    buckets: dict[str, list[Utterance]] = {}
    dropped: Counter[str] = Counter()
    for utt in iter_manifest(manifest):
        if mapping is not None:
            value = getattr(utt, field, None) if field in ("split", "corpus", "speaker") else utt.extra.get(field)
            name = mapping.get(str(value)) if value is not None else None
            if name is None:
                dropped[str(value)] += 1
                continue
        else:
            name = assign_by_speaker(utt, dev, test, seed)
        utt.split = name
        buckets.setdefault(name, []).append(utt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(set(mapping.values())) if mapping is not None else list(SPLITS)
    from speechllm.utils.fs import refuse_same_file

    for name in names:  # before writing any: a split file must not replace the manifest it came from
        refuse_same_file(manifest, out / f"{name}.jsonl")
    counts = {}
    for name in names:
        counts[name] = write_manifest(out / f"{name}.jsonl", buckets.get(name, []))
    counts["dropped"] = sum(dropped.values())
    return counts
