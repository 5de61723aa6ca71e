"""``SpeechLLM``: frozen Whisper encoder + trainable adapter + frozen chat LLM (optional LoRA).

The LLM reads a chat in which every audio locator is replaced by the audio's span: the adapter's
vectors, then the transcript's token embeddings (see :mod:`speechllm.models.chat_layout`).
Text-only batches go straight to the LLM with their token ids: the adapter is never touched and,
without LoRA, the logits are the base LLM's bit for bit.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from speechllm.audio.io import AudioError, EmptyAudioError, NonFiniteAudioError, NotMonoAudioError
from speechllm.config import ModelConfig
from speechllm.errors import ConfigError, SpeechLLMError
from speechllm.llm_runtime import torch_dtype
from speechllm.models import chat_layout as layout
from speechllm.models.adapters import AdapterSpec, build_adapter
from speechllm.models.encoder import (
    EncodedWindows,
    WhisperTapEncoder,
    default_encoder_layers,
    load_whisper,
)

log = logging.getLogger(__name__)

#: A waveform given to the model that cannot be used: the audio family's own error (one type per
#: meaning: empty audio is ``EmptyAudioError`` whether it came from a file or from memory), so
#: batch jobs count it by ``kind`` like a bad file.
InvalidAudioError = AudioError


def resolve_dtype(name: str | torch.dtype | None, device: str = "cpu") -> torch.dtype:
    """``auto`` -> bf16 where the hardware runs it fast (CPU AVX512-BF16/AMX, CUDA), else fp32
    (:func:`speechllm.llm_runtime.torch_dtype`)."""
    return torch_dtype(name, device)


@dataclass
class SpeechBatch:
    """Model input: left-padded token tensors plus the encoder output of the batch's audios.

    ``audio_mask`` marks the positions that receive adapter vectors; ``encoded`` holds the
    windows of all audios in example order (None for a text-only batch); ``transcripts`` is the
    transcript used for each audio of each example.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    audio_mask: torch.Tensor
    encoded: EncodedWindows | None = None
    transcripts: list[list[str]] = field(default_factory=list)

    @property
    def has_audio(self) -> bool:
        return bool(self.audio_mask.any())

    def to(self, device) -> SpeechBatch:
        moved = {k: getattr(self, k).to(device) for k in
                 ("input_ids", "attention_mask", "position_ids", "labels", "audio_mask")}
        return SpeechBatch(**moved, encoded=self.encoded, transcripts=self.transcripts)


@dataclass
class ResponseForward:
    """Hidden states and response logits of one forward pass (:meth:`SpeechLLM.response_forward`)."""

    hidden: torch.Tensor  # (B, T, D) final hidden states
    logits: torch.Tensor  # (N, V) logits at the positions that predict a response token
    select: torch.Tensor  # (B, T-1) bool: which positions those are
    targets: torch.Tensor  # (N,) the response tokens


@dataclass
class SpeechLLMOutput:
    """``loss``: mean cross-entropy over response tokens (None without labels);
    ``num_tokens``: how many tokens the loss covers (for global normalisation across ranks);
    ``logits``: full ``(batch, time, vocab)`` logits when asked for."""

    loss: torch.Tensor | None
    num_tokens: int
    logits: torch.Tensor | None = None


def _is_single_conversation(messages: Any) -> bool:
    return bool(messages) and isinstance(messages[0], dict)


def check_wave(wave: Any, where: str) -> np.ndarray:
    """A 1-D float32 array of finite samples, or the audio family's error (``empty``,
    ``nan_or_inf``, ``not_mono``)."""
    arr = np.asarray(wave.detach().cpu() if isinstance(wave, torch.Tensor) else wave, dtype=np.float32)
    if arr.ndim != 1:
        raise NotMonoAudioError(where, f"expected mono 16 kHz samples (1-D), got shape {arr.shape}")
    if arr.size == 0:
        raise EmptyAudioError(where, "empty audio (no samples)")
    if not np.isfinite(arr).all():
        raise NonFiniteAudioError(where, "contains NaN or Inf samples")
    return arr


