"""Training rows: a lazy index over one or more JSONL files, and the dataset that turns a row
into a rendered chat plus its audio.

Rows are ``targets.jsonl`` rows from ``speechllm generate`` (``id``, ``audio``, ``offset``,
``duration``, ``transcript``, ``description``, ``messages`` with the audio locator, ``response``)
or text-only replay rows from ``speechllm generate-replay`` (``messages`` + ``response``, no
``audio``). The index keeps only a byte offset and two numbers per row (audio seconds and a
token estimate for bucketing); a row is parsed again when the dataset reads it, so a manifest of
millions of rows costs a few bytes each in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechllm.data.manifest import ManifestError, read_times
from speechllm.errors import SpeechLLMError
from speechllm.models.chat_layout import (
    IGNORE_INDEX,
    SAMPLE_RATE,
    Message,
    RenderedChat,
    render_chat,
    substitute_audio_text,
)
from speechllm.models.transcript import training_transcript
from speechllm.utils.textfile import not_utf8_error

CHARS_PER_TOKEN = 4.0  # bucketing estimate only; exact lengths come from the tokenizer


class TrainingDataError(SpeechLLMError):
    """A training or replay file that cannot be used (missing, malformed row, no rows)."""


@dataclass(frozen=True)
class RowRef:
    """Where one row lives and what it costs: ``source`` file index, byte ``offset`` of its line,
    audio ``seconds`` (0 for text-only) and ``text_tokens`` (an estimate)."""

    source: int
    offset: int
    line: int
    seconds: float
    text_tokens: int

    @property
    def has_audio(self) -> bool:
        return self.seconds > 0


def _text_length(row: dict[str, Any]) -> int:
    chars = len(str(row.get("response", "")))
    for m in row.get("messages") or []:
        chars += len(str(m.get("content", "")))
    chars += len(str(row.get("transcript") or ""))
    return max(1, int(chars / CHARS_PER_TOKEN))


def _check_row(row: Any, where: str, *, replay: bool) -> None:
    if not isinstance(row, dict):
        raise TrainingDataError(f"{where}: expected a JSON object per line")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise TrainingDataError(
            f"{where}: field 'messages' must be a non-empty list of chat messages (rows come from "
            "`speechllm generate` or `speechllm generate-replay`)"
        )
    if not isinstance(row.get("response"), str):
        raise TrainingDataError(f"{where}: field 'response' (the training target) is missing or not a string")
    if not replay and not row.get("audio"):
        raise TrainingDataError(
            f"{where}: no 'audio'; text-only rows belong in data.replay, not data.train"
        )
    if not replay:
        try:
            read_times(row, where)  # the manifest's own check: NaN/Infinity/negative times
        except ManifestError as e:
            raise TrainingDataError(str(e)) from None


class RowIndex:
    """Byte offsets and bucketing costs of every row in ``paths``; rows are read on demand.

    Audio rows must have unique ids across all ``paths``: the feature cache, the skip report and
    resumed runs know a row by its id, so a repeated id would hand one row's audio features to
    the other. Replay rows (text only) may share ids: several replay files are often generated
    from one instruction set.
    """

    def __init__(self, paths: list[str | os.PathLike], *, replay: bool = False):
        self.paths = [Path(p) for p in paths]
        self.replay = replay
        self.refs: list[RowRef] = []
        self.ids: list[str] = []
        # id -> row number, only while scanning (a duplicate's message names the first place).
        self._first_row: dict[str, int] | None = None if replay else {}
        for source, path in enumerate(self.paths):
            if not path.is_file():
                kind = "data.replay" if replay else "data.train"
                raise TrainingDataError(f"{path}: no such file (named in {kind})")
            self._scan(source, path)
        self._first_row = None

    def where(self, i: int) -> str:
        """``file:line`` of row ``i``."""
        return f"{self.paths[self.refs[i].source]}:{self.refs[i].line}"

    def _check_unique(self, rid: str, where: str) -> None:
        if self._first_row is None:
            return
        first = self._first_row.setdefault(rid, len(self.ids))
        if first != len(self.ids):
            raise TrainingDataError(
                f"{where}: duplicate id {rid!r} (first at {self.where(first)}); training rows need unique "
                "ids (the feature cache and the skip report key rows by id): rename one or drop the "
                "repeated row"
            )

    def _scan(self, source: int, path: Path) -> None:
        offset = 0
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                start, offset = offset, offset + len(raw)
                if not raw.strip():
                    continue
                where = f"{path}:{line_no}"
                try:
                    row = json.loads(raw)
                except UnicodeDecodeError as e:
                    raise not_utf8_error(path, line_no, e) from None
                except json.JSONDecodeError as e:
                    if not raw.endswith(b"\n"):
                        continue  # a torn last line from an interrupted writer: not a row yet
                    raise TrainingDataError(f"{where}: invalid JSON ({e.msg})") from None
                _check_row(row, where, replay=self.replay)
                rid = str(row.get("id", f"{path.name}:{line_no}"))
                self._check_unique(rid, where)
                seconds = 0.0 if self.replay else float(row.get("duration") or 1.0)
                self.refs.append(RowRef(source, start, line_no, seconds, _text_length(row)))
                self.ids.append(rid)

    def __len__(self) -> int:
        return len(self.refs)

    def sources(self) -> list[int]:
        return [r.source for r in self.refs]

    def read(self, i: int) -> dict[str, Any]:
        """The parsed row ``i``; relative audio paths are resolved against the row's file."""
        ref = self.refs[i]
        path = self.paths[ref.source]
        with open(path, "rb") as f:
            f.seek(ref.offset)
            row = json.loads(f.readline())
        row.setdefault("id", self.ids[i])
        audio = row.get("audio")
        if audio and not os.path.isabs(audio):
            row["audio"] = str(path.parent / audio)
        row["_where"] = f"{path}:{ref.line}"
        return row


