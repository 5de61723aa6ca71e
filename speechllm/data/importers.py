"""Corpus importers: the registry, the builder every importer fills, label normalisation.

An importer is a function ``prepare_<name>(corpus_dir, output_dir=None, **options)`` in the
``data_prep`` package, registered with :func:`register_importer`. The dependency points one way:
``data_prep`` uses this module, and whoever wants the built-in importers imports ``data_prep``
(``speechllm prepare`` does; so does ``import data_prep`` in Python). The CLI mirrors the Python
API (lhotse style): ``speechllm prepare vctk CORPUS OUT`` calls ``data_prep.vctk.prepare_vctk``.
Importers only parse the corpus's metadata; :class:`ManifestBuilder` does the rest (durations
from audio headers, label names and values made uniform, provenance ``corpus``, files that
cannot be used counted by kind, manifests and a summary written).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.data.manifest import PROVENANCE_CORPUS, Utterance, write_manifest
from speechllm.errors import SpeechLLMError

#: How many example ids/paths a summary keeps for each kind of skipped file.
EXAMPLES_PER_PROBLEM = 5


class CorpusError(SpeechLLMError):
    """A corpus folder that does not exist or does not have the layout its importer expects."""


# --------------------------------------------------------------------------- label normalisation

_GENDER = {
    "m": "male", "male": "male", "man": "male", "male_masculine": "male", "masculine": "male",
    "f": "female", "female": "female", "woman": "female", "female_feminine": "female",
    "feminine": "female",
}
_ATTRIBUTE_ALIASES = {
    "sex": "gender", "accents": "accent", "emo": "emotion", "emotion_level": "emotion_intensity",
    "intensity": "emotion_intensity", "emotional_intensity": "emotion_intensity",
    "locale": "language", "lang": "language", "activation": "arousal",
}


def normalise_attribute_name(name: str) -> str:
    """``"Sex"`` -> ``gender``, ``"Emotion Level"`` -> ``emotion_intensity``, ``accents`` ->
    ``accent``: lower case, ``snake_case``, one name per concept across corpora."""
    key = re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")
    return _ATTRIBUTE_ALIASES.get(key, key)


def normalise_gender(value: Any) -> str | None:
    """``M``/``F``/``Male``/``female_feminine`` ... -> ``male``/``female``; other answers are kept
    in lower case (``other``, ``non-binary``); blanks -> ``None``."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    return _GENDER.get(text.lower(), text.lower())


#: Spreadsheet placeholders for "no value" (pandas writes ``nan``): blanks, not values.
MISSING_VALUES = frozenset({"-", "?", "nan", "n/a", "na", "none", "null"})


def is_missing_value(text: str) -> bool:
    """Whether a label-file cell means "no value": blank or a placeholder in :data:`MISSING_VALUES`."""
    text = text.strip()
    return not text or text.lower() in MISSING_VALUES


def normalise_value(name: str, value: Any) -> Any:
    """Make a label value uniform: strip strings, blanks -> ``None``, gender words, integer ages."""
    if isinstance(value, str):
        value = value.strip()
        if is_missing_value(value):
            return None
    if name == "gender":
        return normalise_gender(value)
    if name == "age" and isinstance(value, str) and re.fullmatch(r"\d+(\.0+)?", value):
        return int(float(value))
    return value


# --------------------------------------------------------------------------- results and builder


