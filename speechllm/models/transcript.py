"""Whisper's own transcript of an audio, behind a voice-activity check.

silero-vad runs first (its weights ship in the wheel, loaded once per process by
:func:`silero_model`, which the describe stage's VAD reads too); audio without speech gets an
empty transcript and no ASR. Speech is decoded by :func:`whisper_generate`, the one Whisper
decoding path (the describe stage's ``asr`` annotator uses it too): Hugging Face's Whisper
``generate`` (greedy, timestamp-free, Whisper's own suppress lists, text tokens only), here
reusing the encoder output that the adapter's taps came from (one encoder pass per window). Long
audio is decoded window by window and the texts are joined.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

MAX_TOKENS_PER_WINDOW = 160  # Whisper's decoder context is 448; 30 s of speech is ~100 tokens


class TranscriptError(SpeechLLMError):
    """Whisper's transcript was asked for but the model cannot produce one."""


def training_transcript(row_transcript: str | None, config: Any) -> str | None:
    """What a training row gives its audio span (the transcript rule's training half; the model's
    ``transcripts_for`` resolves None). ``transcript_source: manifest``: the row's transcript, and
    a row without one gets "" (an empty transcript, never a silent ASR run); ``whisper``: None
    (Whisper's own); ``none``: None (nothing enters the span)."""
    if config.transcript_source != "manifest":
        return None
    return "" if row_transcript is None else row_transcript


@functools.lru_cache(maxsize=1)
def silero_model():
    """The silero-vad model, loaded once per process (silero's loader sets torch to one thread;
    the thread count is restored)."""
    import torch
    from silero_vad import load_silero_vad

    threads = torch.get_num_threads()
    model = load_silero_vad()
    torch.set_num_threads(threads)
    return model


def has_speech(wave: np.ndarray, sample_rate: int = 16_000, *, threshold: float = 0.5,
               min_speech_ms: int = 250) -> bool:
    """True when silero-vad hears at least ``min_speech_ms`` of continuous speech.

    The same model, thresholds and hysteresis as ``silero_vad.get_speech_timestamps`` (speech
    starts at probability >= ``threshold`` and lasts while it stays >= ``threshold - 0.15``), but
    it stops at the first speech run long enough: speech is usually found in the first second,
    so this costs a few milliseconds instead of a pass over the whole clip.
    """
    import torch

    if sample_rate not in (8_000, 16_000):
        raise ValueError(f"silero-vad runs at 8 or 16 kHz, got {sample_rate}")
    model = silero_model()
    model.reset_states()
    window = 512 if sample_rate == 16_000 else 256
    needed = max(1, math.ceil(min_speech_ms / 1000 * sample_rate / window))
    low = threshold - 0.15
    audio = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    run = 0
    in_speech = False
    with torch.inference_mode():
        for start in range(0, audio.numel(), window):
            chunk = audio[start:start + window]
            if chunk.numel() < window:
                chunk = torch.nn.functional.pad(chunk, (0, window - chunk.numel()))
            prob = float(model(chunk, sample_rate))
            if prob >= threshold:
                in_speech = True
            elif prob < low:
                in_speech = False
                run = 0
            if in_speech:
                run += 1
                if run >= needed:
                    return True
    return False


def _generation_config(whisper: Any, tokenizer: Any):
    """Whisper's generation config, completed from its tokenizer where a checkpoint left it bare
    (a converted openai-whisper ``.pt``, a test model): the special token ids ``generate`` reads."""
    import copy

    gc = copy.deepcopy(whisper.generation_config)
    ids = tokenizer.convert_tokens_to_ids
    sot, eot = ids("<|startoftranscript|>"), ids("<|endoftext|>")
    if getattr(gc, "no_timestamps_token_id", None) is None:
        gc.no_timestamps_token_id = ids("<|notimestamps|>")
    if gc.decoder_start_token_id is None:
        gc.decoder_start_token_id = sot
    if gc.eos_token_id is None:
        gc.eos_token_id = eot
    if gc.pad_token_id is None:
        gc.pad_token_id = eot
    if whisper.config.vocab_size >= 51865 and not getattr(gc, "lang_to_id", None):
        translate = ids("<|translate|>")
        gc.lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in range(sot + 1, translate)}
        gc.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": translate}
        gc.is_multilingual = True
    return gc


