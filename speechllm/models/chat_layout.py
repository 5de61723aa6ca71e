"""The chat layout: where audio spans sit in a conversation, how long they are, which tokens are
trained on. One module, shared by target generation, training and inference, so that the prompt
the model is trained on is byte for byte the prompt it sees at inference.

Conversations are lists of ``{"role": ..., "content": ...}`` messages. An audio is referenced by
the locator string (``ModelConfig.audio_locator``, ``<|AUDIO|>`` by default) inside a message's
content; the layout wraps every locator as ``audio_start + locator + audio_end`` (a locator the
user already wrapped is not wrapped twice). When audio is given and no message holds a locator,
one locator per audio is prepended to the first user turn.

The LLM's own chat template renders the messages (``tokenizer.apply_chat_template``); the rendered
string is cut at every locator and at every response boundary and each piece is tokenised on its
own, so BPE merges can never run across a locator, and the prompt tokens of a training example are
exactly the tokens the model sees when it generates.

An audio span is ``[adapter vectors] + [transcript tokens]``: :func:`audio_slot` is the one function
that builds it (training and inference both call it through ``SpeechLLM.sequence``), and
:func:`audio_span_length` the one that computes its length from counts (for planning without a
tokenizer); ``len(audio_slot(...)) == audio_span_length(samples, len(slot.transcript_ids), config)``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# Audio longer than ``ModelConfig.max_audio_seconds`` (never truncated silently) raises the audio
# family's own error (kind ``too_long``), so every job that counts and skips bad audio skips it.
from speechllm.audio.io import AudioTooLongError
from speechllm.errors import SpeechLLMError

# Rendering a chat with the LLM's template and left padding belong to the LLM runtime.
from speechllm.llm_runtime import left_pad, positions_of, render_text  # noqa: F401

# Whisper's framing belongs to the encoder; re-exported because the layout speaks of samples.
from speechllm.models.encoder import (  # noqa: F401
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    WINDOW_SECONDS,
    encoder_frames,
    num_windows,
    window_sample_counts,
)

if TYPE_CHECKING:
    from speechllm.config import ModelConfig

IGNORE_INDEX = -100

Message = dict[str, Any]


class ChatLayoutError(SpeechLLMError):
    """Messages and audios that do not fit together (e.g. more locators than audios)."""


# --------------------------------------------------------------------------------------------
# Span lengths
# --------------------------------------------------------------------------------------------


def adapter_output_length(num_samples: int, config: ModelConfig) -> int:
    """Adapter vectors for an audio of ``num_samples`` samples (16 kHz): the adapter class's own
    count (``num_vectors``; ``qformer``: ``num_queries`` per started 30 s window, DeSTA2: 64;
    ``mlp``: per window ``ceil(real encoder frames / mlp_stack)``, padding frames produce
    nothing). Raises :class:`AudioTooLongError` past ``config.max_audio_seconds``.
    """
    from speechllm.models.adapters import adapter_class

    check_audio_length(num_samples, config)
    return adapter_class(config.adapter).num_vectors(num_samples, config)


def effective_transcript_tokens(transcript_token_count: int, config: ModelConfig) -> int:
    """Transcript tokens that enter the span: none when ``transcript_source`` is ``none``, else
    at most ``max_transcript_tokens``."""
    if config.transcript_source == "none":
        return 0
    return max(0, min(transcript_token_count, config.max_transcript_tokens))


def audio_span_length(num_samples: int, transcript_token_count: int, config: ModelConfig) -> int:
    """Length in LLM positions of one audio span: adapter vectors + (truncated) transcript tokens.

    ``transcript_token_count`` is the count of the transcript's tokens as they enter the span
    (:func:`transcript_token_ids`: a blank transcript enters as ``no_speech_transcript``).
    ``audio_start``/``audio_end`` text around the span is ordinary prompt text and not counted.
    This is the only place the span length is computed from counts; :func:`audio_slot` builds
    spans of exactly this length.
    """
    return adapter_output_length(num_samples, config) + effective_transcript_tokens(
        transcript_token_count, config
    )


def check_audio_length(num_samples: int, config: ModelConfig, *, where: str = "audio") -> None:
    """Raise :class:`AudioTooLongError` when the audio exceeds ``config.max_audio_seconds``."""
    seconds = num_samples / SAMPLE_RATE
    if seconds > config.max_audio_seconds + 1e-9:
        raise AudioTooLongError(
            where, f"{seconds:.1f}s is longer than model.max_audio_seconds="
            f"{config.max_audio_seconds:g}s; cut the audio or raise model.max_audio_seconds "
            "(long audio is processed in 30 s windows, never truncated)"
        )


def transcript_token_ids(tokenizer: Any, transcript: str | None, config: ModelConfig) -> list[int]:
    """LLM token ids of a transcript as they enter the audio span: stripped, with
    ``transcript_prefix`` before it, no special tokens, truncated to ``max_transcript_tokens``.
    A blank transcript (none given, or VAD heard no speech) enters as ``no_speech_transcript``
    (default: nothing; DeSTA2.5: one space). Empty when ``transcript_source`` is ``none``."""
    if config.transcript_source == "none":
        return []
    text = (transcript or "").strip()
    text = config.transcript_prefix + text if text else config.no_speech_transcript
    if not text:
        return []
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return list(ids[: config.max_transcript_tokens])


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _locator_pattern(config: ModelConfig) -> re.Pattern[str]:
    start = f"(?:{re.escape(config.audio_start)})?" if config.audio_start else ""
    end = f"(?:{re.escape(config.audio_end)})?" if config.audio_end else ""
    return re.compile(start + re.escape(config.audio_locator) + end)


def count_locators(messages: Sequence[Message], config: ModelConfig) -> int:
    """Number of audio locators in all messages' contents."""
    return sum(_content(m).count(config.audio_locator) for m in messages)


