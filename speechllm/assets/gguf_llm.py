"""Convert a GGUF chat LLM to a plain Hugging Face folder (bf16 safetensors + tokenizer).

transformers reads GGUF files (de-quantising to fp32), but refuses ``save_pretrained`` on such a
model and leaves a ``quantization_config`` in its config. We copy the de-quantised state dict into
a model built from the same config minus the quantisation entry and save that in bf16, which
halves the size and is the fast CPU path where bf16 is native; the Q4_1 source is far coarser than
bf16 rounding, so nothing measurable is lost. De-quantisation takes ~20 s, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from speechllm.errors import AssetError


def build_llm_folder_from_gguf(gguf_path: Path, out_dir: Path, *, dtype: str = "bfloat16") -> dict[str, Any]:
    """Write an HF causal-LM folder converted from ``gguf_path``. Returns provenance facts."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not gguf_path.is_file():
        raise AssetError(f"{gguf_path}: GGUF file not found")
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        source = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except Exception as e:  # gguf raises ValueError/OSError/struct errors on corrupt files
        raise AssetError(f"{gguf_path}: cannot read GGUF file ({type(e).__name__}: {e})") from None
    if not getattr(tokenizer, "chat_template", None):
        raise AssetError(f"{gguf_path}: the GGUF file carries no chat template")

    config = AutoConfig.for_model(**{k: v for k, v in source.config.to_dict().items()
                                     if k not in ("quantization_config", "_name_or_path",
                                                  "_model_name_or_path", "transformers_version")})
    torch_dtype = getattr(torch, dtype)
    config.dtype = torch_dtype
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    state = source.state_dict()
    expected = set(plain.state_dict())
    # Tied output embeddings may be absent from (or duplicated in) the source state dict.
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing = sorted(expected - set(state) - tied)
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise AssetError(f"{gguf_path}: weights do not match {type(plain).__name__}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    plain.load_state_dict({k: v.to(torch_dtype) for k, v in state.items() if k in expected}, strict=not tied)
    plain.tie_weights()
    plain.generation_config = source.generation_config
    # The tokenizer's end-of-turn token ends a chat answer; make generation stop there.
    eos_id = tokenizer.convert_tokens_to_ids(tokenizer.eos_token) if tokenizer.eos_token else None
    if eos_id is not None:
        plain.generation_config.eos_token_id = eos_id
        plain.config.eos_token_id = eos_id
    if tokenizer.pad_token_id is not None:
        plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in plain.parameters())
    return {"architecture": type(plain).__name__, "num_parameters": n_params, "dtype": dtype,
            "source_file": str(gguf_path)}


def build_gguf_llm_asset(asset, source_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """Registry builder: the package ships exactly one ``*.gguf`` file."""
    files = sorted(source_dirs[0].glob("*.gguf"))
    if len(files) != 1:
        raise AssetError(f"asset {asset.name}: expected one .gguf file in {source_dirs[0]}, found "
                         f"{len(files)}; reinstall: {asset.install_command()}")
    return build_llm_folder_from_gguf(files[0], out_dir)