def audio_source_key(row: dict[str, Any]) -> str:
    """A short hash of what a row's audio is: its resolved path, offset and duration, and the
    file's size and modification time (``row["audio"]`` as :meth:`RowIndex.read` returns it).

    The feature cache stores it with each id's features, so a row whose audio changed (another
    file, another segment, or the same file rewritten) is encoded again instead of being given
    the old audio's features. Size and mtime stand in for a content hash: one ``stat``, not a
    read of the file.
    """
    path = os.path.abspath(str(row["audio"]))
    try:
        st = os.stat(path)
        stamp: list[int] | None = [st.st_size, st.st_mtime_ns]
    except OSError:
        stamp = None  # a missing file has no features; its key changes once it appears
    duration = row.get("duration")
    payload = [path, float(row.get("offset") or 0.0), None if duration is None else float(duration), stamp]
    return hashlib.sha256(json.dumps(payload).encode("utf-8")).hexdigest()[:16]


@dataclass
class Example:
    """One training example before the audio span is laid out.

    ``chat``: the conversation (messages + the response as an assistant turn) rendered by the
    shared chat layout; ``wave``: 16 kHz samples (None for replay); ``transcript``: the manifest
    transcript (None: Whisper's own); ``text_chat``: the same conversation with the seed description
    where the audio stands (for the ``kl``/``diva`` teacher and STM), None when not needed.
    """

    id: str
    chat: RenderedChat
    wave: Any = None
    transcript: str | None = None
    text_chat: RenderedChat | None = None
    replay: bool = False
    seconds: float = 0.0
    num_samples: int = 0
    #: :func:`audio_source_key` of an audio row (the feature cache checks it), None for replay.
    audio_key: str | None = None


@dataclass
class Skipped:
    """A row that could not be used (bad audio), with its error kind and message."""

    id: str
    kind: str
    message: str