def _content(message: Message) -> str:
    content = message.get("content", "")
    if not isinstance(content, str):
        raise ChatLayoutError(
            f"message with role {message.get('role')!r}: content must be a string, got {type(content).__name__}"
        )
    return content


def prepare_messages(messages: Sequence[Message], num_audios: int, config: ModelConfig) -> list[Message]:
    """Check locators against audios and wrap each as ``audio_start + locator + audio_end``.

    - more locators than audios: :class:`ChatLayoutError`;
    - audios but no locator: one locator per audio is prepended to the first user turn
      (joined by a newline to the text);
    - some locators but fewer than audios: :class:`ChatLayoutError` (ambiguous placement);
    - a locator in an assistant turn: :class:`ChatLayoutError` (responses are text).
    With ``config.audio_role`` set, each wrapped locator then moves to a turn of its own (see
    :func:`_audio_turns`). Returns new message dicts; the input is not modified.
    """
    if not messages:
        raise ChatLayoutError("empty conversation: give at least one user message")
    out = [dict(m) for m in messages]
    for m in out:
        if "role" not in m:
            raise ChatLayoutError(f"message {m!r} has no 'role'")
        _content(m)
    found = count_locators(out, config)
    if found > num_audios:
        raise ChatLayoutError(
            f"the messages hold {found} audio locator(s) {config.audio_locator!r} but {num_audios} "
            "audio(s) were given; give one audio per locator"
        )
    if found == 0 and num_audios > 0:
        users = [i for i, m in enumerate(out) if m["role"] == "user"]
        if not users:
            raise ChatLayoutError("audio was given but the conversation has no user turn to hold it")
        first = out[users[0]]
        locators = "".join(config.audio_locator for _ in range(num_audios))
        first["content"] = locators + ("\n" + first["content"] if first["content"] else "")
    elif found < num_audios:
        raise ChatLayoutError(
            f"{num_audios} audios were given but the messages hold only {found} locator(s) "
            f"{config.audio_locator!r}; put one locator where each audio belongs"
        )
    pattern = _locator_pattern(config)
    wrapped = config.audio_start + config.audio_locator + config.audio_end
    for m in out:
        if config.audio_locator in m["content"]:
            if m["role"] == "assistant":
                raise ChatLayoutError("an assistant turn holds an audio locator; audio belongs in user turns")
            m["content"] = pattern.sub(lambda _: wrapped, m["content"])
    return _audio_turns(out, config) if config.audio_role else out


