"""A KV cache of fixed row slots that all write the same column, for continuous batching.

``DynamicCache`` grows by ``torch.cat`` at every step, so every decode step copies the whole cache
of every layer; dropping a finished row or merging new rows copies it again. Profiled on SmolLM2
with 64 rows, those copies were 20% of generation time. Here each layer owns preallocated
``(slots, kv_heads, capacity, dim)`` buffers:

- a decode step writes one column in place (the same column for every slot);
- a new prompt is prefilled separately and copied into a free slot, right-aligned so that its
  last token sits just before the write column (columns before it are masked out);
- capacity grows in chunks, and when it runs out the leading columns no live slot attends to are
  dropped: one copy every ``chunk`` steps instead of one per step;
- rows keep their own position ids, so where a row sits in the buffer changes nothing.

The attention sees the full buffer width (a contiguous tensor, which batched matmuls read at full
speed; a column slice of it is several times slower on CPU) with a boolean mask that the decoder
builds (:meth:`SlotKVCache.decode_mask`), so masked columns cost a little compute, never a copy.
Only models whose every layer is plain full attention (``DynamicLayer``) can use it.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer


def slot_cache_layers(config) -> int:
    """The number of cache layers when every layer of this model's default cache is plain full
    attention (a :class:`SlotKVCache` can serve it), else 0."""
    try:
        cache = DynamicCache(config=config)
    except Exception:  # noqa: BLE001 - unknown cache layouts simply use the fallback decoder
        return 0
    plain = bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)
    return len(cache.layers) if plain else 0


class SlotLayer(CacheLayerMixin):
    """One layer's buffers. ``update`` writes at column ``length`` and returns the full buffers."""

    is_sliding = False

    def __init__(self):
        super().__init__()
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("SlotLayer buffers are allocated by SlotKVCache.admit, not by a forward")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        n = key_states.shape[-2]
        if self.keys is None or self.length + n > self.keys.shape[2]:
            raise RuntimeError("SlotKVCache: no room for the step (call reserve() before the forward)")
        self.keys[:, :, self.length:self.length + n] = key_states
        self.values[:, :, self.length:self.length + n] = value_states
        self.length += n
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return (self.keys.shape[2] if self.keys is not None else query_length), 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1


class SlotKVCache(Cache):
    """``slots`` rows of KV buffers plus the boolean attention mask of every column."""

    def __init__(self, num_layers: int, slots: int, *, chunk: int = 32):
        super().__init__(layers=[SlotLayer() for _ in range(num_layers)])
        self.slots = slots
        self.chunk = chunk
        self.mask: torch.Tensor | None = None  # (slots, capacity) bool
        self.live: torch.Tensor | None = None  # (slots,) bool: slots that hold a row

    @property
    def column(self) -> int:
        """Where the next decode step writes (the same for every layer and slot)."""
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def _round_up(self, n: int) -> int:
        return -(-n // self.chunk) * self.chunk

    def _relayout(self, before: int, after: int) -> None:
        """Make at least ``before`` columns precede the write column and ``after`` follow it,
        dropping leading columns that no slot attends to. One copy of the live part."""
        column = self.column
        used = self.mask[self.live, :column].any(dim=0).nonzero()
        start = int(used[0]) if len(used) else column
        kept = column - start
        new_column = max(kept, before)
        offset = new_column - kept
        capacity = self._round_up(new_column + max(after, self.chunk))
        mask = torch.zeros((self.slots, capacity), dtype=torch.bool, device=self._device)
        if kept:
            mask[:, offset:new_column] = self.mask[:, start:column]
        self.mask = mask
        for layer in self.layers:
            keys = layer.keys.new_zeros((self.slots, layer.keys.shape[1], capacity, layer.keys.shape[3]))
            values = layer.values.new_zeros((self.slots, layer.values.shape[1], capacity, layer.values.shape[3]))
            if kept:
                keys[:, :, offset:new_column] = layer.keys[:, :, start:column]
                values[:, :, offset:new_column] = layer.values[:, :, start:column]
            layer.keys, layer.values, layer.length = keys, values, new_column

    def reserve(self, before: int = 0, after: int = 1) -> None:
        """Room for ``after`` new columns at the write column and ``before`` columns before it."""
        if self.column < before or self.column + after > self.capacity:
            self._relayout(before, after)

    def admit(self, slots: list[int], prefill: DynamicCache, prefill_mask: torch.Tensor) -> None:
        """Copy freshly prefilled rows (``prefill`` holds ``len(slots)`` rows, left-padded to a
        common width, with their 2-D ``prefill_mask``) into ``slots``, ending just before the
        write column."""
        width = prefill_mask.shape[1]
        if self.mask is None:  # first admission: learn shapes, dtype and device from the prefill
            self._device = prefill.layers[0].keys.device
            for layer, source in zip(self.layers, prefill.layers, strict=True):
                k, v = source.keys, source.values
                layer.keys = k.new_zeros((self.slots, k.shape[1], 0, k.shape[3]))
                layer.values = v.new_zeros((self.slots, v.shape[1], 0, v.shape[3]))
                layer.is_initialized = True
            self.mask = torch.zeros((self.slots, 0), dtype=torch.bool, device=self._device)
            self.live = torch.zeros(self.slots, dtype=torch.bool, device=self._device)
        self.reserve(before=width, after=1)
        index = torch.tensor(slots, device=self._device)
        end = self.column
        begin = end - width
        self.mask[index] = False
        self.mask[index, begin:end] = prefill_mask.to(torch.bool)
        self.live[index] = True
        for layer, source in zip(self.layers, prefill.layers, strict=True):
            layer.keys[index, :, begin:end] = source.keys
            layer.values[index, :, begin:end] = source.values

    def release(self, slots: list[int]) -> None:
        """Forget finished rows: their columns are masked and no longer hold back compaction."""
        if slots and self.mask is not None:
            index = torch.tensor(slots, device=self._device)
            self.mask[index] = False
            self.live[index] = False

    def keep_slots(self, slots: list[int]) -> None:
        """Shrink to the given slots, in that order (one copy; used when the batch drains)."""
        index = torch.tensor(slots, device=self._device)
        self.mask, self.live = self.mask[index], self.live[index]
        for layer in self.layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        self.slots = len(slots)

    def decode_mask(self) -> torch.Tensor:
        """The ``(slots, 1, 1, capacity)`` mask of the next one-token step: every slot attends to
        what it holds plus the column being written (free slots attend to that column alone,
        which keeps their softmax finite; they do not count as holding it)."""
        self.mask[:, self.column] = True
        return self.mask[:, None, None, :]
