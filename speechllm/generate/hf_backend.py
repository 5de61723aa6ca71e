"""Hugging Face backend: a batched decode loop over a KV cache, on CPU or GPU.

Why not ``model.generate``: for a small frozen LLM on a CPU the per-step overhead of
``generate`` (logits processors, stopping criteria, finished rows kept in the batch and fed pad
tokens until the longest row ends, a KV cache that grows by concatenation) costs as much as the
model. The default loop (:class:`_SlotDecoder`)

- runs the prompts' common prefix (system prompt, chat header) once and prefills only each
  row's own suffix, keeping only the last position's logits;
- keeps ``batch_size`` rows decoding in a :class:`~speechllm.generate.slot_cache.SlotKVCache`:
  each step writes one column in place; a row that emits an end token frees its slot, and the
  next prompts are prefilled into free slots, so a batch's cost follows its rows' actual lengths;
- on CPU, runs one-token steps with grouped matmul attention
  (:mod:`speechllm.models.decode_attention`);
- samples each row with its own seeded ``torch.Generator``, so a row's sample does not depend on
  which rows share its batch.

Models with sliding-window, linear or other non-plain attention layers (and attention
implementations that take only 2-D masks) use :class:`_Decoder`, which drops finished rows from
a ``DynamicCache`` and merges new ones into it. Greedy results equal ``model.generate`` row by row
and the two loops agree with each other (tests check both on a tiny model in fp32).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from speechllm.generate.backend import (
    Completion,
    GenerationError,
    SamplingParams,
    TokenizerPrompts,
    missing_chat_template_error,
    read_chat_template,
)
from speechllm.utils.hf_compat import cache_kwargs

log = logging.getLogger(__name__)

def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu`` (:mod:`speechllm.llm_runtime`)."""
    from speechllm.llm_runtime import resolve_device as resolve

    return resolve(device)


def resolve_dtype_name(dtype: str, device: str) -> str:
    """``auto`` -> bf16 where the hardware runs it fast (CUDA with bf16, CPUs with AVX512-BF16/AMX)."""
    from speechllm.llm_runtime import resolve_dtype_name as resolve

    return resolve(dtype, device, error=GenerationError)