def _audio_turns(messages: list[Message], config: ModelConfig) -> list[Message]:
    """DeSTA2's layout: every audio sits in a turn of its own, role ``config.audio_role``, just
    before the turn that held its locator; that turn keeps the rest of its text (the pieces
    around the locators, stripped, joined by newlines) and is dropped when nothing is left.
    A turn that already has the audio role stays as it is."""
    wrapped = config.audio_start + config.audio_locator + config.audio_end
    result: list[Message] = []
    for m in messages:
        pieces = m["content"].split(wrapped)
        if len(pieces) == 1 or m["role"] == config.audio_role:
            result.append(m)
            continue
        result.extend({"role": config.audio_role, "content": wrapped} for _ in pieces[1:])
        rest = "\n".join(p.strip() for p in pieces if p.strip())
        if rest:
            result.append({**m, "content": rest})
    return result


def substitute_audio_text(
    messages: Sequence[Message], texts: Sequence[str], config: ModelConfig
) -> list[Message]:
    """Replace the i-th audio locator by ``audio_start + texts[i] + audio_end``.

    This is how target generation shows the frozen LLM the seed description where the audio
    span will stand, and how text references are built for evaluation: the same placement rules
    as :func:`prepare_messages` (a prompt without a locator gets them prepended to its first
    user turn), the same wrapping.
    """
    prepared = prepare_messages(messages, len(texts), config)
    wrapped = config.audio_start + config.audio_locator + config.audio_end
    queue = list(texts)
    out = []
    for m in prepared:
        parts = m["content"].split(wrapped)
        content = parts[0]
        for part in parts[1:]:
            content += config.audio_start + queue.pop(0) + config.audio_end + part
        out.append({**m, "content": content})
    return out


# --------------------------------------------------------------------------------------------
# Rendering and tokenisation
# --------------------------------------------------------------------------------------------


@dataclass
class RenderedChat:
    """A conversation rendered by the chat template and tokenised around its audio slots.

    ``segments[i]`` is the text before audio ``i`` (the last one follows the last audio), so
    ``len(segments) == num_audios + 1``; ``segment_labels`` has the same shape, holding the token
    id where the loss applies and ``IGNORE_INDEX`` elsewhere.
    """

    text: str
    segments: list[list[int]]
    segment_labels: list[list[int]]
    messages: list[Message] = field(default_factory=list)

    @property
    def num_audios(self) -> int:
        return len(self.segments) - 1


def _special_token_strings(tokenizer: Any) -> list[str]:
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(tok, "special", False):
            specials.add(str(tok))
    return sorted((s for s in specials if s), key=len, reverse=True)


