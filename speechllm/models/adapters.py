"""Modality adapters from tapped Whisper hidden states to LLM-width vectors, by registry name.

- ``qformer``: DeSTA2's Q-Former connector, in plain torch (no transformers BERT internals).
- ``mlp``: frame stacking + a normalised two-layer MLP (Ultravox / SLAM-LLM style).

Every adapter maps ``taps`` (one ``(windows, 1500, d_model)`` tensor per tapped layer) and the
real frame count of each window to ``(windows, max_out, llm_dim)`` plus a ``(windows, max_out)``
mask of the vectors that exist. Each class also says, without being built, how many vectors it
emits for an audio (``num_vectors``; :func:`speechllm.models.chat_layout.adapter_output_length`
asks it), its default encoder taps (``default_taps``) and whether it reads a window's padded
frames (``reads_padding_for``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from speechllm.errors import ConfigError
from speechllm.models.encoder import (
    desta_taps,
    encoder_frames,
    last_block_tap,
    num_windows,
    window_sample_counts,
)


@dataclass(frozen=True)
class AdapterSpec:
    """Shapes an adapter is built for; a checkpoint stores them to refuse mismatching bases."""

    encoder_dim: int
    encoder_heads: int
    num_taps: int
    llm_dim: int


class Adapter(nn.Module):
    """What every registered adapter answers before it is built (from the ``ModelConfig``)."""

    @classmethod
    def from_config(cls, spec: AdapterSpec, config) -> Adapter:
        raise NotImplementedError

    @classmethod
    def num_vectors(cls, num_samples: int, config) -> int:
        """Vectors emitted for an audio of ``num_samples`` samples at 16 kHz."""
        raise NotImplementedError

    @classmethod
    def default_taps(cls, num_layers: int, tap_point: str) -> list[int]:
        """Encoder taps when ``model.encoder_layers`` is not set."""
        return desta_taps(num_layers, tap_point)

    @classmethod
    def reads_padding_for(cls, config) -> bool:
        """Whether the frames past a window's real audio are read (a feature cache keeps them)."""
        return False


_REGISTRY: dict[str, type[Adapter]] = {}


def register_adapter(name: str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator adding an :class:`Adapter` subclass to the registry under ``name``."""

    def deco(cls: type[Adapter]) -> type[Adapter]:
        _REGISTRY[name] = cls
        return cls

    return deco


def adapter_names() -> list[str]:
    return sorted(_REGISTRY)


def adapter_class(name: str) -> type[Adapter]:
    """The registered adapter class called ``name``."""
    if name not in _REGISTRY:
        raise ConfigError(f"model.adapter: unknown adapter {name!r}; known: {', '.join(adapter_names())}")
    return _REGISTRY[name]


def build_adapter(name: str, spec: AdapterSpec, config) -> nn.Module:
    """Instantiate the adapter called ``name`` (``config`` is a ``ModelConfig``)."""
    return adapter_class(name).from_config(spec, config)


# ---------------------------------------------------------------------------------------------
# Frame normalisation (global CMVN of the tapped layers)
# ---------------------------------------------------------------------------------------------

FRAME_NORMS = ("none", "global")


class FrameNorm(nn.Module):
    """Per tap and dimension ``(x - mean) / std`` with statistics over real (unpadded) frames,
    accumulated once from training audio and stored as buffers, so they travel with the adapter's
    checkpoint. Whisper's residual stream has a large component shared by every frame of every
    clip; an attention-pooling adapter starts out averaging frames, so without this its output
    barely depends on the input (3.4% relative variation across clips at initialisation
    with tiny.en, 8.2% with it; ``benchmarks/encoder_inputs.py``) and training first learns a constant soft prompt.
    Until fitted (``count == 0``) mean is 0 and std 1: the identity, with no check per call
    (reading ``count`` would sync a GPU on every forward)."""

    def __init__(self, num_taps: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(num_taps, dim))
        self.register_buffer("std", torch.ones(num_taps, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self._sums: list[torch.Tensor] | None = None
        self._frames = 0

    @property
    def fitted(self) -> bool:
        return int(self.count) > 0

    @torch.no_grad()
    def accumulate(self, taps: Sequence[torch.Tensor], valid_frames: Sequence[int]) -> None:
        """Add the real frames of a batch of windows to the running sums (float64)."""
        if self._sums is None:
            self._sums = [torch.zeros(2, self.mean.shape[1], dtype=torch.float64) for _ in taps]
        for sums, tap in zip(self._sums, taps, strict=True):
            real = torch.cat([tap[w, :n] for w, n in enumerate(valid_frames)]).to("cpu", torch.float64)
            sums[0] += real.sum(0)
            sums[1] += (real * real).sum(0)
        self._frames += sum(valid_frames)

    @torch.no_grad()
    def finish(self) -> int:
        """Turn the sums into ``mean``/``std``; returns the number of frames used."""
        if not self._sums or not self._frames:
            raise ValueError("frame_norm: no frames were accumulated")
        n = self._frames
        for j, (s, sq) in enumerate(self._sums):
            mean = s / n
            var = (sq / n - mean * mean).clamp_min(0.0)
            self.mean[j] = mean.to(self.mean)
            self.std[j] = (var + self.eps).sqrt().to(self.std)
        self.count.fill_(n)
        self._sums, self._frames = None, 0
        return n

    def forward(self, taps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [((t.float() - self.mean[j]) / self.std[j]).to(t.dtype) for j, t in enumerate(taps)]


def build_frame_norm(config, spec: AdapterSpec) -> FrameNorm | None:
    kind = getattr(config, "frame_norm", "none")
    if kind not in FRAME_NORMS:
        raise ConfigError(f"model.frame_norm: {kind!r} is not one of {', '.join(FRAME_NORMS)}")
    return FrameNorm(spec.num_taps, spec.encoder_dim) if kind == "global" else None


# ---------------------------------------------------------------------------------------------
# Q-Former (DeSTA2)
# ---------------------------------------------------------------------------------------------


class _Attention(nn.Module):
    """BERT-style multi-head attention (biased q/k/v/out projections) over SDPA."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"Q-Former width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``key_mask``: optional ``(batch, keys)`` bool, True for the keys that may be attended."""
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, h, d // h).transpose(1, 2)

        attn = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(context)), split(self.v(context)),
            attn_mask=None if key_mask is None else key_mask[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attn.transpose(1, 2).reshape(b, n, d))


class QFormerLayer(nn.Module):
    """Post-LN BERT layer with cross-attention: self-attn -> add&norm -> cross-attn -> add&norm
    -> FFN(GELU) -> add&norm. Self-attention over the queries is full (no causal mask)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, eps: float = 1e-12):
        super().__init__()
        self.self_attn = _Attention(dim, heads, dropout)
        self.self_norm = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = _Attention(dim, heads, dropout)
        self.cross_norm = nn.LayerNorm(dim, eps=eps)
        self.ffn_in = nn.Linear(dim, ffn_dim)
        self.ffn_out = nn.Linear(ffn_dim, dim)
        self.ffn_norm = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, frames: torch.Tensor,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.self_norm(queries + self.drop(self.self_attn(queries, queries)))
        x = self.cross_norm(x + self.drop(self.cross_attn(x, frames, frame_mask)))
        return self.ffn_norm(x + self.drop(self.ffn_out(F.gelu(self.ffn_in(x)))))


