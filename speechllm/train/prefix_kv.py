"""The chat prefix every row of a batch shares, run through the frozen LLM once per run.

Every training conversation starts with the same tokens (system prompt, the user turn's header,
anything before the first audio span): for SmolLM2's template 29 of ~172 positions, for Llama 3
with a system prompt more. With a frozen LLM (no LoRA, no unfrozen layers) their keys and values
are constants, and nothing they feed needs a gradient. So the forward runs each row from the end
of that prefix, on top of the prefix's cached KV, and the LLM's forward and backward both skip
those positions.

The batch stays left-padded: each row's real tokens end at the last column, so dropping the
first ``P`` real tokens of every row leaves columns ``[min_start + P, width)``, with the prefix
tokens of later-starting rows masked out. Position ids are kept (they count from each row's first
real token, and the cached prefix was run at positions ``0..P-1``), so every remaining position
computes what it computes in the full forward. The hidden states are padded back to the full
width, so callers index them as before (prefix positions hold zeros and carry no label).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from speechllm.utils.hf_compat import cache_kwargs


class FrozenPrefixKV:
    """Cache of shared-prefix KV, keyed by the prefix's token ids, dtype and device."""

    MIN_LENGTH = 8  # shorter shared prefixes are not worth a separate forward

    def __init__(self, decoder: torch.nn.Module, config):
        self.decoder = decoder  # the LLM body (``get_decoder()``), frozen
        self.config = config
        self._cache: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @staticmethod
    def shared_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, audio_mask: torch.Tensor) -> int:
        """Real tokens that open every row identically, before any audio position, leaving each
        row at least one token of its own."""
        lengths = attention_mask.sum(dim=1)
        shortest = int(lengths.min())
        if shortest < 2:
            return 0
        starts = input_ids.shape[1] - lengths
        index = starts[:, None] + torch.arange(shortest, device=input_ids.device)[None, :]
        tokens = input_ids.gather(1, index)
        audio = audio_mask.gather(1, index)
        same = (tokens == tokens[:1]).all(dim=0) & ~audio.any(dim=0)
        differs = (~same).nonzero()
        length = int(differs[0]) if len(differs) else shortest
        return min(length, shortest - 1)

    def _prefix_kv(self, ids: list[int], dtype: torch.dtype, device: torch.device):
        key = (tuple(ids), dtype, str(device))
        if key not in self._cache:
            from transformers import DynamicCache

            cache = DynamicCache(config=self.config)
            with torch.no_grad():
                self.decoder(input_ids=torch.tensor([ids], device=device), **cache_kwargs(self.decoder, cache),
                             use_cache=True)
            self._cache[key] = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
        return self._cache[key]

    def hidden_states(self, inputs_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      position_ids: torch.Tensor, audio_mask: torch.Tensor) -> torch.Tensor | None:
        """The decoder's final hidden states ``(B, T, D)`` computed from the end of the shared
        prefix, or None when the batch shares no prefix worth skipping."""
        length = self.shared_length(input_ids, attention_mask, audio_mask)
        if length < self.MIN_LENGTH:
            return None
        from transformers import DynamicCache

        batch, width = input_ids.shape
        starts = width - attention_mask.sum(dim=1)
        cut = int(starts.min()) + length
        row_ids = input_ids[int(starts.argmin()), cut - length:cut].tolist()
        layers = self._prefix_kv(row_ids, inputs_embeds.dtype, inputs_embeds.device)
        cache = DynamicCache(config=self.config)
        for i, (k, v) in enumerate(layers):
            cache.update(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1), i)
        columns = torch.arange(cut, width, device=input_ids.device)
        own = attention_mask[:, cut:].bool() & (columns[None, :] >= (starts + length)[:, None])
        mask = torch.cat([own.new_ones((batch, length)), own], dim=1).long()
        hidden = self.decoder(inputs_embeds=inputs_embeds[:, cut:], attention_mask=mask,
                              position_ids=position_ids[:, cut:], **cache_kwargs(self.decoder, cache),
                              use_cache=True).last_hidden_state
        return F.pad(hidden, (0, 0, cut, 0))