class _SuppressedTokens:
    """Whisper's suppress lists and the text-only rule as two precomputed masks: what
    ``SuppressTokensLogitsProcessor`` (every step), ``SuppressTokensAtBeginLogitsProcessor``
    (first generated position) and the rule "text tokens and end-of-text only" do, in one
    ``masked_fill`` per step. Hugging Face's two processors rebuild their masks with ``torch.isin``
    over the vocabulary at every step (a sort of 52k entries: ~3 ms per token on one CPU thread,
    a fifth of a tiny.en step); the scores they leave are the same."""

    def __init__(self, vocab: int, eot: int, suppress: Sequence[int] | None, begin_suppress: Sequence[int] | None,
                 device: Any):
        import torch

        self.always = torch.zeros(vocab, dtype=torch.bool, device=device)
        self.always[eot + 1:] = True
        self.always[[i for i in (suppress or ()) if 0 <= i < vocab]] = True
        self.first = self.always.clone()
        self.first[[i for i in (begin_suppress or ()) if 0 <= i < vocab]] = True
        self.begin: int | None = None

    def __call__(self, input_ids, scores):
        if self.begin is None:  # the first call scores the first generated position
            self.begin = input_ids.shape[-1]
        mask = self.first if input_ids.shape[-1] == self.begin else self.always
        return scores.masked_fill(mask[: scores.shape[-1]], float("-inf"))


def whisper_generate(whisper: Any, tokenizer: Any, *, encoder_out: Any = None, input_features: Any = None,
                     language: str | None = None, max_new_tokens: int = MAX_TOKENS_PER_WINDOW,
                     scores: bool = False, fast: bool = True):
    """Whisper's transcript of a batch of 30 s windows: Hugging Face's ``generate`` (greedy,
    timestamp-free, Whisper's suppress lists), restricted to text tokens and end-of-text.

    Give the windows' final encoder states ``encoder_out`` ``(N, 1500, d)`` (reused, no second
    encoder pass) or their log-mel ``input_features``. Multilingual models transcribe in
    ``language`` (``en``, ...) or detect it per window when it is None; English-only ones take
    none. Returns ``generate``'s output (``sequences``, and ``scores`` when asked).

    ``fast`` (default) runs the same decoding with less per-step work on CPU: the suppress lists
    as precomputed masks (:class:`_SuppressedTokens`), one-token steps' attention as two matmuls
    (:mod:`speechllm.models.decode_attention`; SDPA's CPU kernel spends ~1.8 ms per
    cross-attention over 1500 frames for one query) and, in bf16, oneDNN off only for the
    one-token steps, not for the first step, which projects the 1500 encoder frames into every
    layer's cross-attention keys and values (:func:`~speechllm.models.cpu_decode.onednn_off_for_small_steps`).
    ``fast=False`` is Hugging Face's decoding as it ships (the reference a test compares with:
    identical token ids on the repository clips).
    """
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList
    from transformers.modeling_outputs import BaseModelOutput

    from speechllm.models.cpu_decode import onednn_off_for_small_steps
    from speechllm.models.decode_attention import decode_attention_within

    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    class TextTokensOnly(LogitsProcessor):
        def __call__(self, input_ids, logits):
            logits[:, eot + 1:] = float("-inf")
            return logits

    kwargs: dict[str, Any] = {}
    if whisper.config.vocab_size >= 51865:  # multilingual: transcribe, in the given language
        kwargs = {"task": "transcribe", **({"language": language} if language else {})}
    if encoder_out is not None:
        kwargs["encoder_outputs"] = BaseModelOutput(last_hidden_state=encoder_out)
        device = encoder_out.device
    else:
        kwargs["input_features"] = input_features
        # Every window is padded to Whisper's 30 s and the encoder reads the padding too: the mask
        # is all ones (it only tells transformers that the batch is not ragged).
        kwargs["attention_mask"] = torch.ones(input_features.shape[0], input_features.shape[-1], dtype=torch.long,
                                              device=input_features.device)
        device = input_features.device
    gc = _generation_config(whisper, tokenizer)
    gc.update(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, return_dict_in_generate=scores,
              output_scores=scores)
    gc.max_length = None  # max_new_tokens bounds the output (no "both were set" warning per call)
    if fast:
        processor = _SuppressedTokens(whisper.config.vocab_size, eot, gc.suppress_tokens, gc.begin_suppress_tokens,
                                      device)
        gc.suppress_tokens = gc.begin_suppress_tokens = None
    else:
        processor = TextTokensOnly()
    with torch.inference_mode(), onednn_off_for_small_steps(whisper, first_step_on=fast), \
            decode_attention_within(whisper, enabled=fast and device.type == "cpu"), _no_suppress_lists(whisper, fast):
        return whisper.generate(generation_config=gc, return_timestamps=False,
                                logits_processor=LogitsProcessorList([processor]), **kwargs)


