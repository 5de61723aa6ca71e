"""Predictors: what answers benchmark items. The harness only needs ``predict(requests)``.

- :class:`TextLLMPredictor`: a bare chat LLM. Items with audio are answered from their text
  stand-in (seed description or transcript): this is the "text reference" of a benchmark and
  the text side of the speech-vs-text gap.
- :class:`SpeechLLMPredictor`: the trained speech model (``speechllm.models.SpeechLLM``), which
  hears the audio.

:func:`load_predictor` picks one from ``--model``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from speechllm.eval.answer_match import ANSWER_FORMAT_INSTRUCTION, format_choices
from speechllm.eval.items import KIND_CHOICE, BenchItem

log = logging.getLogger(__name__)



@dataclass
class Request:
    """One model call: the user text, the audio files, and the audio's text stand-in."""

    id: str
    text: str
    audios: list[str] = field(default_factory=list)
    audio_text: str | None = None


class Predictor(Protocol):
    """Anything that answers requests; ``needs_audio`` says whether audio files must exist."""

    needs_audio: bool

    def describe(self) -> dict[str, Any]: ...

    def predict(self, requests: Sequence[Request]) -> list[str]: ...


def build_prompt(item: BenchItem) -> str:
    """The user text for an item: the instruction, the lettered choices for multiple-choice
    items (unless the benchmark wrote them into the instruction, as SAKURA does) and DeSTA2.5's
    answer-format request."""
    text = item.instruction.strip()
    if item.kind == KIND_CHOICE:
        if not item.metadata.get("choices_in_instruction"):
            text = f"{text}\n{format_choices(item.choices)}"
        text = f"{text}\n{ANSWER_FORMAT_INSTRUCTION}"
    return text


def make_request(item: BenchItem) -> Request:
    return Request(id=item.id, text=build_prompt(item), audios=list(item.audios), audio_text=item.audio_text)


def text_reference_message(request: Request, layout_config: Any = None) -> str:
    """The user message a bare LLM reads for a request: the audio's text stand-in placed where
    the audio span would stand, wrapped as ``audio_start + text + audio_end``, by
    :func:`speechllm.models.chat_layout.substitute_audio_text`, the function target generation
    uses, so a text reference reads exactly what the training targets were generated from.
    ``layout_config`` is a ``ModelConfig`` (default: the default one)."""
    if not (request.audios and request.audio_text):
        return request.text
    from speechllm.config import ModelConfig
    from speechllm.models.chat_layout import substitute_audio_text

    config = layout_config or ModelConfig()
    messages = substitute_audio_text([{"role": "user", "content": request.text}], [request.audio_text], config)
    return messages[0]["content"]


# --------------------------------------------------------------------------- HF helpers


def load_causal_lm(ref: str, *, dtype: str = "fp32"):
    """``(model, tokenizer)``: an evaluation LLM (base, text reference, judge) loaded by
    :func:`speechllm.llm_runtime.load_causal_lm`; its own code runs only with the user's
    ``--trust-remote-code``, never because a file asks."""
    from speechllm.llm_runtime import load_causal_lm as load
    from speechllm.utils.remote_code import remote_code_allowed

    loaded = load(ref, dtype=dtype, trust_remote_code=remote_code_allowed())
    return loaded.model, loaded.tokenizer


