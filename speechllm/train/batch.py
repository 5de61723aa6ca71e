"""Lay out a list of training examples as model input, through the model's own input path.

The encoder pass and the transcript rule (``SpeechLLM.encode_audio``), each example's layout
(``SpeechLLM.sequence``) and the left-padded batch (``SpeechLLM.collate``) are the calls
``SpeechLLM.prepare_batch`` (inference, generation, evaluation) makes, so training sees the
input inference will see (``tests/test_models_speech_llm.py`` builds one example both ways).
What is training's own lives here: skip counting, the feature cache, truncation and the text
view for the teachers.

Length rule (``data.max_length``): an example longer than ``max_length`` positions keeps its
first ``max_length`` positions, so the response is cut at its end (its end-of-turn token is then
not trained); an example whose prompt + audio span alone leave no response token inside
``max_length`` is dropped and counted as ``too_long``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from speechllm.models.chat_layout import IGNORE_INDEX, ChatSequence
from speechllm.train.data import Example, SkipCounter, Skipped


@dataclass
class TrainBatch:
    """What one micro-batch holds: the model input (``speech``: audio rows and replay rows), the
    text view of the audio rows for the teachers (``text``: same response tokens, the seed
    description where the audio stands; None when no objective needs it) and bookkeeping."""

    speech: Any  # SpeechBatch
    ids: list[str]
    replay: list[bool]
    text: Any | None = None
    text_rows: list[int] = field(default_factory=list)  # rows of `speech` that `text` mirrors
    audio_seconds: float = 0.0
    transcript_ids: list[list[int]] = field(default_factory=list)  # per audio row

    @property
    def num_targets(self) -> int:
        return int((self.speech.labels[:, 1:] != IGNORE_INDEX).sum())

    @property
    def num_positions(self) -> int:
        return int(self.speech.attention_mask.sum())


def truncate_sequence(seq: ChatSequence, max_length: int) -> ChatSequence | None:
    """Keep the first ``max_length`` positions; None when no labelled token survives (the
    module docstring states the rule)."""
    if len(seq) <= max_length:
        return seq
    cut = ChatSequence(seq.input_ids[:max_length], seq.labels[:max_length], seq.audio_mask[:max_length])
    if all(t == IGNORE_INDEX for t in cut.labels[1:]):
        return None
    return cut


def keep_first_labels(seq: ChatSequence, count: int) -> ChatSequence:
    """``seq`` cut right after its ``count``-th labelled token (the teacher keeps exactly the
    response tokens the truncated student kept)."""
    seen = 0
    for i, t in enumerate(seq.labels):
        if t != IGNORE_INDEX:
            seen += 1
            if seen == count:
                return ChatSequence(seq.input_ids[:i + 1], seq.labels[:i + 1], seq.audio_mask[:i + 1])
    return seq


class BatchBuilder:
    """Turns examples into a :class:`TrainBatch` next to the model (the encoder runs here, or
    the feature cache answers)."""

    def __init__(self, model, max_length: int, *, feature_cache=None, need_text: bool = False):
        self.model = model
        self.max_length = max_length
        self.feature_cache = feature_cache
        self.need_text = need_text
        self.skipped = SkipCounter()

    def _encode(self, audio_examples: list[Example]):
        """Encoder output and transcripts of the audio examples (the feature cache answers when
        there is one), by the model's one rule."""
        given = [e.transcript for e in audio_examples]
        if self.feature_cache is None:
            return self.model.encode_audio([e.wave for e in audio_examples], given, training=True)
        for e in audio_examples:
            e.num_samples = self.feature_cache.num_samples(e.id)
        encoded, cached = self.feature_cache.encoded([e.id for e in audio_examples], self.model.device)
        return self.model.encode_audio(None, given, training=True, encoded=encoded, cached_transcripts=cached)

    def build(self, items: list[Example | Skipped]) -> TrainBatch | None:
        model = self.model
        examples: list[Example] = []
        for item in items:
            problem = (self.feature_cache.problem(item.id, item.audio_key)
                       if self.feature_cache is not None and isinstance(item, Example) and not item.replay else None)
            if problem is not None:
                item = Skipped(item.id, *problem)
            if isinstance(item, Skipped):
                self.skipped.add(item)
            else:
                examples.append(item)
        audio_examples = [e for e in examples if not e.replay]
        encoded, texts = (self._encode(audio_examples) if audio_examples else (None, []))
        text_of = {id(e): t for e, t in zip(audio_examples, texts)}
        seqs: list[ChatSequence] = []
        kept: list[Example] = []
        transcript_ids: list[list[int]] = []
        keep_windows: list[int] = []
        for e in examples:
            audios = [] if e.replay else [(e.num_samples, text_of[id(e)])]
            seq, tids = model.sequence(e.chat, audios)
            cut = truncate_sequence(seq, self.max_length)
            if cut is None:
                self.skipped.add(Skipped(e.id, "too_long", f"prompt + audio span exceed data.max_length={self.max_length}"))
                if not e.replay:
                    keep_windows.append(0)
                continue
            if not e.replay:
                keep_windows.append(1)
                transcript_ids.extend(tids)
            seqs.append(cut)
            kept.append(e)
        if not seqs:
            return None
        if encoded is not None and not all(keep_windows):
            encoded = _select_audios(encoded, keep_windows)
        if encoded is not None and not any(not e.replay for e in kept):
            encoded = None
        speech = model.collate(seqs, encoded, [[text_of.get(id(e), "")] if not e.replay else [] for e in kept])
        batch = TrainBatch(speech=speech, ids=[e.id for e in kept],
                           replay=[e.replay for e in kept],
                           audio_seconds=sum(e.seconds for e in kept if not e.replay),
                           transcript_ids=transcript_ids)
        if self.need_text:
            rows, text_seqs = [], []
            for r, (e, seq) in enumerate(zip(kept, seqs)):
                if e.replay or e.text_chat is None:
                    continue
                count = sum(1 for t in seq.labels if t != IGNORE_INDEX)
                text_seqs.append(keep_first_labels(model.sequence(e.text_chat)[0], count))
                rows.append(r)
            if text_seqs:
                batch.text = model.collate(text_seqs)
                batch.text_rows = rows
        return batch


def _select_audios(encoded, keep: list[int]):
    """The encoder output restricted to the audios flagged in ``keep``."""
    from speechllm.models.encoder import EncodedWindows

    index: list[int] = []
    start = 0
    per_audio = []
    for k, n in zip(keep, encoded.windows_per_audio):
        if k:
            index.extend(range(start, start + n))
            per_audio.append(n)
        start += n
    idx = torch.tensor(index, dtype=torch.long, device=encoded.taps[0].device)
    final = encoded.final.index_select(0, idx) if encoded.final is not None else None
    return EncodedWindows(taps=[t.index_select(0, idx) for t in encoded.taps], final=final,
                          windows_per_audio=per_audio,
                          valid_frames=[encoded.valid_frames[i] for i in index])
