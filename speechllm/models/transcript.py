"""Whisper's own transcript of an audio, behind a voice-activity check.

silero-vad runs first (its weights ship in the wheel); audio without speech gets an empty
transcript and no ASR. Speech is decoded greedily by the Whisper decoder, reusing the encoder
output that the adapter's taps came from (one encoder pass per window), with a KV cache. Long
audio is decoded window by window and the texts are joined.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from speechllm.errors import SpeechLLMError
from speechllm.utils.hf_compat import cache_kwargs, output_cache

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
def _silero():
    from silero_vad import load_silero_vad

    return load_silero_vad()


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
    model = _silero()
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


class WhisperTranscriber:
    """Greedy, timestamp-free Whisper decoding of precomputed encoder outputs."""

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
        self.eot = ids("<|endoftext|>")
        self.no_timestamps = ids("<|notimestamps|>")
        self.transcribe_id = ids("<|transcribe|>")
        # Multilingual vocabularies have one more base token than English-only ones (51864).
        self.multilingual = whisper.config.vocab_size >= 51865
        self.language = language

    def _prompt(self) -> list[int]:
        if not self.multilingual:
            return [self.sot, self.no_timestamps]
        lang = self.tokenizer.convert_tokens_to_ids(f"<|{self.language}|>") if self.language else None
        return [self.sot, lang, self.transcribe_id, self.no_timestamps] if lang is not None else [self.sot]

    def decode(self, encoder_out) -> list[str]:
        """Transcribe a batch of windows from their final encoder states ``(N, 1500, d)``."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        model = self.whisper
        n = encoder_out.shape[0]
        device = encoder_out.device
        enc = BaseModelOutput(last_hidden_state=encoder_out)
        prompt = self._prompt()
        tokens = torch.tensor([prompt] * n, device=device)
        from speechllm.models.cpu_decode import onednn_off_for_small_steps

        with torch.inference_mode(), onednn_off_for_small_steps(model):
            if len(prompt) == 1:  # multilingual without a fixed language: detect it
                out = model(encoder_outputs=enc, decoder_input_ids=tokens, use_cache=False)
                # Language tokens sit between <|startoftranscript|> and <|translate|>.
                translate = self.tokenizer.convert_tokens_to_ids("<|translate|>")
                lang_ids_t = torch.arange(self.sot + 1, translate, device=device)
                best = lang_ids_t[out.logits[:, -1, lang_ids_t].argmax(-1)]
                tail = torch.tensor([self.transcribe_id, self.no_timestamps], device=device).expand(n, 2)
                tokens = torch.cat([tokens, best[:, None], tail], dim=1)
            generated: list[list[int]] = [[] for _ in range(n)]
            done = torch.zeros(n, dtype=torch.bool, device=device)
            past = None
            step_input = tokens
            for _ in range(MAX_TOKENS_PER_WINDOW):
                out = model(encoder_outputs=enc, decoder_input_ids=step_input, **cache_kwargs(model, past),
                            use_cache=True)
                past = output_cache(out)
                logits = out.logits[:, -1].float()
                logits[:, self.eot + 1:] = float("-inf")  # text tokens and end-of-text only
                nxt = logits.argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, self.eot), nxt)
                for i, t in enumerate(nxt.tolist()):
                    if not done[i] and t != self.eot:
                        generated[i].append(t)
                done |= nxt == self.eot
                if bool(done.all()):
                    break
                step_input = nxt[:, None]
        return [self.tokenizer.decode(g, skip_special_tokens=True).strip() for g in generated]


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