class HFBackend(TokenizerPrompts):
    """Batched generation with a transformers causal LM (frozen, ``torch.inference_mode``)."""

    name = "hf"

    def __init__(
        self,
        llm: str,
        *,
        dtype: str = "auto",
        device: str = "auto",
        chat_template: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
    ):
        from speechllm.llm_runtime import load_causal_lm

        self.llm_ref = llm
        self.device = resolve_device(device)
        self.dtype_name = resolve_dtype_name(dtype, self.device)
        self.revision = revision
        loaded = load_causal_lm(llm, revision=revision, dtype=self.dtype_name, device=self.device,
                                trust_remote_code=trust_remote_code,
                                chat_template=read_chat_template(chat_template) if chat_template else None)
        self.model, self.tokenizer, self.resolved = loaded.model, loaded.tokenizer, loaded.resolved
        if not getattr(self.tokenizer, "chat_template", None):
            raise missing_chat_template_error(llm)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.eos_ids = self._eos_ids()
        self.slot_cache = self._use_slot_cache()

    def _use_slot_cache(self) -> bool:
        """Decode with :class:`SlotKVCache` when every layer is plain full attention and the
        attention implementation takes a boolean 4-D mask; on CPU, one-token steps also switch to
        grouped matmul attention (``decode_attention``), 3x faster there than SDPA's kernel."""
        from speechllm.generate.slot_cache import slot_cache_layers
        from speechllm.models import decode_attention

        self.cache_layers = slot_cache_layers(self.model.config)
        if not self.cache_layers:
            return False
        attention = getattr(self.model.config, "_attn_implementation", None)
        if attention == "sdpa" and self.device == "cpu":
            try:
                self.model.set_attn_implementation(decode_attention.register())
            except (ValueError, ImportError) as e:  # a model class that refuses custom attention
                log.info("keeping sdpa attention (%s)", e)
            attention = getattr(self.model.config, "_attn_implementation", None)
        return attention in ("sdpa", decode_attention.NAME)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (getattr(self.model, "generation_config", None), self.model.config):
            value = getattr(source, "eos_token_id", None) if source is not None else None
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        if not ids:
            raise GenerationError(f"LLM {self.llm_ref!r}: neither its config nor its tokenizer names an end token")
        return ids

    # -- interface ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {**self._provenance(getattr(self.model.config, "_commit_hash", None)), "device": self.device}

    def generate(
        self,
        prompts: list[str],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
    ) -> list[Completion]:
        if not prompts:
            return []
        return self.generate_ids([self.encode(p) for p in prompts], params, seeds=seeds,
                                 stop_token_ids=stop_token_ids, batch_size=len(prompts))

    # -- the decode loop ---------------------------------------------------------------------

    def generate_ids(
        self,
        prompt_ids: list[list[int]],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
        batch_size: int | None = None,
    ) -> list[Completion]:
        """Completions for pre-tokenised prompts, in their order (``batch_size`` rows decode at
        once; default: all of them)."""
        out: list[Completion | None] = [None] * len(prompt_ids)
        for i, completion in self.stream_ids(prompt_ids, params, seeds=seeds, stop_token_ids=stop_token_ids,
                                             batch_size=batch_size or max(1, len(prompt_ids))):
            out[i] = completion
        return out  # type: ignore[return-value]

    def generate_stream(
        self,
        prompts: list[str],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
        batch_size: int = 16,
    ) -> Iterator[tuple[int, Completion]]:
        """Yield ``(index, completion)`` as rows finish; see :meth:`stream_ids`."""
        return self.stream_ids([self.encode(p) for p in prompts], params, seeds=seeds,
                               stop_token_ids=stop_token_ids, batch_size=batch_size)

    def stream_ids(
        self,
        prompt_ids: list[list[int]],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        stop_token_ids: list[int] | None = None,
        batch_size: int = 16,
    ) -> Iterator[tuple[int, Completion]]:
        """Continuous batching: decode up to ``batch_size`` rows at once and, as rows finish,
        prefill the next prompts (in the given order) and merge them into the running batch and
        its KV cache, so the batch stays full until the prompts run out. Yields
        ``(index, completion)`` in finishing order."""
        import torch

        if any(len(p) == 0 for p in prompt_ids):
            raise GenerationError("an empty prompt cannot be generated from")
        decoder = _SlotDecoder if self.slot_cache else _Decoder
        with torch.inference_mode():
            yield from decoder(self, params, seeds, stop_token_ids).run(prompt_ids, batch_size)

    def stream_embeds(
        self,
        prompt_keys: list[list[int]],
        prompt_embeds: list[Any],
        params: SamplingParams,
        *,
        seeds: list[int] | None = None,
        batch_size: int = 16,
    ) -> Iterator[tuple[int, Completion]]:
        """:meth:`stream_ids` for prompts given as input embeddings ``(length, dim)`` (a speech
        model's audio spans), with the slot decoder only (:attr:`slot_cache`).

        ``prompt_keys[i]`` names each position of prompt ``i`` for finding the common prefix:
        the token id where the embedding is that token's, and a value no other prompt uses (e.g.
        a negative number) where it is not. As with ``generate(inputs_embeds=...)``, the prompt
        is not part of what a repetition penalty sees, so only 1.0 is accepted here."""
        import torch

        if not self.slot_cache:
            raise GenerationError(f"LLM {self.llm_ref!r}: decoding from embeddings needs plain full-attention layers")
        if params.repetition_penalty != 1.0:
            raise GenerationError("decoding from embeddings takes no repetition penalty (use the row-by-row path)")
        if len(prompt_keys) != len(prompt_embeds) or any(
                len(k) != e.shape[0] or not len(k) for k, e in zip(prompt_keys, prompt_embeds, strict=True)):
            raise GenerationError("prompt_keys and prompt_embeds must give one non-empty key per embedding row")
        with torch.inference_mode():
            decoder = _SlotDecoder(self, params, seeds, None, prompt_embeds=prompt_embeds)
            yield from decoder.run(prompt_keys, batch_size)

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any, *, eos_ids: set[int], llm_ref: str = "model") -> HFBackend:
        """A backend over an already loaded causal LM (e.g. a speech model's frozen LLM) that
        stops at ``eos_ids``. It may switch the model's attention implementation to
        ``speechllm_decode`` on CPU (see :meth:`_use_slot_cache`); the caller restores it."""
        self = cls.__new__(cls)
        self.llm_ref = llm_ref
        self.model, self.tokenizer = model, tokenizer
        param = next(model.parameters())
        self.device = str(param.device)
        self.dtype_name = {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(str(param.dtype), "fp32")
        self.revision, self.resolved = None, llm_ref
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_ids = set(eos_ids)
        self.slot_cache = self._use_slot_cache()
        return self


class _Decoder:
    """State of one continuous-batching run (see :meth:`HFBackend.stream_ids`)."""

    def __init__(self, backend: HFBackend, params: SamplingParams, seeds, stop_token_ids, *, prompt_embeds=None):
        import torch

        self.b = backend
        self.embeds = prompt_embeds  # per prompt (length, dim) input embeddings, or None: token ids
        self.params = params
        self.seeds = seeds
        self.device = backend.device
        self.stops = torch.tensor(sorted(backend.eos_ids | set(stop_token_ids or ())), device=self.device)
        self.vocab = backend.model.get_output_embeddings().weight.shape[0]

    def _prefill(self, indices: list[int], prompt_ids):
        """Left-padded prefill of new rows: their cache, attention mask, next positions, logits."""
        import torch
        from transformers import DynamicCache

        from speechllm.llm_runtime import left_pad

        n = len(indices)
        input_ids, attention = left_pad([prompt_ids[i] for i in indices], self.b.pad_id)
        width = input_ids.shape[1]
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        # Positions count from each row's first real token, so left padding shifts nothing.
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.b.model.config)
        # Only the last position's logits are needed. An index tensor (not the int 1) makes the
        # model gather that position into a contiguous tensor: with frozen weights, F.linear on
        # the strided slice takes a path that copies the LM head once per row (measured: 1.8x the
        # prefill time for SmolLM2 with a batch of 16).
        last = torch.tensor([width - 1], device=self.device)
        out = self.b.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                           **cache_kwargs(self.b.model, cache), use_cache=True, logits_to_keep=last)
        seen = None
        if self.params.repetition_penalty != 1.0:
            seen = torch.zeros((n, self.vocab), dtype=torch.bool, device=self.device)
            seen.scatter_(1, input_ids, attention.bool())
        return cache, attention, positions[:, -1] + 1, out.logits[:, -1, :], seen

    def run(self, prompt_ids, batch_size: int):
        import torch
        from transformers.cache_utils import DynamicLayer

        params = self.params
        queue = list(range(len(prompt_ids)))
        queue.reverse()  # pop() takes the next prompt in the given order
        generators: dict[int, Any] = {}
        generated: dict[int, list[int]] = {}
        rows: list[int] = []
        cache = attention = next_pos = logits = seen = None
        refill_at = batch_size - max(1, batch_size // 4)  # refill once a quarter of the batch is free
        can_merge = True
        while rows or queue:
            if queue and len(rows) <= refill_at and (can_merge or not rows):
                take = [queue.pop() for _ in range(min(batch_size - len(rows), len(queue)))]
                for i in take:
                    generated[i] = []
                    if not params.greedy:
                        g = torch.Generator(device=self.device)
                        g.manual_seed(int(self.seeds[i]) if self.seeds is not None else i)
                        generators[i] = g
                new = self._prefill(take, prompt_ids)
                if not rows:
                    cache, attention, next_pos, logits, seen = new
                    # Merging needs plain full-attention layers (no sliding windows, no states).
                    can_merge = all(type(layer) is DynamicLayer for layer in cache.layers)
                else:
                    cache, attention, next_pos, logits, seen = _merge(
                        (cache, attention, next_pos, logits, seen), new)
                rows += take
            if seen is not None:
                logits = _apply_repetition_penalty(logits, seen, params.repetition_penalty)
            tokens = _choose_tokens(logits, params, [generators[r] for r in rows] if generators else None)
            ended = torch.isin(tokens, self.stops).tolist()
            tokens_list = tokens.tolist()
            keep: list[int] = []
            for j, r in enumerate(rows):
                if ended[j]:
                    yield r, self._completion(generated.pop(r), "stop")
                    continue
                generated[r].append(tokens_list[j])
                if len(generated[r]) >= params.max_new_tokens:
                    yield r, self._completion(generated.pop(r), "length")
                    continue
                keep.append(j)
            if len(keep) < len(rows):
                for j, r in enumerate(rows):
                    if j not in keep:
                        generators.pop(r, None)
                if not keep:
                    rows = []
                    cache = None
                    continue
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention, next_pos, tokens = attention[index], next_pos[index], tokens[index]
                if seen is not None:
                    seen = seen[index]
                rows = [rows[j] for j in keep]
                attention = _trim_left_padding(cache, attention) if can_merge else attention
            if seen is not None:
                seen.scatter_(1, tokens[:, None], True)
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
            out = self.b.model(input_ids=tokens[:, None], attention_mask=attention,
                               position_ids=next_pos[:, None], **cache_kwargs(self.b.model, cache), use_cache=True)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1

    def _completion(self, ids: list[int], reason: str) -> Completion:
        text = self.b.tokenizer.decode(ids, skip_special_tokens=True).strip()
        return Completion(text=text, token_ids=ids, finish_reason=reason)  # type: ignore[arg-type]


class _SlotDecoder(_Decoder):
    """Continuous batching over a :class:`~speechllm.generate.slot_cache.SlotKVCache`.

    ``batch_size`` slots decode together; a finished row frees its slot and the next prompts are
    prefilled and copied into free slots, so nothing is concatenated per step. The prompts'
    longest common token prefix (system prompt, chat header, any context prompt) is run once per
    call and its KV copied under every row, so a prefill only runs each row's own suffix: for
    DeSTA2-style description prompts with SmolLM2 that is 47 of ~107 prompt tokens. Rows keep
    their own position ids, so the result equals a plain left-padded prefill of the whole prompt
    (up to the last bits of floating point, as between any two batch layouts).
    """

    MIN_SHARED_PREFIX = 8  # shorter common prefixes are not worth a separate forward
    CACHE_CHUNK = 32  # cache columns added at a time (one copy of the cache per CACHE_CHUNK steps)

    def _shared_prefix(self, prompt_ids):
        """``(length, cache)`` of the prompts' common prefix (always leaving each row at least one
        token of its own, whose logits start its answer), or ``(0, None)``."""
        import os

        from transformers import DynamicCache

        length = len(os.path.commonprefix(prompt_ids)) if len(prompt_ids) > 1 else 0
        length = min(length, min(len(p) for p in prompt_ids) - 1)
        if length < self.MIN_SHARED_PREFIX:
            return 0, None
        import torch

        cache = DynamicCache(config=self.b.model.config)
        if self.embeds is not None:
            inputs = {"inputs_embeds": self.embeds[0][None, :length]}
        else:
            inputs = {"input_ids": torch.tensor([prompt_ids[0][:length]], device=self.device)}
        self.b.model(**inputs, **cache_kwargs(self.b.model, cache), use_cache=True, logits_to_keep=1)
        return length, cache

    def _prefill_into(self, cache, slots: list[int], rows: list[int], prompt_ids, shared):
        """Prefill ``rows`` (after the shared prefix) and copy them into ``slots`` of ``cache``;
        returns their last-position logits and next position ids."""
        import torch
        from transformers import DynamicCache

        from speechllm.llm_runtime import left_pad

        prefix_len, prefix = shared
        input_ids, own = left_pad([prompt_ids[r][prefix_len:] for r in rows], self.b.pad_id)
        n, width = input_ids.shape
        input_ids, own = input_ids.to(self.device), own.to(self.device)
        if self.embeds is not None:  # padding columns are zero vectors (masked out)
            dim = self.embeds[rows[0]].shape[-1]
            inputs = self.embeds[rows[0]].new_zeros((n, width, dim))
            for j, r in enumerate(rows):
                own_embeds = self.embeds[r][prefix_len:]
                inputs[j, width - own_embeds.shape[0]:] = own_embeds
            model_inputs = {"inputs_embeds": inputs}
            input_ids = input_ids.clamp(min=0)  # keys, not token ids: only the penalty reads them
        else:
            model_inputs = {"input_ids": input_ids}
        fresh = DynamicCache(config=self.b.model.config)
        if prefix is not None:
            for i, layer in enumerate(prefix.layers):
                fresh.update(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1), i)
            mask = torch.cat([own.new_ones((n, prefix_len)), own], dim=1)
        else:
            mask = own
        positions = prefix_len + (own.cumsum(-1) - 1).clamp(min=0)
        last = torch.tensor([width - 1], device=self.device)  # see _Decoder._prefill
        out = self.b.model(**model_inputs, attention_mask=mask, position_ids=positions,
                           **cache_kwargs(self.b.model, fresh), use_cache=True, logits_to_keep=last)
        cache.admit(slots, fresh, mask)
        return out.logits[:, -1, :], positions[:, -1] + 1, input_ids, own

    def run(self, prompt_ids, batch_size: int):
        import torch

        from speechllm.generate.slot_cache import SlotKVCache

        params, model = self.params, self.b.model
        if not prompt_ids:
            return
        slots = max(1, min(batch_size, len(prompt_ids)))
        cache = SlotKVCache(self.b.cache_layers, slots, chunk=self.CACHE_CHUNK)
        shared = self._shared_prefix(prompt_ids)
        queue = list(range(len(prompt_ids)))
        queue.reverse()  # pop() takes the next prompt in the given order
        row: list[int | None] = [None] * slots  # the prompt each slot is answering
        generators: dict[int, Any] = {}
        generated: dict[int, list[int]] = {}
        logits = seen = None
        tokens = torch.full((slots,), self.b.pad_id, dtype=torch.long, device=self.device)
        next_pos = torch.zeros(slots, dtype=torch.long, device=self.device)
        refill_at = max(1, slots // 16)  # free slots that trigger a prefill (fewer, larger prefills)
        while True:
            free = [s for s in range(cache.slots) if row[s] is None]
            if queue and free and (len(free) >= refill_at or len(free) == cache.slots):
                take_slots = free[:len(queue)]
                take = [queue.pop() for _ in take_slots]
                for s, i in zip(take_slots, take, strict=True):
                    row[s] = i
                    generated[i] = []
                    if not params.greedy:
                        g = torch.Generator(device=self.device)
                        g.manual_seed(int(self.seeds[i]) if self.seeds is not None else i)
                        generators[i] = g
                new_logits, new_pos, new_ids, own = self._prefill_into(cache, take_slots, take, prompt_ids, shared)
                index = torch.tensor(take_slots, device=self.device)
                if logits is None:
                    logits = new_logits.new_zeros((cache.slots, new_logits.shape[-1]))
                logits[index] = new_logits
                next_pos[index] = new_pos
                if params.repetition_penalty != 1.0:
                    if seen is None:
                        seen = torch.zeros((cache.slots, self.vocab), dtype=torch.bool, device=self.device)
                    seen[index] = False
                    seen[index] = seen[index].scatter(1, new_ids, own.bool())
                    if shared[0]:
                        prefix_ids = torch.tensor(prompt_ids[take[0]][:shared[0]], device=self.device)
                        seen[index[:, None], prefix_ids[None, :]] = True
            live = [s for s in range(cache.slots) if row[s] is not None]
            if not live:
                return
            index = torch.tensor(live, device=self.device)
            step_logits = logits[index]
            if seen is not None:
                step_logits = _apply_repetition_penalty(step_logits, seen[index], params.repetition_penalty)
            chosen = _choose_tokens(step_logits, params, [generators[row[s]] for s in live] if generators else None)
            ended = torch.isin(chosen, self.stops).tolist()
            chosen_list = chosen.tolist()
            finished: list[int] = []
            for j, s in enumerate(live):
                r = row[s]
                if ended[j]:
                    reason = "stop"
                else:
                    generated[r].append(chosen_list[j])
                    if len(generated[r]) < params.max_new_tokens:
                        continue
                    reason = "length"
                finished.append(s)
                generators.pop(r, None)
                row[s] = None
                yield r, self._completion(generated.pop(r), reason)
            tokens[index] = chosen
            if seen is not None:
                seen[index, chosen] = True
            cache.release(finished)
            running = [s for s in range(cache.slots) if row[s] is not None]
            if not running:
                continue  # refill from the queue, or stop
            if not queue and (cache.slots - len(running)) * 8 >= cache.slots:
                # The queue is empty: shrink to the running rows rather than decode free slots.
                cache.keep_slots(running)
                keep = torch.tensor(running, device=self.device)
                tokens, next_pos, logits = tokens[keep], next_pos[keep], logits[keep]
                seen = seen[keep] if seen is not None else None
                row = [row[s] for s in running]
            cache.reserve(after=1)
            # A 4-D boolean mask goes to the attention as is (sdpa and speechllm_decode take it).
            out = model(input_ids=tokens[:, None], attention_mask=cache.decode_mask(), position_ids=next_pos[:, None],
                        **cache_kwargs(self.b.model, cache), use_cache=True)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1


def _merge(running, new):
    """Join a running batch and freshly prefilled rows: caches and masks are left-padded to a
    common length (padding is masked, and positions are per row, so nothing shifts)."""
    import torch
    import torch.nn.functional as F

    cache, attention, next_pos, logits, seen = running
    cache2, attention2, next_pos2, logits2, seen2 = new
    width = max(attention.shape[1], attention2.shape[1])

    def pad(t, dim_from_end: int, to: int):
        missing = to - t.shape[-dim_from_end]
        if missing == 0:
            return t
        spec = [0, 0] * (dim_from_end - 1) + [missing, 0]
        return F.pad(t, spec)

    for layer, layer2 in zip(cache.layers, cache2.layers, strict=True):
        layer.keys = torch.cat([pad(layer.keys, 2, width), pad(layer2.keys, 2, width)])
        layer.values = torch.cat([pad(layer.values, 2, width), pad(layer2.values, 2, width)])
    attention = torch.cat([pad(attention, 1, width), pad(attention2, 1, width)])
    merged_seen = None if seen is None else torch.cat([seen, seen2])
    return cache, attention, torch.cat([next_pos, next_pos2]), torch.cat([logits, logits2]), merged_seen


def _trim_left_padding(cache, attention, min_columns: int = 8):
    """Drop leading cache columns that no remaining row attends to (rows that finished may have
    been the only ones reaching that far back)."""
    live = attention.any(dim=0).nonzero()
    start = int(live[0]) if len(live) else 0
    if start < min_columns:
        return attention
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, start:]
        layer.values = layer.values[:, :, start:]
    return attention[:, start:]


def _apply_repetition_penalty(logits, seen, penalty: float):
    """HF's rule: a seen token's logit is divided by the penalty when positive, else multiplied."""
    import torch

    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def _choose_tokens(logits, params: SamplingParams, generators):
    """Greedy argmax, or temperature / top-k / top-p sampling with one generator per row."""
    import torch

    if params.greedy:
        # fp32 first: argmax over bf16 runs ~5x slower on CPU (10 ms vs 2 ms for 64 x 49152);
        # the cast is exact, so the choice is the same.
        return logits.float().argmax(dim=-1)
    scores = logits.float() / params.temperature
    if params.top_k and params.top_k < scores.shape[-1]:
        kth = torch.topk(scores, params.top_k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True, dim=-1)
        probs = sorted_scores.softmax(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the first always stays).
        drop = (probs.cumsum(dim=-1) - probs) >= params.top_p
        sorted_scores = sorted_scores.masked_fill(drop, float("-inf"))
        scores = torch.full_like(scores, float("-inf")).scatter(1, order, sorted_scores)
    probs = scores.softmax(dim=-1)
    picks = [torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(generators)]
    return torch.cat(picks)