@register_adapter("qformer")
class QFormerAdapter(Adapter):
    """DeSTA2's connector: per tapped layer, ``num_queries`` learned queries (standard normal)
    read that layer's frames through one shared Q-Former; a learned per-query softmax over layers
    (logits initialised to zero, i.e. an even mix) combines them; LayerNorm + Linear map to the
    LLM width. Output: ``num_queries`` vectors per 30 s window.

    ``context="window"`` (DeSTA2): cross-attention sees the whole padded window, Whisper's
    padded frames included. ``context="valid"``: only the frames of real audio; the frames are
    cut to the longest real length in the batch and the rest masked, so a 3 s clip costs 150
    keys instead of 1500 and the output does not depend on padding."""

    CONTEXTS = ("window", "valid")
    # Initialisation of the shared transformer's Linear layers: ``bert`` (BERT's normal(0, 0.02)
    # weights, zero biases) or ``pytorch`` (torch's default kaiming-uniform weights and uniform
    # biases, which DeSTA2 and DeSTA2.5 keep: they build ``BertEncoder`` without ``post_init``).
    INITS = ("bert", "pytorch")

    def __init__(self, spec: AdapterSpec, num_queries: int = 64, num_layers: int = 2,
                 ffn_dim: int = 3072, dropout: float = 0.1, context: str = "window", init: str = "bert"):
        super().__init__()
        if context not in self.CONTEXTS:
            raise ConfigError(f"model.qformer_context: {context!r} is not one of {', '.join(self.CONTEXTS)}")
        if init not in self.INITS:
            raise ConfigError(f"model.qformer_init: {init!r} is not one of {', '.join(self.INITS)}")
        self.spec = spec
        self.context = context
        # Whether frames past each window's real audio are read (a feature cache keeps them).
        self.reads_padding = context == "window"  # = reads_padding_for(config)
        self.num_queries = num_queries
        self.queries = nn.Parameter(torch.randn(spec.num_taps, num_queries, spec.encoder_dim))
        self.layers = nn.ModuleList(
            QFormerLayer(spec.encoder_dim, spec.encoder_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.layer_logits = nn.Parameter(torch.zeros(num_queries, spec.num_taps))
        self.norm = nn.LayerNorm(spec.encoder_dim)
        self.proj = nn.Linear(spec.encoder_dim, spec.llm_dim)
        self.frame_norm: FrameNorm | None = None
        if init == "bert":
            self._init_bert_style()

    @classmethod
    def from_config(cls, spec: AdapterSpec, config) -> QFormerAdapter:
        adapter = cls(spec, config.num_queries, config.qformer_layers, config.qformer_ffn_dim,
                      config.adapter_dropout, config.qformer_context,
                      getattr(config, "qformer_init", "bert"))
        adapter.frame_norm = build_frame_norm(config, spec)
        return adapter

    @classmethod
    def num_vectors(cls, num_samples: int, config) -> int:
        return config.num_queries * num_windows(num_samples)

    @classmethod
    def reads_padding_for(cls, config) -> bool:
        return config.qformer_context == "window"

    def _init_bert_style(self) -> None:
        # BERT's initialisation (normal(0, 0.02) weights, zero biases) for the transformer layers.
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def output_lengths(self, valid_frames: Sequence[int]) -> list[int]:
        return [self.num_queries] * len(valid_frames)

    def forward(self, taps: Sequence[torch.Tensor], valid_frames: Sequence[int]):
        n_taps = len(taps)
        if n_taps != self.spec.num_taps:
            raise ValueError(f"Q-Former built for {self.spec.num_taps} taps, got {n_taps}")
        windows = taps[0].shape[0]
        dtype = self.queries.dtype
        if self.frame_norm is not None:
            taps = self.frame_norm(taps)
        # All taps go through the shared Q-Former as one batch: (taps * windows, ...).
        frame_mask = None
        if self.context == "valid":
            longest = max(valid_frames)
            taps = [t[:, :longest] for t in taps]
            valid = torch.tensor(list(valid_frames), device=taps[0].device)
            frame_mask = (torch.arange(longest, device=valid.device)[None, :] < valid[:, None]).repeat(n_taps, 1)
        # Only the k/v Linear layers read the frames: under autocast they cast them to its dtype in
        # every layer, so cast once to it (the same values as through fp32).
        device = taps[0].device.type
        frames_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else dtype
        frames = torch.cat([t.to(frames_dtype) for t in taps], dim=0)
        x = self.queries.unsqueeze(1).expand(-1, windows, -1, -1).reshape(
            n_taps * windows, self.num_queries, -1
        )
        for layer in self.layers:
            x = layer(x, frames, frame_mask)
        x = x.view(n_taps, windows, self.num_queries, -1)
        weights = torch.softmax(self.layer_logits, dim=-1).t()  # (taps, queries)
        mixed = (x * weights[:, None, :, None]).sum(dim=0)  # (windows, queries, dim)
        out = self.proj(self.norm(mixed))
        mask = torch.ones(windows, self.num_queries, dtype=torch.bool, device=out.device)
        return out, mask


# ---------------------------------------------------------------------------------------------
# Frame stacking + MLP
# ---------------------------------------------------------------------------------------------


@register_adapter("mlp")
class MLPAdapter(Adapter):
    """Stack ``stack`` consecutive encoder frames (of all taps, concatenated), then LayerNorm ->
    Linear -> GELU -> Linear to the LLM width. Variable length: ``ceil(real frames / stack)``
    vectors per window; the padded tail of a window produces nothing."""

    def __init__(self, spec: AdapterSpec, stack: int = 8, hidden: int | None = None):
        super().__init__()
        self.spec = spec
        self.stack = stack
        self.reads_padding = False
        in_dim = spec.encoder_dim * spec.num_taps * stack
        hidden = hidden or spec.llm_dim
        self.norm = nn.LayerNorm(in_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, spec.llm_dim)
        self.frame_norm: FrameNorm | None = None

    @classmethod
    def from_config(cls, spec: AdapterSpec, config) -> MLPAdapter:
        if config.mlp_stack < 1:
            raise ConfigError(f"model.mlp_stack must be >= 1, got {config.mlp_stack}")
        adapter = cls(spec, config.mlp_stack, config.mlp_hidden)
        adapter.frame_norm = build_frame_norm(config, spec)
        return adapter

    @classmethod
    def num_vectors(cls, num_samples: int, config) -> int:
        return sum(math.ceil(encoder_frames(n) / config.mlp_stack) for n in window_sample_counts(num_samples))

    @classmethod
    def default_taps(cls, num_layers: int, tap_point: str) -> list[int]:
        return last_block_tap(num_layers, tap_point)

    def output_lengths(self, valid_frames: Sequence[int]) -> list[int]:
        return [math.ceil(v / self.stack) for v in valid_frames]

    def forward(self, taps: Sequence[torch.Tensor], valid_frames: Sequence[int]):
        dtype = self.fc1.weight.dtype
        if self.frame_norm is not None:
            taps = self.frame_norm(taps)
        x = torch.cat([t.to(dtype) for t in taps], dim=-1)  # (windows, frames, d * taps)
        lengths = self.output_lengths(valid_frames)
        width = max(lengths)
        x = x[:, : width * self.stack]
        # Frames past each window's real audio are zeroed so that the last stack of a window
        # does not depend on padding.
        frame_idx = torch.arange(x.shape[1], device=x.device)
        valid = torch.tensor(list(valid_frames), device=x.device)
        x = x * (frame_idx[None, :] < valid[:, None]).unsqueeze(-1).to(dtype)
        if x.shape[1] < width * self.stack:
            x = F.pad(x, (0, 0, 0, width * self.stack - x.shape[1]))
        x = x.reshape(x.shape[0], width, -1)
        out = self.fc2(F.gelu(self.fc1(self.norm(x))))
        mask = torch.arange(width, device=out.device)[None, :] < torch.tensor(lengths, device=out.device)[:, None]
        return out, mask