@dataclass
class PreparedCorpus:
    """What an importer found: utterances by split, and the files it had to skip (by kind)."""

    corpus: str
    splits: dict[str, list[Utterance]]
    skipped: dict[str, list[str]] = field(default_factory=dict)
    skipped_counts: dict[str, int] = field(default_factory=dict)
    manifests: list[Path] = field(default_factory=list)

    def utterances(self) -> Iterator[Utterance]:
        for split in sorted(self.splits):
            yield from self.splits[split]

    def __len__(self) -> int:
        return sum(len(v) for v in self.splits.values())

    def summary(self) -> dict[str, Any]:
        """Counts per split (utterances, hours, speakers), label value counts, skipped files."""
        attrs: dict[str, Counter] = defaultdict(Counter)
        per_split = {}
        for split, utts in sorted(self.splits.items()):
            seconds = sum(u.duration or 0.0 for u in utts)
            per_split[split] = {
                "utterances": len(utts),
                "hours": round(seconds / 3600, 4),
                "speakers": len({u.speaker for u in utts if u.speaker is not None}),
                "with_transcript": sum(1 for u in utts if u.transcript),
            }
            for u in utts:
                for name, value in u.attributes.items():
                    attrs[name][str(value)] += 1
        return {
            "corpus": self.corpus,
            "utterances": len(self),
            "splits": per_split,
            # The 20 most frequent values per attribute; ages and free-text accents have many.
            "attributes": {name: dict(c.most_common(20)) for name, c in sorted(attrs.items())},
            "skipped": {kind: {"count": self.skipped_counts[kind], "examples": self.skipped[kind]}
                        for kind in sorted(self.skipped)},
        }

    def write(self, output_dir: str | os.PathLike, *, per_split: bool = False) -> list[Path]:
        """Write ``manifest.jsonl`` (every row; ``split`` in each), ``manifest.<split>.jsonl``
        for each split when ``per_split``, and ``summary.json``. Returns the manifests."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "manifest.jsonl"]
        write_manifest(paths[0], self.utterances())
        if per_split:
            for split, utts in sorted(self.splits.items()):
                p = out / f"manifest.{split}.jsonl"
                write_manifest(p, utts)
                paths.append(p)
        (out / "summary.json").write_text(json.dumps(self.summary(), indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        self.manifests = paths
        return paths


#: Split name used when a corpus has no official split.
NO_SPLIT = "all"


class ManifestBuilder:
    """Collects utterances for an importer.

    ``add`` reads the duration from the audio header (never decodes), normalises attribute names
    and values, marks them with provenance ``corpus``, and counts files that cannot be used by
    :class:`~speechllm.audio.AudioError` kind instead of failing the whole import.
    """

    def __init__(self, corpus: str, *, progress: bool = True):
        self.corpus = corpus
        self.splits: dict[str, list[Utterance]] = defaultdict(list)
        self.skipped: dict[str, list[str]] = defaultdict(list)
        self.skipped_counts: Counter = Counter()
        self._ids: set[str] = set()
        from speechllm.utils.progress import progress_bar

        # A bar on a terminal, a line every 30 s in logs (the total is not known ahead).
        self._bar = progress_bar(None, f"prepare {corpus}", "utt", enabled=progress)

    def skip(self, kind: str, what: str) -> None:
        """Record a file or row that was not imported (``kind``: a short name for counting)."""
        self.skipped_counts[kind] += 1
        if len(self.skipped[kind]) < EXAMPLES_PER_PROBLEM:
            self.skipped[kind].append(what)

    def add(
        self,
        *,
        id: str,
        audio: str | os.PathLike,
        split: str | None = None,
        speaker: str | None = None,
        transcript: str | None = None,
        attributes: dict[str, Any] | None = None,
        offset: float = 0.0,
        duration: float | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Utterance | None:
        """Add one utterance; returns it, or ``None`` when its audio was unusable (counted)."""
        from speechllm.audio import AudioError, audio_info

        if id in self._ids:
            self.skip("duplicate_id", id)
            return None
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            # A corpus's own duration that is NaN, infinite or not positive is no duration at
            # all: read the header instead of writing a row every later stage would refuse.
            duration = None
        if not math.isfinite(offset) or offset < 0:
            raise CorpusError(f"{self.corpus}: utterance {id!r}: offset {offset!r} is not a finite number >= 0")
        if duration is not None and not Path(audio).is_file():
            # The corpus gave the duration, so the header was not read: check the file exists.
            self.skip("missing", str(audio))
            return None
        if duration is None:
            try:
                info = audio_info(audio)
            except AudioError as e:
                self.skip(e.kind, str(audio))
                return None
            if info.frames == 0:
                self.skip("empty", str(audio))
                return None
            if info.truncated:  # the whole file is wanted and part of it is missing
                self.skip("truncated", str(audio))
                return None
            duration = max(info.duration - offset, 0.0) or None
        utt = Utterance(
            id=id,
            audio=str(audio),
            offset=offset,
            duration=round(duration, 4) if duration is not None else None,
            speaker=speaker,
            transcript=transcript.strip() if isinstance(transcript, str) else transcript,
            corpus=self.corpus,
            split=split,
            extra=dict(extra or {}),
        )
        for name, value in (attributes or {}).items():
            key = normalise_attribute_name(name)
            value = normalise_value(key, value)
            if value is not None:
                utt.set_attribute(key, value, PROVENANCE_CORPUS)
        self._ids.add(id)
        self.splits[split or NO_SPLIT].append(utt)
        self._bar.update(1)
        return utt

    def finish(self, output_dir: str | os.PathLike | None = None, *, per_split: bool = False) -> PreparedCorpus:
        """The result (utterances sorted by id within each split); written when ``output_dir``."""
        self._bar.close()
        prepared = PreparedCorpus(
            corpus=self.corpus,
            splits={k: sorted(v, key=lambda u: u.id) for k, v in self.splits.items()},
            skipped=dict(self.skipped),
            skipped_counts=dict(self.skipped_counts),
        )
        if output_dir is not None:
            prepared.write(output_dir, per_split=per_split)
        return prepared


def require_corpus_dir(corpus_dir: str | os.PathLike, corpus: str) -> Path:
    """The corpus folder as a :class:`Path`; a clear error naming the path when it is missing."""
    path = Path(corpus_dir).expanduser()
    if not path.exists():
        raise CorpusError(f"{corpus}: corpus folder {path} does not exist")
    if not path.is_dir():
        raise CorpusError(f"{corpus}: {path} is a file; give the corpus's top folder")
    return path


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Importer:
    """A registered importer: its function, what labels it copies and where the corpus is from."""

    name: str
    prepare: Callable[..., PreparedCorpus]
    labels: str
    source: str

    @property
    def options(self) -> list[str]:
        """Keyword options of the prepare function beyond ``corpus_dir`` and ``output_dir``."""
        params = inspect.signature(self.prepare).parameters
        return [n for n in params if n not in ("corpus_dir", "output_dir")]


_REGISTRY: dict[str, Importer] = {}


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.lower())


def register_importer(name: str, *, labels: str, source: str) -> Callable:
    """Decorator: register ``prepare_<name>`` under ``name`` (``-``/``_`` are ignored in look-ups,
    so ``crema-d`` finds ``cremad``)."""

    def wrap(fn: Callable[..., PreparedCorpus]) -> Callable[..., PreparedCorpus]:
        _REGISTRY[_key(name)] = Importer(name=name, prepare=fn, labels=labels, source=source)
        return fn

    return wrap


def list_importers() -> list[Importer]:
    """Every registered importer, sorted by name."""
    return sorted(_REGISTRY.values(), key=lambda i: i.name)


def get_importer(name: str) -> Importer:
    """The importer called ``name``; an error listing the known ones otherwise."""
    try:
        return _REGISTRY[_key(name)]
    except KeyError:
        known = ", ".join(sorted(i.name for i in _REGISTRY.values()))
        if not known:
            raise CorpusError(f"unknown corpus {name!r}: no importer is registered; `import data_prep` "
                              "registers the built-in ones (speechllm prepare does)") from None
        raise CorpusError(f"unknown corpus {name!r}; importers: {known}") from None


def prepare_corpus(name: str, corpus_dir: str | os.PathLike, output_dir: str | os.PathLike | None = None,
                   **options: Any) -> PreparedCorpus:
    """Run importer ``name`` (what ``speechllm prepare NAME CORPUS_DIR OUT_DIR`` does)."""
    importer = get_importer(name)
    unknown = sorted(set(options) - set(importer.options))
    if unknown:
        raise CorpusError(f"{importer.name}: unknown option(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(importer.options) or 'none'}")
    return importer.prepare(corpus_dir, output_dir, **options)