@dataclass
class SkipCounter:
    """Counts of skipped rows by kind, with the first few messages for the run report."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, skipped: Skipped) -> None:
        self.counts[skipped.kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{skipped.id}: {skipped.message}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "examples": list(self.examples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = Counter(state.get("counts", {}))
        self.examples = list(state.get("examples", []))


def conversation_of(row: dict[str, Any]) -> list[Message]:
    """The row's messages followed by its response as the assistant turn."""
    return [*[dict(m) for m in row["messages"]], {"role": "assistant", "content": row["response"]}]


def description_of(row: dict[str, Any]) -> str:
    """What the text-reading teacher sees where the audio stands: the seed description, else the
    transcript, else nothing."""
    return str(row.get("description") or row.get("transcript") or "")


class TrainingDataset:
    """Map-style dataset over a :class:`RowIndex` of audio rows and one of replay rows.

    Index ``i < len(audio)`` is an audio row, ``len(audio) + j`` replay row ``j``. Items are
    :class:`Example` or, for audio that fails to load, :class:`Skipped` (never an exception: a
    bad file at step 40,000 must not end the run).
    """

    def __init__(self, audio_rows: RowIndex, replay_rows: RowIndex | None, model_config, tokenizer,
                 *, need_text_view: bool = False, load_waves: bool = True, max_seconds: float | None = None):
        self.audio_rows = audio_rows
        self.replay_rows = replay_rows
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.need_text_view = need_text_view
        self.load_waves = load_waves
        # Longer audio is skipped and counted as too_long (never truncated silently).
        self.max_seconds = min(max_seconds or float("inf"), model_config.max_audio_seconds)

    @property
    def num_audio(self) -> int:
        return len(self.audio_rows)

    def __len__(self) -> int:
        return self.num_audio + (len(self.replay_rows) if self.replay_rows is not None else 0)

    def row(self, i: int) -> dict[str, Any]:
        if i < self.num_audio:
            return self.audio_rows.read(i)
        assert self.replay_rows is not None
        return self.replay_rows.read(i - self.num_audio)

    def __getitem__(self, i: int) -> Example | Skipped:
        row = self.row(i)
        rid = str(row["id"])
        conv = conversation_of(row)
        if i >= self.num_audio:
            chat = render_chat(self.tokenizer, conv, self.model_config, num_audios=0,
                               add_generation_prompt=False)
            return Example(id=rid, chat=chat, replay=True)
        wave = None
        seconds = float(row.get("duration") or 0.0)
        if self.load_waves:
            from speechllm.audio import AudioError, load_audio

            try:
                wave = load_audio(row["audio"], offset=float(row.get("offset") or 0.0),
                                  duration=row.get("duration"),
                                  max_seconds=self.max_seconds)
            except AudioError as e:
                return Skipped(rid, getattr(e, "kind", type(e).__name__), str(e))
            seconds = len(wave) / SAMPLE_RATE
        chat = render_chat(self.tokenizer, conv, self.model_config, num_audios=1, add_generation_prompt=False)
        text_chat = None
        if self.need_text_view:
            text_conv = substitute_audio_text(conv, [description_of(row)], self.model_config)
            text_chat = render_chat(self.tokenizer, text_conv, self.model_config, num_audios=0,
                                    add_generation_prompt=False)
        transcript = training_transcript(row.get("transcript"), self.model_config)
        num_samples = len(wave) if wave is not None else int(round(seconds * SAMPLE_RATE))
        return Example(id=rid, chat=chat, wave=wave, transcript=transcript, text_chat=text_chat,
                       seconds=seconds, num_samples=num_samples, audio_key=audio_source_key(row))


def response_token_count(chat: RenderedChat) -> int:
    """Tokens of ``chat`` that carry a label."""
    return sum(1 for seg in chat.segment_labels for t in seg if t != IGNORE_INDEX)


def collate_examples(items: list[Example | Skipped]) -> list[Example | Skipped]:
    """DataLoader collate: keep the list (the batch is laid out next to the model)."""
    return list(items)