class SpeechLLM(nn.Module):
    """Encoder + adapter + LLM. Build with :meth:`from_config` (new adapter) or
    :meth:`from_pretrained` (a saved checkpoint); see ``docs/model.md``."""

    def __init__(self, config: ModelConfig, encoder: WhisperTapEncoder, adapter: nn.Module,
                 llm: nn.Module, tokenizer: Any, bases: dict[str, dict[str, Any]] | None = None):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.adapter = adapter
        self.llm = llm
        self.tokenizer = tokenizer
        self.bases = bases or {}
        self._transcriber = None
        # Base values of the LLM weights trained in place (model.llm_train), by name in
        # base_causal_lm(): what disable_lora runs, as peft's disable_adapter does for LoRA.
        self.llm_base_values: dict[str, torch.Tensor] = {}
        # model.prompt_tuning: (N, llm_dim) fp32 virtual-token embeddings, trained; None when off.
        self.register_parameter("prompt_embeddings", None)
        # model.prefix_tuning: (layers, 2, kv_heads, N, head_dim) fp32 keys/values, trained; None when off.
        self.register_parameter("prefix_kv", None)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, config: ModelConfig, *, device: str = "cpu", dtype: str | torch.dtype | None = None,
                    seed: int = 0, llm_device: str | None = None) -> SpeechLLM:
        """Load the frozen encoder and LLM named by ``config`` and create a new adapter
        (seeded), plus LoRA when ``config.lora.enabled``. ``device`` ``auto``: CUDA when visible.
        ``llm_device``: where the LLM (and its LoRA) is built instead of ``device``: ``cpu``, or
        ``meta`` (without its weights, nothing read); FSDP2's main and other ranks
        (:func:`~speechllm.train.distributed.shard_frozen_llm` moves the shards to ``device``)."""
        from speechllm.llm_runtime import resolve_device

        model = cls._load_frozen(config, device=resolve_device(device), dtype=dtype, seed=seed, llm_device=llm_device)
        if config.lora.enabled:
            model.enable_lora()
        model.enable_llm_train()
        return model

    @classmethod
    def _load_frozen(cls, config: ModelConfig, *, device: str, dtype, seed: int,
                     encoder_ref: str | None = None, llm_ref: str | None = None,
                     llm_device: str | None = None) -> SpeechLLM:
        from speechllm.models.checkpoint import describe_base
        from speechllm.utils.remote_code import CONFIG_SOURCE, trust_remote_code

        torch_dtype = resolve_dtype(dtype if dtype is not None else config.dtype, device)
        whisper, extractor, wtok, enc_resolved = load_whisper(
            encoder_ref or config.encoder, revision=config.encoder_revision, dtype=torch_dtype,
            trust_remote_code=trust_remote_code(config.trust_remote_code, source=CONFIG_SOURCE,
                                                model=encoder_ref or config.encoder),
        )
        if config.transcript_source == "none":
            whisper.model.decoder = None  # the decoder is never used; free its memory
        layers = config.encoder_layers or default_encoder_layers(whisper.config.encoder_layers, config.adapter,
                                                                 config.tap_point)
        encoder = WhisperTapEncoder(whisper, extractor, wtok, layers, tap_point=config.tap_point)
        llm, tokenizer, llm_resolved = load_llm(config, llm_ref or config.llm, torch_dtype, empty=llm_device == "meta")
        spec = AdapterSpec(encoder_dim=encoder.d_model, encoder_heads=encoder.num_heads,
                           num_taps=len(layers), llm_dim=llm.get_input_embeddings().embedding_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = build_adapter(config.adapter, spec, config)
        bases = {
            "encoder": describe_base(encoder_ref or config.encoder, config.encoder_revision, enc_resolved, whisper.config),
            "llm": describe_base(llm_ref or config.llm, config.llm_revision, llm_resolved, llm.config),
        }
        model = cls(config, encoder, adapter, llm, tokenizer, bases)
        if config.prompt_tuning.num_tokens:
            model.init_prompt_tuning(seed)
        if config.prefix_tuning.num_tokens:
            from speechllm.models.prefix_tuning import init_prefix

            pt = config.prefix_tuning
            model.prefix_kv = nn.Parameter(init_prefix(llm, tokenizer, pt.num_tokens, pt.init_text, seed))
        if llm_device is None:
            model.to(device)
        else:  # SpeechLLM.to would move the LLM too, and the encoder to the LLM's device
            adapter.to(device)
            encoder.to(device)
            if llm_device != "meta":  # a meta LLM has nothing to move
                llm.to(llm_device)
        return model.eval()  # dropout off until a trainer calls .train()

    def train(self, mode: bool = True) -> SpeechLLM:
        """Train mode for what is trained (adapter, LoRA); the frozen LLM stays in eval mode
        unless LoRA is on (peft's LoRA dropout needs train mode)."""
        super().train(mode)
        self.llm.train(mode and self.config.lora.enabled)
        return self

    def to(self, *args, **kwargs):  # the encoder is not a submodule (frozen, never saved)
        super().to(*args, **kwargs)
        device = next(self.llm.parameters()).device
        self.encoder.to(device)
        self.llm_base_values = {n: v.to(device) for n, v in self.llm_base_values.items()}
        return self

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    def enable_lora(self) -> None:
        """Wrap the LLM with peft LoRA adapters per ``config.lora`` (B starts at zero, so the
        model's outputs do not change until training moves it)."""
        from peft import get_peft_model

        from speechllm.models.llm_update import peft_config as make_peft_config

        lc = self.config.lora
        peft_config = make_peft_config(lc)
        try:
            self.llm = get_peft_model(self.llm, peft_config)
        except ValueError as e:
            raise ConfigError(f"model.lora.target_modules {lc.target_modules}: {e}") from None
        self.config.lora.enabled = True
        self.train(self.training)  # new LoRA dropout modules start in train mode; align them

    def enable_llm_train(self) -> list[str]:
        """Unfreeze the LLM weights ``config.llm_train`` names (update scopes beyond peft); their
        names, as in :meth:`base_causal_lm`."""
        from speechllm.models.llm_update import enable_llm_train

        names = enable_llm_train(self.base_causal_lm(), self.config.llm_train)
        params = dict(self.base_causal_lm().named_parameters())
        self.llm_base_values = {n: params[n].detach().clone() for n in names}
        return names

    def init_prompt_tuning(self, seed: int = 0) -> None:
        """Create the ``model.prompt_tuning`` virtual tokens: the embeddings of ``init_text``'s
        tokens (repeated to ``num_tokens``), or seeded random ones with the embedding matrix's spread."""
        pt = self.config.prompt_tuning
        table = self.llm.get_input_embeddings().weight
        if table.is_meta:  # FSDP2's other ranks: the main rank's values arrive by broadcast
            init = torch.zeros(pt.num_tokens, table.shape[1])
        elif pt.init_text:
            ids = self.tokenizer(pt.init_text, add_special_tokens=False)["input_ids"]
            if not ids:
                raise ConfigError(f"model.prompt_tuning.init_text: {pt.init_text!r} has no tokens; give a text or leave it empty")
            ids = (ids * (pt.num_tokens // len(ids) + 1))[:pt.num_tokens]
            init = table.detach()[torch.tensor(ids, device=table.device)].float().cpu()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                init = torch.randn(pt.num_tokens, table.shape[1]) * table.detach().float().std().cpu()
        self.prompt_embeddings = nn.Parameter(init.to(table.device if not table.is_meta else "cpu"))

    def prompt_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Where the virtual tokens stand: the first ``num_tokens`` real positions of each row
        (:meth:`sequence` puts them there; left padding keeps them first)."""
        return attention_mask.bool() & (attention_mask.cumsum(1) <= self.config.prompt_tuning.num_tokens)

    def base_causal_lm(self) -> nn.Module:
        """The HF causal LM (inside peft's wrapper when LoRA is on)."""
        return self.llm.get_base_model() if hasattr(self.llm, "get_base_model") else self.llm

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ checkpoints

    def save_pretrained(self, out_dir, *, overwrite: bool = True) -> None:
        """Write the config naming the frozen bases and only the trained weights."""
        from speechllm.models.checkpoint import save_checkpoint

        save_checkpoint(self, out_dir, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, path, *, device: str = "cpu", dtype: str | torch.dtype | None = None,
                        encoder: str | None = None, llm: str | None = None, trainable: bool = False,
                        verify_hashes: bool = True, llm_device: str | None = None) -> SpeechLLM:
        """Rebuild the trained model from a checkpoint folder. ``encoder``/``llm`` point at a
        moved copy of the bases; bases whose shapes differ from the trained ones are refused.
        ``llm_device``: as in :meth:`from_config` (``meta``: the LLM and its trained weights are
        left unfilled, for FSDP2's broadcast from the main rank)."""
        from speechllm.models.checkpoint import load_checkpoint

        return load_checkpoint(cls, path, device=device, dtype=dtype, encoder=encoder, llm=llm,
                               trainable=trainable, verify_hashes=verify_hashes, llm_device=llm_device)

    # ------------------------------------------------------------------ audio

    @property
    def transcriber(self):
        if self._transcriber is None:
            from speechllm.models.transcript import WhisperTranscriber

            self._transcriber = WhisperTranscriber(self.encoder.whisper, self.encoder.tokenizer,
                                                   language=self.config.asr_language)
        return self._transcriber

    def transcribe(self, waves: Sequence[np.ndarray]) -> list[str]:
        """Whisper's own transcript of each wave (VAD first: non-speech -> "")."""
        waves = [check_wave(w, f"audio {i}") for i, w in enumerate(waves)]
        for i, w in enumerate(waves):
            layout.check_audio_length(len(w), self.config, where=f"audio {i}")
        encoded = self.encoder.encode(waves, need_final=True)
        return self.transcripts_for(waves, encoded, [None] * len(waves))

    def transcripts_for(self, waves, encoded: EncodedWindows, given: Sequence[str | None], *,
                        training: bool = False) -> list[str]:
        """The transcript rule: which text follows each audio's adapter vectors.

        ``given[i]`` where not None (training rows: :func:`~speechllm.models.transcript.training_transcript`),
        else Whisper's greedy transcript from the already computed ``encoded`` output (VAD
        first: non-speech -> ""); nothing at all with ``transcript_source: none``. With
        ``vad_on_given_transcripts`` a given transcript is "" too where VAD hears no speech, at
        inference and evaluation only (``training``: rows keep theirs, as DeSTA2.5's training does).
        """
        from speechllm.models.transcript import has_speech, transcribe_windows

        if self.config.transcript_source == "none":  # no transcript enters the span
            return [""] * len(given)
        need = [t is None for t in given]
        check_given = self.config.vad_on_given_transcripts and not training
        if not any(need) and not check_given:
            return ["" if t is None else t for t in given]
        speech = [n and (not self.config.use_vad or has_speech(w)) for n, w in zip(need, waves, strict=True)]
        asr = (transcribe_windows(self.transcriber, encoded.final, encoded.windows_per_audio, speech)
               if any(need) else [""] * len(given))
        # DeSTA2.5: a given transcript of audio in which VAD hears no speech is blanked as well.
        return [a if t is None else ("" if check_given and not has_speech(w) else t)
                for t, a, w in zip(given, asr, waves, strict=True)]

    def encode_audio(self, waves: Sequence[np.ndarray] | None, given: Sequence[str | None], *,
                     training: bool = False, encoded: EncodedWindows | None = None,
                     cached_transcripts: Sequence[str] | None = None,
                     timings: dict[str, float] | None = None) -> tuple[EncodedWindows, list[str]]:
        """Encoder output and transcript of every audio (training, inference and evaluation all
        come through here). ``encoded`` (with ``cached_transcripts``, a feature cache's answer)
        replaces the encoder pass: a cached transcript stands where ``given`` has None.
        ``timings`` receives ``encoder_s`` and ``asr_s`` (VAD + decoding) in seconds."""
        import time

        need_asr = self.config.transcript_source != "none" and any(t is None for t in given)
        t0 = time.perf_counter()
        if encoded is None:
            encoded = self.encoder.encode(list(waves or []), need_final=need_asr)
        elif cached_transcripts is not None:
            given = [c if t is None else t for t, c in zip(given, cached_transcripts, strict=True)]
        elif need_asr and encoded.final is None:
            raise SpeechLLMError("cached encoder output has no final states: give the transcripts")
        t1 = time.perf_counter()
        if cached_transcripts is not None and waves is None:
            texts = ["" if t is None or self.config.transcript_source == "none" else t for t in given]
        else:
            texts = self.transcripts_for(waves, encoded, given, training=training)
        if timings is not None:
            timings["encoder_s"] = t1 - t0
            timings["asr_s"] = time.perf_counter() - t1
        return encoded, texts

    def audio_vectors(self, encoded: EncodedWindows) -> torch.Tensor:
        """Adapter output of every window, real vectors only, concatenated: ``(total, llm_dim)``.

        Outside training, with the frozen models in bf16/fp16 and no autocast already on, the
        (fp32) adapter runs under autocast to that dtype, as training's default precision runs it
        (``train.precision: bf16``); its output is cast to the LLM's dtype anyway. In fp32 nothing
        changes."""
        ctx = contextlib.nullcontext()
        low = self.encoder.dtype
        device = encoded.taps[0].device.type if encoded.taps else self.device.type
        if not self.adapter.training and low in (torch.bfloat16, torch.float16) \
                and not torch.is_autocast_enabled(device):
            ctx = torch.autocast(device_type=device, dtype=low)
        with ctx:
            out, mask = self.adapter(encoded.taps, encoded.valid_frames)
        return out[mask]

    # ------------------------------------------------------------------ batches

    def sequence(self, chat: layout.RenderedChat, audios: Sequence[tuple[int, str]] = ()
                 ) -> tuple[layout.ChatSequence, list[list[int]]]:
        """One example laid out: ``chat`` with the span of each ``(num_samples, transcript)``
        audio where its locator stands; also the transcript token ids of each span."""
        slots = [layout.audio_slot(self.tokenizer, n, t, self.config) for n, t in audios]
        seq = layout.build_sequence(chat, slots, self.pad_id)
        n = self.config.prompt_tuning.num_tokens
        if n:  # the virtual tokens' slots: never a target, filled by embed()
            seq = layout.ChatSequence([self.pad_id] * n + seq.input_ids, [layout.IGNORE_INDEX] * n + seq.labels,
                                      [False] * n + seq.audio_mask)
        return seq, [s.transcript_ids for s in slots]

    def collate(self, sequences: Sequence[layout.ChatSequence], encoded: EncodedWindows | None = None,
                transcripts: Sequence[Sequence[str]] | None = None) -> SpeechBatch:
        """Left-padded batch of laid-out examples, on the model's device."""
        tensors = layout.collate_left_padded(list(sequences), self.pad_id)
        batch = SpeechBatch(**tensors, encoded=encoded,
                            transcripts=[list(t) for t in transcripts] if transcripts is not None else [])
        return batch.to(self.device)

    def prepare_batch(
        self,
        conversations: Sequence[Sequence[layout.Message]],
        audios: Sequence[Sequence[Any]] | None = None,
        transcripts: Sequence[Sequence[str | None]] | None = None,
        *,
        add_generation_prompt: bool = False,
        timings: dict[str, float] | None = None,
        encoded: EncodedWindows | None = None,
    ) -> SpeechBatch:
        """Render, tokenise, encode and collate a batch.

        ``audios[b]`` are the 16 kHz mono waves of conversation ``b`` (in locator order);
        ``transcripts[b][i]`` is the text that follows audio ``i``'s adapter vectors (None: Whisper's
        own, behind VAD). With ``add_generation_prompt`` the prompts end with the assistant header.
        ``timings``, when given, receives ``encoder_s`` and ``asr_s`` (VAD + decoding) in seconds.
        ``encoded``: the encoder output of these waves (e.g. from a feature cache), reused as is.
        """
        n = len(conversations)
        audios = [list(a) for a in audios] if audios is not None else [[] for _ in range(n)]
        transcripts = ([list(t) for t in transcripts] if transcripts is not None
                       else [[None] * len(a) for a in audios])
        if len(audios) != n or len(transcripts) != n:
            raise layout.ChatLayoutError(f"{n} conversations but {len(audios)} audio lists / {len(transcripts)} transcript lists")
        flat_waves, flat_given = [], []
        for b, (waves, texts) in enumerate(zip(audios, transcripts, strict=True)):
            if len(texts) != len(waves):
                raise layout.ChatLayoutError(f"example {b}: {len(waves)} audios but {len(texts)} transcripts")
            for i, w in enumerate(waves):
                arr = check_wave(w, f"example {b} audio {i}")
                layout.check_audio_length(len(arr), self.config, where=f"example {b} audio {i}")
                flat_waves.append(arr)
                flat_given.append(texts[i])
        rendered = [
            layout.render_chat(self.tokenizer, conv, self.config, num_audios=len(waves),
                               add_generation_prompt=add_generation_prompt)
            for conv, waves in zip(conversations, audios, strict=True)
        ]
        flat_texts: list[str] = []
        if flat_waves:
            encoded, flat_texts = self.encode_audio(flat_waves, flat_given, encoded=encoded, timings=timings)
        sequences, per_example, k = [], [], 0
        for r, waves in zip(rendered, audios, strict=True):
            texts = flat_texts[k:k + len(waves)]
            seq, _ = self.sequence(r, [(len(flat_waves[k + i]), t) for i, t in enumerate(texts)])
            k += len(waves)
            per_example.append(texts)
            sequences.append(seq)
        return self.collate(sequences, encoded if flat_waves else None, per_example)

    # ------------------------------------------------------------------ forward

    def embed(self, batch: SpeechBatch) -> torch.Tensor:
        """Token embeddings with the adapter's vectors written into the audio positions (and the
        prompt-tuning virtual tokens into theirs)."""
        embeds = self.llm.get_input_embeddings()(batch.input_ids)
        if self.prompt_embeddings is not None:
            where = self.prompt_mask(batch.attention_mask)
            rows = self.prompt_embeddings.to(embeds.dtype).expand(batch.input_ids.shape[0], -1, -1)
            embeds = embeds.masked_scatter(where.unsqueeze(-1), rows)
        if not batch.has_audio:
            return embeds
        if batch.encoded is None:
            raise SpeechLLMError("the batch has audio positions but no encoder output")
        vectors = self.audio_vectors(batch.encoded)
        expected = int(batch.audio_mask.sum())
        if vectors.shape[0] != expected:
            raise SpeechLLMError(
                f"adapter produced {vectors.shape[0]} vectors for {expected} audio positions "
                "(the span length and the adapter disagree: a bug, please report)"
            )
        return embeds.masked_scatter(batch.audio_mask.unsqueeze(-1), vectors.to(embeds.dtype))

    def llm_inputs(self, batch: SpeechBatch, inputs_embeds: torch.Tensor | None = None,
                   *, embeds: bool = False, base: bool = False) -> dict[str, torch.Tensor]:
        """The LLM's keyword inputs: ``inputs_embeds`` with the adapter vectors in the audio
        positions; a text-only batch goes as token ids (the LLM exactly as it is, the adapter
        untouched) unless ``embeds`` asks for embeddings. With prefix tuning (not for the
        ``base`` forward) the KV cache holds the learned prefix (:mod:`~speechllm.models.prefix_tuning`)."""
        inputs = {"attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
        prefixed = self.prefix_kv is not None and not base
        if inputs_embeds is not None:
            inputs["inputs_embeds"] = inputs_embeds
        elif batch.has_audio or embeds or self.prompt_embeddings is not None or prefixed:
            inputs["inputs_embeds"] = self.embed(batch)
        else:
            inputs["input_ids"] = batch.input_ids
        if prefixed:
            from speechllm.models.prefix_tuning import with_prefix

            inputs = with_prefix(inputs, self.prefix_kv, self.base_causal_lm())
        return inputs

    def response_forward(self, batch: SpeechBatch, *, inputs_embeds: torch.Tensor | None = None,
                         disable_lora: bool = False, prefix: Any = None) -> ResponseForward:
        """The one forward: the LLM body once, the LM head only where a response token is
        predicted. ``inputs_embeds`` replaces the batch's embeddings; ``disable_lora`` runs the
        base LLM (peft off, weights trained in place at their base values, virtual tokens masked out); ``prefix`` (:class:`~speechllm.train.prefix_kv.FrozenPrefixKV`,
        frozen LLM only) starts the body after the chat prefix all rows share."""
        ctx = contextlib.ExitStack()
        if disable_lora and hasattr(self.llm, "disable_adapter"):
            ctx.enter_context(self.llm.disable_adapter())
        if disable_lora and self.llm_base_values:
            # The base values stand in for the trained ones without writing into them (autograd
            # may still hold the trained tensors for a backward pass).
            from torch.nn.utils.stateless import _reparametrize_module

            ctx.enter_context(_reparametrize_module(self.base_causal_lm(), self.llm_base_values, tie_weights=True))
        with ctx:
            inputs = self.llm_inputs(batch, inputs_embeds, embeds=prefix is not None, base=disable_lora)
            if disable_lora and self.prompt_embeddings is not None:
                # The base LLM reads no virtual token: masked out, the rest sees what it would
                # without them (positions shift by a constant, which relative RoPE ignores).
                inputs["attention_mask"] = batch.attention_mask * ~self.prompt_mask(batch.attention_mask)
            hidden = None
            if prefix is not None:
                hidden = prefix.hidden_states(inputs["inputs_embeds"], batch.input_ids, batch.attention_mask,
                                              batch.position_ids, batch.audio_mask)
            if hidden is None:
                hidden = self.base_causal_lm().get_decoder()(**inputs, use_cache=False).last_hidden_state
            targets = batch.labels[:, 1:]
            select = targets != layout.IGNORE_INDEX
            logits = self.lm_head_logits(hidden[:, :-1][select])
        return ResponseForward(hidden=hidden, logits=logits, select=select, targets=targets[select])

    def forward(self, batch: SpeechBatch, *, return_logits: bool = False) -> SpeechLLMOutput:
        """Mean next-token cross-entropy on the response tokens (labels != IGNORE_INDEX).

        Without ``return_logits`` this is :meth:`response_forward` (the LM head only at positions
        that predict a response token); with it the full logits are computed and returned.
        """
        if return_logits:
            logits = self.llm(**self.llm_inputs(batch), use_cache=False).logits
            select = batch.labels[:, 1:] != layout.IGNORE_INDEX
            picked, targets = logits[:, :-1][select], batch.labels[:, 1:][select]
        else:
            logits = None
            out = self.response_forward(batch)
            picked, targets = out.logits, out.targets
        num_tokens = int(targets.numel())
        loss = None
        if num_tokens:
            loss = nn.functional.cross_entropy(picked.float(), targets, reduction="mean")
        elif picked.requires_grad:  # keeps the graph (and DDP) alive on a batch without targets
            loss = picked.sum() * 0.0
        return SpeechLLMOutput(loss=loss, num_tokens=num_tokens, logits=logits)

    def lm_head_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LLM's output layer applied to final hidden states (with Gemma-2-style logit
        soft-capping where the model's config has it): logits at just the positions given."""
        base = self.base_causal_lm()
        logits = base.get_output_embeddings()(hidden)
        cap = getattr(base.config, "final_logit_softcapping", None)
        if cap:  # Gemma-2 style soft-capping, as the model's own forward applies it
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ------------------------------------------------------------------ generation

    @torch.inference_mode()
    def generate(
        self,
        messages: Sequence[layout.Message] | Sequence[Sequence[layout.Message]],
        audios: Sequence[Any] | None = None,
        transcripts: Sequence[Any] | None = None,
        *,
        max_new_tokens: int = 256,
        min_new_tokens: int = 0,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        streamer: Any = None,
        return_batch: bool = False,
        timings: dict[str, float] | None = None,
    ):
        """Generate the assistant's reply. ``messages`` is one conversation (then ``audios`` is
        a list of waves and ``transcripts`` a list of texts/None, and one string is returned) or
        a list of conversations (lists of lists; a list of strings is returned). ``temperature``
        0 is greedy. The LLM's own ``generate`` runs on ``inputs_embeds`` with its KV cache.
        ``return_batch`` also returns the prepared :class:`SpeechBatch` (its ``transcripts``)."""
        single = _is_single_conversation(messages)
        convs = [messages] if single else list(messages)
        if single:
            audios = [list(audios or [])]
            transcripts = [list(transcripts)] if transcripts is not None else None
        batch = self.prepare_batch(convs, audios, transcripts, add_generation_prompt=True, timings=timings)
        gen = copy.deepcopy(self.base_causal_lm().generation_config)
        sample = temperature > 0
        gen.update(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None, do_sample=sample, repetition_penalty=repetition_penalty,
                   temperature=temperature if sample else None, top_p=top_p if sample else None,
                   top_k=(top_k or None) if sample else None, pad_token_id=self.pad_id)
        if gen.eos_token_id is None:
            gen.eos_token_id = self.tokenizer.eos_token_id
        inputs = self.llm_inputs(batch)
        inputs.pop("position_ids")  # generate derives them from the attention mask, step by step
        if self.prefix_kv is not None:
            from speechllm.models.prefix_tuning import for_generate

            inputs = for_generate(inputs, self.prefix_kv)
        from speechllm.models.cpu_decode import onednn_off_for_small_steps

        with onednn_off_for_small_steps(self.base_causal_lm()):
            out = self.llm.generate(**inputs, generation_config=gen, streamer=streamer)
        if "input_ids" in inputs:  # with token ids, generate returns prompt + continuation
            out = out[:, inputs["input_ids"].shape[1]:]
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        texts = [t.strip() for t in texts]
        result = texts[0] if single else texts
        return (result, batch) if return_batch else result


def load_llm(config: ModelConfig, ref: str, torch_dtype: torch.dtype | None, *, empty: bool = False):
    """``(causal LM, tokenizer, resolved path or id)`` named by a ``ModelConfig``: its revision,
    remote-code request (allowed only by the user) and chat-template file; all weights frozen.
    ``empty``: on the meta device, no weight read (:func:`speechllm.llm_runtime.load_causal_lm`)."""
    from speechllm.llm_runtime import load_causal_lm, read_chat_template
    from speechllm.utils.remote_code import CONFIG_SOURCE, trust_remote_code

    template = (read_chat_template(config.chat_template, error=ConfigError, field="model.chat_template")
                if config.chat_template else None)
    loaded = load_causal_lm(ref, revision=config.llm_revision, dtype=torch_dtype,
                            trust_remote_code=trust_remote_code(config.trust_remote_code, source=CONFIG_SOURCE, model=ref),
                            chat_template=template, empty=empty)
    return loaded.model, loaded.tokenizer, loaded.resolved
