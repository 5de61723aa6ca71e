"""Convert a CTranslate2 Whisper model (``model.bin`` + ``tokenizer.json``) to a Hugging Face
``WhisperForConditionalGeneration`` folder.

The name map (CTranslate2 -> HF) is the inverse of CTranslate2's own Whisper converter: fused
``linear_0`` self-attention weights are split into q, k, v (k has no bias in HF; CTranslate2 stores
a zero bias for it), the cross-attention ``linear_1`` into k, v, and the tied output projection
``decoder/projection/weight`` is an alias of the token embeddings. The model config is derived
from tensor shapes; token ids come from the tokenizer's added tokens. Weights are saved in fp32:
widening the fp16 source is lossless, and fp16 is unusably slow on CPUs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from speechllm.assets.ctranslate2 import CT2Model, read_ct2_model
from speechllm.errors import AssetError


def _split(arr: np.ndarray, parts: int, name: str) -> list[np.ndarray]:
    if arr.shape[0] % parts:
        raise AssetError(f"{name}: first dimension {arr.shape[0]} is not divisible by {parts}")
    return np.split(arr, parts, axis=0)


def _count_layers(ct2: CT2Model, stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in ct2.variables if (m := pattern.match(name))}
    if not indices or sorted(indices) != list(range(len(indices))):
        raise AssetError(f"CTranslate2 model: {stack} layers are missing or not numbered 0..N-1")
    return len(indices)


def ct2_whisper_state_dict(ct2: CT2Model) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """HF state dict (fp32 numpy arrays) and shape facts from a CTranslate2 Whisper model."""
    if ct2.spec_name != "WhisperSpec":
        raise AssetError(f"CTranslate2 model is a {ct2.spec_name}, not a WhisperSpec")
    f = ct2.to_float32
    sd: dict[str, np.ndarray] = {}

    def ln(src: str, dst: str) -> None:
        sd[f"{dst}.weight"] = f(f"{src}/gamma")
        sd[f"{dst}.bias"] = f(f"{src}/beta")

    def linear(src: str, dst: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = f(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = f(f"{src}/bias")

    def fused(src: str, dsts: list[str], k_index: int) -> None:
        weights = _split(f(f"{src}/weight"), len(dsts), src)
        biases = _split(f(f"{src}/bias"), len(dsts), src)
        for i, (dst, w, b) in enumerate(zip(dsts, weights, biases)):
            sd[f"{dst}.weight"] = w
            if i == k_index:
                # HF's Whisper k projections have no bias; CTranslate2 stores zeros there.
                if np.any(b):
                    raise AssetError(f"{src}: the key projection's bias is not zero; cannot map to HF")
            else:
                sd[f"{dst}.bias"] = b

    n_enc = _count_layers(ct2, "encoder")
    n_dec = _count_layers(ct2, "decoder")
    for stack, n in (("encoder", n_enc), ("decoder", n_dec)):
        hf = f"model.{stack}"
        ln(f"{stack}/layer_norm", f"{hf}.layer_norm")
        sd[f"{hf}.embed_positions.weight"] = f(f"{stack}/position_encodings/encodings")
        for i in range(n):
            src, dst = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
            fused(f"{src}/self_attention/linear_0",
                  [f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"], 1)
            linear(f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
            ln(f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
            linear(f"{src}/ffn/linear_0", f"{dst}.fc1")
            linear(f"{src}/ffn/linear_1", f"{dst}.fc2")
            ln(f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
            if stack == "decoder":
                linear(f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
                fused(f"{src}/attention/linear_1",
                      [f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], 0)
                linear(f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
                ln(f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"model.encoder.{conv}")
    sd["model.decoder.embed_tokens.weight"] = f("decoder/embeddings/weight")
    sd["proj_out.weight"] = f("decoder/projection/weight") if "decoder/projection/weight" in ct2 \
        else sd["model.decoder.embed_tokens.weight"]

    conv1 = ct2.get("encoder/conv1/weight")
    facts = {
        "d_model": int(conv1.shape[0]),
        "num_mel_bins": int(conv1.shape[1]),
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": int(ct2.get("encoder/num_heads")),
        "decoder_attention_heads": int(ct2.get("decoder/num_heads")),
        "encoder_ffn_dim": int(ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        "decoder_ffn_dim": int(ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        "vocab_size": int(ct2.get("decoder/embeddings/weight").shape[0]),
        "max_source_positions": int(ct2.get("encoder/position_encodings/encodings").shape[0]),
        "max_target_positions": int(ct2.get("decoder/position_encodings/encodings").shape[0]),
    }
    return sd, facts


def _added_tokens(tokenizer_json: Path) -> dict[str, int]:
    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        return {t["content"]: int(t["id"]) for t in data["added_tokens"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise AssetError(f"{tokenizer_json}: not a readable tokenizers JSON file ({e})") from None


def build_whisper_folder(ct2_parts: list[Path], tokenizer_json: Path, ct2_config: Path | None,
                         out_dir: Path) -> dict[str, Any]:
    """Write an HF Whisper folder (config, generation config, safetensors, tokenizer, feature
    extractor) converted from CTranslate2 files. Returns provenance facts."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    ct2 = read_ct2_model([str(p) for p in ct2_parts])
    state, facts = ct2_whisper_state_dict(ct2)
    tokens = _added_tokens(tokenizer_json)
    try:
        eot = tokens["<|endoftext|>"]
        sot = tokens["<|startoftranscript|>"]
        no_ts = tokens["<|notimestamps|>"]
    except KeyError as e:
        raise AssetError(f"{tokenizer_json}: Whisper special token {e} is missing") from None
    multilingual = facts["vocab_size"] >= 51865
    extra = json.loads(ct2_config.read_text()) if ct2_config and ct2_config.is_file() else {}

    config = WhisperConfig(
        **facts,
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        # Suppression lists live in the generation config only: HF warns when both carry them.
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    with torch.device("meta"):
        meta_model = WhisperForConditionalGeneration(config)
    expected = set(meta_model.state_dict().keys())
    got = set(state)
    missing, unexpected = sorted(expected - got), sorted(got - expected)
    if missing or unexpected:
        raise AssetError(
            f"converted Whisper weights do not match the HF model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    result = model.load_state_dict(tensors, strict=True, assign=False)
    assert not result.missing_keys and not result.unexpected_keys
    model.tie_weights()

    gen = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=facts["max_target_positions"],
        begin_suppress_tokens=extra.get("suppress_ids_begin", [220, eot]),
        suppress_tokens=extra.get("suppress_ids", []),
        no_timestamps_token_id=no_ts,
        is_multilingual=multilingual,
        alignment_heads=extra.get("alignment_heads"),
        prev_sot_token_id=tokens.get("<|startofprev|>"),
        max_initial_timestamp_index=50,
    )
    if multilingual:
        # HF's generate(language=...) looks languages and tasks up in these maps.
        lang_ids = set(extra.get("lang_ids", []))
        gen.lang_to_id = {t: i for t, i in tokens.items() if i in lang_ids}
        gen.task_to_id = {"transcribe": tokens["<|transcribe|>"], "translate": tokens["<|translate|>"]}
    model.generation_config = gen
    model.save_pretrained(out_dir)

    tokenizer = WhisperTokenizerFast(tokenizer_file=str(tokenizer_json))
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=facts["num_mel_bins"]).save_pretrained(out_dir)
    return {"multilingual": multilingual, **facts}


def build_whisper_asset(asset, source_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Registry builder: locate the CTranslate2 files inside the installed package(s)."""
    first = source_dirs[0]
    sub = "model" if (first / "model").is_dir() else "data"
    base = first / sub
    if (base / "model.bin").is_file():
        parts = [base / "model.bin"]
    else:
        parts = []
        for d in source_dirs:
            found = sorted((d / "data").glob("model.bin.part*")) + sorted((d / "model").glob("model.bin.part*"))
            parts.extend(found)
        if not parts:
            raise AssetError(f"asset {asset.name}: no model.bin in {base}; reinstall: {asset.install_command()}")
        parts.sort(key=lambda p: p.name)
    tokenizer_json = base / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise AssetError(f"asset {asset.name}: {tokenizer_json} is missing; reinstall: {asset.install_command()}")
    facts = build_whisper_folder(parts, tokenizer_json, base / "config.json", out_dir)
    return {"source_files": [str(p) for p in parts], **facts}