@contextlib.contextmanager
def _no_suppress_lists(model: Any, enabled: bool):
    """Within the block, the model's own generation config names no suppress lists: ``generate``
    fills a setting that the given config leaves None from it, which would add Hugging Face's
    suppress processors back beside :class:`_SuppressedTokens`."""
    if not enabled:
        yield
        return
    own = model.generation_config
    saved = own.suppress_tokens, own.begin_suppress_tokens
    own.suppress_tokens = own.begin_suppress_tokens = None
    try:
        yield
    finally:
        own.suppress_tokens, own.begin_suppress_tokens = saved


class WhisperTranscriber:
    """Whisper's transcript of precomputed encoder outputs (:func:`whisper_generate`)."""

    def __init__(self, whisper: Any, tokenizer: Any, *, language: str | None = None):
        if tokenizer is None:
            raise TranscriptError(
                "Whisper's transcript needs the Whisper tokenizer, and none was found beside the "
                "encoder weights; add tokenizer.json to the model folder, or give the transcript "
                "(--transcript / model.transcript_source=none)"
            )
        self.whisper = whisper
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids
        self.sot = ids("<|startoftranscript|>")
        self.no_timestamps = ids("<|notimestamps|>")
        self.transcribe_id = ids("<|transcribe|>")
        # Multilingual vocabularies have one more base token than English-only ones (51864).
        self.multilingual = whisper.config.vocab_size >= 51865
        self.language = language
        self.fast = True  # whisper_generate's fast path (same token ids); False: HF's as it ships

    def _prompt(self) -> list[int]:
        """The decoder's opening tokens ``generate`` forces (the language is detected, and
        follows ``<|startoftranscript|>``, when a multilingual model has none given)."""
        if not self.multilingual:
            return [self.sot, self.no_timestamps]
        lang = self.tokenizer.convert_tokens_to_ids(f"<|{self.language}|>") if self.language else None
        return [self.sot, lang, self.transcribe_id, self.no_timestamps] if lang is not None else [self.sot]

    def decode(self, encoder_out) -> list[str]:
        """Transcribe a batch of windows from their final encoder states ``(N, 1500, d)``."""
        out = whisper_generate(self.whisper, self.tokenizer, encoder_out=encoder_out, language=self.language,
                               fast=self.fast)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def transcribe_windows(
    transcriber: WhisperTranscriber,
    final_states,
    windows_per_audio: Sequence[int],
    speech_flags: Sequence[bool],
) -> list[str]:
    """One transcript per audio: its windows decoded and joined; ``""`` where there is no speech."""
    import torch

    starts = np.cumsum([0, *windows_per_audio])
    keep = [w for a, flag in enumerate(speech_flags) if flag for w in range(starts[a], starts[a + 1])]
    texts: dict[int, str] = {}
    if keep:
        decoded = transcriber.decode(final_states[torch.tensor(keep, device=final_states.device)])
        texts = dict(zip(keep, decoded, strict=True))
    out = []
    for a in range(len(windows_per_audio)):
        pieces = [texts.get(w, "") for w in range(starts[a], starts[a + 1])]
        out.append(" ".join(p for p in pieces if p).strip())
    return out
