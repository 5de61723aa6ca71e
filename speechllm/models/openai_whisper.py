"""Load openai-whisper ``.pt`` checkpoints into Hugging Face ``WhisperForConditionalGeneration``.

The checkpoint is ``{"dims": {...}, "model_state_dict": {...}}``; it is read with
``torch.load(weights_only=True)`` (no code runs) and its parameter names are mapped onto HF's.
openai-whisper itself is not needed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from speechllm.errors import ModelResolutionError

# openai-whisper name piece -> HF name piece, applied inside encoder/decoder blocks.
_BLOCK_MAP = {
    "attn.query": "self_attn.q_proj",
    "attn.key": "self_attn.k_proj",
    "attn.value": "self_attn.v_proj",
    "attn.out": "self_attn.out_proj",
    "attn_ln": "self_attn_layer_norm",
    "cross_attn.query": "encoder_attn.q_proj",
    "cross_attn.key": "encoder_attn.k_proj",
    "cross_attn.value": "encoder_attn.v_proj",
    "cross_attn.out": "encoder_attn.out_proj",
    "cross_attn_ln": "encoder_attn_layer_norm",
    "mlp.0": "fc1",
    "mlp.2": "fc2",
    "mlp_ln": "final_layer_norm",
}
_TOP_MAP = {
    "encoder.positional_embedding": "model.encoder.embed_positions.weight",
    "encoder.ln_post.weight": "model.encoder.layer_norm.weight",
    "encoder.ln_post.bias": "model.encoder.layer_norm.bias",
    "decoder.positional_embedding": "model.decoder.embed_positions.weight",
    "decoder.token_embedding.weight": "model.decoder.embed_tokens.weight",
    "decoder.ln.weight": "model.decoder.layer_norm.weight",
    "decoder.ln.bias": "model.decoder.layer_norm.bias",
}
_BLOCK_RE = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$")


def openai_to_hf_name(name: str) -> str:
    """Map one openai-whisper state-dict key onto the HF ``WhisperForConditionalGeneration`` key."""
    if name in _TOP_MAP:
        return _TOP_MAP[name]
    m = _BLOCK_RE.match(name)
    if m:
        side, idx, piece, kind = m.groups()
        if piece not in _BLOCK_MAP:
            raise KeyError(name)
        return f"model.{side}.layers.{idx}.{_BLOCK_MAP[piece]}.{kind}"
    if name.startswith(("encoder.conv1.", "encoder.conv2.")):
        return "model." + name
    raise KeyError(name)


def convert_openai_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Rename every key; the tied output projection ``proj_out`` is added from the embeddings."""
    out = {}
    for name, tensor in state.items():
        if name == "alignment_heads":  # a non-weight buffer some versions save
            continue
        try:
            out[openai_to_hf_name(name)] = tensor
        except KeyError:
            raise ModelResolutionError(f"unexpected parameter {name!r} in openai-whisper checkpoint") from None
    out["proj_out.weight"] = out["model.decoder.embed_tokens.weight"]
    return out


def _special_ids(n_vocab: int) -> dict[str, int]:
    # English-only vocabularies (51864) put <|endoftext|> at 50256; multilingual ones (51865+)
    # have one more base token, so everything shifts by one.
    eot = 50256 if n_vocab < 51865 else 50257
    return dict(
        eos_token_id=eot,
        bos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=eot + 1,
    )


def load_openai_whisper(path: str | os.PathLike, dtype=None):
    """Build ``WhisperForConditionalGeneration`` from an openai-whisper ``.pt`` file."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelResolutionError(f"{path}: not a readable openai-whisper checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ModelResolutionError(
            f"{path}: expected an openai-whisper checkpoint with 'dims' and 'model_state_dict'"
        )
    d = ckpt["dims"]
    config = WhisperConfig(
        vocab_size=d["n_vocab"],
        num_mel_bins=d["n_mels"],
        d_model=d["n_audio_state"],
        encoder_layers=d["n_audio_layer"],
        encoder_attention_heads=d["n_audio_head"],
        decoder_layers=d["n_text_layer"],
        decoder_attention_heads=d["n_text_head"],
        encoder_ffn_dim=4 * d["n_audio_state"],
        decoder_ffn_dim=4 * d["n_text_state"],
        max_source_positions=d["n_audio_ctx"],
        max_target_positions=d["n_text_ctx"],
        **_special_ids(d["n_vocab"]),
    )
    model = WhisperForConditionalGeneration(config)
    state = convert_openai_state_dict(ckpt["model_state_dict"])
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ModelResolutionError(f"{path}: openai-whisper weights do not fit the model ({e})") from None
    # k_proj has no bias in either format; only genuinely missing weights are an error.
    missing = [k for k in result.missing_keys if not k.endswith("k_proj.bias")]
    if missing or result.unexpected_keys:
        raise ModelResolutionError(
            f"{path}: openai-whisper weights do not fit the model (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
