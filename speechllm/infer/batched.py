"""Batched inference: many requests through the encoder, Whisper and the LLM together.

``speechllm-infer --manifest`` (``--batch-size N``, N > 1) and ``speechllm eval`` answer
requests here instead of one ``SpeechLLM.generate`` call per request:

1. requests are prepared a few at a time, similar audio lengths together (:data:`PREPARE_ROWS`):
   one encoder pass over their 30 s windows, one batched Whisper decode for their transcripts
   (:func:`~speechllm.models.transcript.whisper_generate`), the adapter, and the
   chat layout (:meth:`SpeechLLM.prepare_batch`, the path every other caller uses); a
   sub-batch that fails is retried request by request, so only the bad request gets the error;
2. every prepared prompt (input embeddings, audio spans included) goes to the generation
   engine's continuous-batching slot decoder (:meth:`HFBackend.stream_embeds`), prompts sorted
   by length so that a prefill pads little; ``batch_size`` rows decode at once, the common chat
   prefix is run once, a finished row's slot takes the next prompt.

Greedy answers are the sequential path's (``SpeechLLM.generate`` one request at a time) up to
floating-point summation order (a test checks equality in fp32). Sampling draws each row from its
own generator seeded with the request's seed, so a row's sample does not depend on its batch
mates (it differs from the sequential path's draw, which uses torch's global generator). A
repetition penalty, and LLMs whose layers are not all plain full attention, take the sequential
path (:func:`batched_decoding_supported`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from speechllm.errors import SpeechLLMError

log = logging.getLogger(__name__)

# Requests per encoder / Whisper pass. Measured (Whisper tiny.en + SmolLM2, bf16, 32 rows, one
# thread): the prepare step's CPU s per row is lowest at 8 (0.34) against 4 (0.36), 16 (0.37-0.39)
# and 32 (0.42): larger passes share the transcript decode's per-step work but the encoder's
# activations outgrow the caches.
PREPARE_ROWS = 8


@dataclass
class BatchedReply:
    """One request's answer (or its error) from :func:`generate_batched`."""

    response: str | None = None
    transcripts: list[str] = field(default_factory=list)
    new_tokens: int = 0
    error: SpeechLLMError | None = None


@dataclass
class BatchedTimings:
    """Seconds spent per phase over :func:`generate_batched` calls (wall, and CPU seconds of
    this process: on a shared machine the CPU figures are the ones to compare)."""

    prepare_s: float = 0.0  # encoder + VAD + Whisper + adapter + layout
    encoder_s: float = 0.0
    asr_s: float = 0.0
    decode_s: float = 0.0  # LLM prefill + decode
    prepare_cpu_s: float = 0.0
    decode_cpu_s: float = 0.0


def eos_ids(model) -> set[int]:
    """The end tokens ``SpeechLLM.generate`` stops at: the LLM's generation config's, else the
    tokenizer's end token."""
    eos = model.base_causal_lm().generation_config.eos_token_id
    if eos is None:
        eos = model.tokenizer.eos_token_id
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def batched_decoding_supported(model, repetition_penalty: float = 1.0) -> bool:
    """Whether :func:`generate_batched` can serve this model and penalty (else: row by row)."""
    from speechllm.generate.slot_cache import slot_cache_layers

    return repetition_penalty == 1.0 and bool(slot_cache_layers(model.base_causal_lm().config))


@contextlib.contextmanager
def _decode_backend(model) -> Iterator[Any]:
    """The generation engine over the speech model's LLM; the LLM's attention implementation is
    restored afterwards (the engine switches it for its one-token steps on CPU)."""
    from speechllm.generate.hf_backend import HFBackend

    base = model.base_causal_lm()
    previous = getattr(base.config, "_attn_implementation", None)
    try:
        yield HFBackend.for_model(base, model.tokenizer, eos_ids=eos_ids(model), llm_ref=str(model.config.llm))
    finally:
        if previous is not None and getattr(base.config, "_attn_implementation", None) != previous:
            base.set_attn_implementation(previous)