def _response_spans(tokenizer: Any, messages: list[Message], text: str) -> list[tuple[int, int]]:
    """Character spans of ``text`` trained on: each assistant turn's content plus the special
    token that ends the turn (when the template puts one right after the content)."""
    specials = _special_token_strings(tokenizer)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        content = m["content"].strip()
        prefix = render_text(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        if i and text.startswith(prefix):
            cursor = max(cursor, len(prefix))
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0:
            raise ChatLayoutError(
                f"assistant turn {i}: its content was not found in the rendered chat template; "
                "the template rewrites assistant messages and the response cannot be labelled"
            )
        end = start + len(content)
        rest = text[end:]
        stripped = rest.lstrip()
        for s in specials:
            if stripped.startswith(s):
                end += (len(rest) - len(stripped)) + len(s)
                break
        spans.append((start, end))
        cursor = end
    return spans


def render_chat(
    tokenizer: Any,
    messages: Sequence[Message],
    config: ModelConfig,
    *,
    num_audios: int,
    add_generation_prompt: bool,
) -> RenderedChat:
    """Render ``messages`` with the LLM's chat template and tokenise around the audio slots.

    Locators are checked and wrapped by :func:`prepare_messages`. Labels cover every assistant
    turn's content and its end-of-turn special token; everything else is ``IGNORE_INDEX``. With
    ``add_generation_prompt`` the text ends with the template's assistant header (inference).
    """
    prepared = prepare_messages(messages, num_audios, config)
    text = render_text(tokenizer, prepared, add_generation_prompt=add_generation_prompt)
    loc = config.audio_locator
    locator_starts = [m.start() for m in re.finditer(re.escape(loc), text)]
    if len(locator_starts) != num_audios:
        raise ChatLayoutError(
            f"the chat template's output holds {len(locator_starts)} locator(s) for {num_audios} "
            "audio(s) (does the template drop or repeat messages?)"
        )
    spans = _response_spans(tokenizer, prepared, text)
    # Cut points: around each locator, and at the edges of each labelled span.
    cuts = {0, len(text)}
    for s in locator_starts:
        cuts.update((s, s + len(loc)))
    for a, b in spans:
        cuts.update((a, b))
    ordered = sorted(cuts)
    audio_starts = set(locator_starts)
    segments: list[list[int]] = [[]]
    labels: list[list[int]] = [[]]
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a in audio_starts:
            segments.append([])
            labels.append([])
            continue
        piece = text[a:b]
        if not piece:
            continue
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"]
        trained = any(sa <= a and b <= sb for sa, sb in spans)
        segments[-1].extend(ids)
        labels[-1].extend(ids if trained else [IGNORE_INDEX] * len(ids))
    return RenderedChat(text=text, segments=segments, segment_labels=labels, messages=prepared)


# --------------------------------------------------------------------------------------------
# Sequences and batches
# --------------------------------------------------------------------------------------------


@dataclass
class AudioSlot:
    """What one audio span holds: ``num_vectors`` adapter vectors, then the transcript ids."""

    num_vectors: int
    transcript_ids: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return self.num_vectors + len(self.transcript_ids)


def audio_slot(tokenizer: Any, num_samples: int, transcript: str | None, config: ModelConfig) -> AudioSlot:
    """The span of one audio of ``num_samples`` samples whose transcript is ``transcript``:
    :func:`adapter_output_length` vectors, then :func:`transcript_token_ids`."""
    return AudioSlot(num_vectors=adapter_output_length(num_samples, config),
                     transcript_ids=transcript_token_ids(tokenizer, transcript, config))


@dataclass
class ChatSequence:
    """One example as flat lists: ``input_ids`` (adapter slots hold ``placeholder_id``),
    ``labels`` and ``audio_mask`` (True where an adapter vector goes)."""

    input_ids: list[int]
    labels: list[int]
    audio_mask: list[bool]

    def __len__(self) -> int:
        return len(self.input_ids)


def build_sequence(rendered: RenderedChat, slots: Sequence[AudioSlot], placeholder_id: int) -> ChatSequence:
    """Interleave the rendered text segments with the audio spans."""
    if len(slots) != rendered.num_audios:
        raise ChatLayoutError(
            f"{len(slots)} audio span(s) for a conversation with {rendered.num_audios} audio slot(s)"
        )
    ids: list[int] = []
    labels: list[int] = []
    mask: list[bool] = []
    for i, (seg, lab) in enumerate(zip(rendered.segments, rendered.segment_labels, strict=True)):
        ids.extend(seg)
        labels.extend(lab)
        mask.extend([False] * len(seg))
        if i < len(slots):
            slot = slots[i]
            ids.extend([placeholder_id] * slot.num_vectors + list(slot.transcript_ids))
            labels.extend([IGNORE_INDEX] * len(slot))
            mask.extend([True] * slot.num_vectors + [False] * len(slot.transcript_ids))
    return ChatSequence(input_ids=ids, labels=labels, audio_mask=mask)


def collate_left_padded(sequences: Sequence[ChatSequence], pad_id: int) -> dict[str, Any]:
    """Left-pad sequences into tensors: ``input_ids``, ``attention_mask``, ``position_ids``
    (counting from 0 at each row's first real token, so padding does not shift positions),
    ``labels`` and ``audio_mask``."""
    import torch

    if not sequences:
        raise ChatLayoutError("empty batch")
    input_ids, attention = left_pad([s.input_ids for s in sequences], pad_id)
    labels, _ = left_pad([s.labels for s in sequences], IGNORE_INDEX)
    audio_mask, _ = left_pad([s.audio_mask for s in sequences], False, torch.bool)
    position_ids = positions_of(attention)
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "position_ids": position_ids,
        "labels": labels,
        "audio_mask": audio_mask,
    }