def generate_ids(model, tokenizer, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations (token ids, eos and padding stripped) of a batch of prompts."""
    import torch

    from speechllm.llm_runtime import left_pad

    ids, mask = left_pad(prompt_ids, tokenizer.pad_token_id)
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id)
    stop = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    eos = model.generation_config.eos_token_id
    stop.update(eos if isinstance(eos, list) else [eos])
    result = []
    for row in out[:, ids.shape[1]:].tolist():
        kept = []
        for t in row:
            if t in stop:
                break
            kept.append(t)
        result.append(kept)
    return result


def generate_chat(model, tokenizer, chats: Sequence[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    """Greedy replies to a batch of chats."""
    from speechllm.llm_runtime import encode_chats

    answers = generate_ids(model, tokenizer, encode_chats(tokenizer, chats), max_new_tokens)
    return [tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]


# --------------------------------------------------------------------------- predictors


class TextLLMPredictor:
    """A bare chat LLM answering from text (see :func:`text_reference_message`)."""

    needs_audio = False

    def __init__(self, model: str, *, max_new_tokens: int = 128, batch_size: int = 8,
                 system_prompt: str | None = None, dtype: str = "fp32", layout_config: Any = None):
        self.model_ref = model
        self.layout_config = layout_config
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.system_prompt = system_prompt
        self.model, self.tokenizer = load_causal_lm(model, dtype=dtype)

    def describe(self) -> dict[str, Any]:
        example = text_reference_message(Request(id="", text="{instruction}", audios=["a"], audio_text="{audio_text}"),
                                         self.layout_config)
        return {"type": "text-llm", "model": self.model_ref, "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy", "text_reference_layout": example}

    def model_input(self, request: Request) -> str:
        """The user message this model reads for a request (recorded in predictions.jsonl)."""
        return text_reference_message(request, self.layout_config)

    def predict(self, requests: Sequence[Request]) -> list[str]:
        chats = []
        for r in requests:
            chat = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
            chat.append({"role": "user", "content": self.model_input(r)})
            chats.append(chat)
        out: list[str] = []
        for i in range(0, len(chats), self.batch_size):
            out.extend(generate_chat(self.model, self.tokenizer, chats[i:i + self.batch_size], self.max_new_tokens))
        return out


class SpeechLLMPredictor:
    """The speech model, answering batches of requests through
    :func:`speechllm.infer.batched.generate_batched` (``SpeechLLM.generate`` where that cannot serve).

    Adapter point: this is the only place that knows the SpeechLLM's generation API. Audio is
    decoded here (16 kHz mono); the transcript after the adapter vectors is Whisper's own (VAD
    first), as at inference, since a benchmark ships no transcript.
    """

    needs_audio = True

    def __init__(self, model_dir: str, *, max_new_tokens: int = 128, batch_size: int = 8):
        from speechllm.models import SpeechLLM

        self.model_ref = model_dir
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.model = SpeechLLM.from_pretrained(model_dir)
        self.model.eval()

    def describe(self) -> dict[str, Any]:
        return {"type": "speechllm", "model": self.model_ref, "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy", "bases": getattr(self.model, "bases", {})}

    def predict(self, requests: Sequence[Request]) -> list[str]:
        from speechllm.audio.io import load_audio
        from speechllm.infer.batched import batched_decoding_supported, generate_batched

        conversations = [[{"role": "user", "content": r.text}] for r in requests]
        waves = [[load_audio(a) for a in r.audios] for r in requests]
        if not batched_decoding_supported(self.model):
            return list(self.model.generate(conversations, waves, max_new_tokens=self.max_new_tokens))
        # The generation engine's batched decoder: the same greedy answers, rows finish independently.
        replies = generate_batched(self.model, conversations, waves, [[None] * len(w) for w in waves],
                                   max_new_tokens=self.max_new_tokens, batch_size=max(1, self.batch_size))
        for reply in replies:
            if reply.error is not None:
                raise reply.error  # the harness retries the batch item by item
        return [reply.response or "" for reply in replies]

    def text_lm(self):
        """The LLM that answers text-only input (text never passes the adapter), with its
        tokenizer: the tuned side of the retention suite."""
        return self.model.llm, self.model.tokenizer


SPEECHLLM_CONFIG_FILE = "speechllm_config.json"  # speechllm.models.checkpoint.CONFIG_FILE


def is_speechllm_dir(path: str) -> bool:
    """A trained SpeechLLM checkpoint folder, as opposed to a bare HF LLM."""
    return (Path(path) / SPEECHLLM_CONFIG_FILE).is_file()


def load_predictor(model: str, *, max_new_tokens: int = 128, batch_size: int = 8) -> Predictor:
    """A SpeechLLM for a trained run folder, else a text LLM (offline:NAME, folder, hub id)."""
    if is_speechllm_dir(model):
        return SpeechLLMPredictor(model, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return TextLLMPredictor(model, max_new_tokens=max_new_tokens, batch_size=batch_size)