def _prepare(model, conversations, audios, transcripts, timings: BatchedTimings):
    """``(keys, embeds, transcripts)`` per request of one sub-batch (see ``HFBackend.stream_embeds``)."""
    import torch

    phase: dict[str, float] = {}
    batch = model.prepare_batch(conversations, audios, transcripts, add_generation_prompt=True, timings=phase)
    timings.encoder_s += phase.get("encoder_s", 0.0)
    timings.asr_s += phase.get("asr_s", 0.0)
    embeds = model.llm_inputs(batch, embeds=True)["inputs_embeds"]
    out = []
    for b in range(len(conversations)):
        real = batch.attention_mask[b].bool()
        ids = batch.input_ids[b][real].clone()
        audio = batch.audio_mask[b][real]
        # Audio positions get keys no other prompt has, so the shared prefix stops before them.
        ids[audio] = -1 - torch.arange(int(audio.sum()), device=ids.device) - b * 1_000_000
        out.append((ids.tolist(), embeds[b][real], batch.transcripts[b]))
    return out


def generate_batched(model, conversations: Sequence[list[dict[str, Any]]], audios: Sequence[Sequence[Any]],
                     transcripts: Sequence[Sequence[str | None] | None], *, max_new_tokens: int = 256,
                     temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = 0,
                     batch_size: int = 16, timings: BatchedTimings | None = None) -> list[BatchedReply]:
    """Answer every conversation (``audios[i]``: its 16 kHz waves; ``transcripts[i]``: a text
    or None per audio, or None for Whisper's own), ``batch_size`` rows decoding at once.
    A request that cannot be prepared (bad audio, layout) gets ``error`` and the rest go on."""
    from speechllm.generate.backend import SamplingParams

    timings = timings if timings is not None else BatchedTimings()
    replies = [BatchedReply() for _ in conversations]
    prepared: dict[int, tuple[list[int], Any]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    # Requests of similar audio length share a pass: the transcript decode runs until its longest
    # transcript ends, so a pass of similar lengths wastes fewer steps.
    order = sorted(range(len(conversations)), key=lambda i: sum(len(w) for w in audios[i]))
    for start in range(0, len(order), PREPARE_ROWS):
        chunk = order[start:start + PREPARE_ROWS]
        groups = [chunk]
        try:
            results = [_prepare(model, [conversations[i] for i in chunk], [audios[i] for i in chunk],
                                [transcripts[i] for i in chunk], timings)]
        except SpeechLLMError:  # isolate the bad request(s): retry one by one
            groups, results = [], []
            for i in chunk:
                try:
                    results.append(_prepare(model, [conversations[i]], [audios[i]], [transcripts[i]], timings))
                    groups.append([i])
                except SpeechLLMError as e:
                    replies[i].error = e
        for group, result in zip(groups, results, strict=True):
            for i, (keys, embeds, texts) in zip(group, result, strict=True):
                prepared[i] = (keys, embeds)
                replies[i].transcripts = list(texts)
    t1, c1 = time.perf_counter(), time.process_time()
    timings.prepare_s += t1 - t0
    timings.prepare_cpu_s += c1 - c0
    if prepared:
        rows = sorted(prepared, key=lambda i: len(prepared[i][0]))  # similar lengths prefill together
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k)
        seeds = [seed if seed is not None else 0] * len(rows)
        from speechllm.models.cpu_decode import onednn_off_for_small_steps

        with _decode_backend(model) as backend, onednn_off_for_small_steps(backend.model):
            stream = backend.stream_embeds([prepared[i][0] for i in rows], [prepared[i][1] for i in rows], params,
                                           seeds=seeds, batch_size=batch_size)
            for j, completion in stream:
                reply = replies[rows[j]]
                reply.response = completion.text
                reply.new_tokens = len(completion.token_ids) + (completion.finish_reason == "stop")
    timings.decode_s += time.perf_counter() - t1
    timings.decode_cpu_s += time.process_time() - c1
    return replies
