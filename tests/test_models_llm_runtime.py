"""The one LLM runtime (``speechllm.llm_runtime``): precision names, loading, left padding."""

from __future__ import annotations

import pytest
import torch


def test_dtype_names_and_devices():
    from speechllm.errors import ConfigError
    from speechllm.llm_runtime import resolve_device, resolve_dtype_name, torch_dtype

    assert [resolve_dtype_name(n) for n in ("fp32", "bf16", "fp16")] == ["fp32", "bf16", "fp16"]
    assert resolve_dtype_name(torch.float16) == "fp16" and torch_dtype("bf16") is torch.bfloat16
    assert resolve_dtype_name("auto") in ("fp32", "bf16")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match="dtype 'fp8': expected one of auto, fp32, bf16, fp16"):
        resolve_dtype_name("fp8")


def test_every_llm_loads_through_one_loader(tiny_llm_dir):
    from speechllm.config import ModelConfig
    from speechllm.eval.predictors import load_causal_lm as eval_load
    from speechllm.generate.hf_backend import HFBackend
    from speechllm.llm_runtime import dtype_name_of, load_causal_lm
    from speechllm.models.speech_llm import load_llm

    loaded = load_causal_lm(str(tiny_llm_dir), dtype="fp16")
    assert dtype_name_of(loaded.model) == "fp16" and not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None
    model, tok = eval_load(str(tiny_llm_dir), dtype="fp16")  # a retention base for an fp16 model
    assert dtype_name_of(model) == "fp16"
    llm, tok2, _ = load_llm(ModelConfig(), str(tiny_llm_dir), torch.bfloat16)
    assert dtype_name_of(llm) == "bf16"
    backend = HFBackend(str(tiny_llm_dir), dtype="fp32", device="cpu")
    assert backend.dtype_name == "fp32" and backend.pad_id == loaded.tokenizer.pad_token_id
    assert torch.equal(backend.model.get_input_embeddings().weight,
                       load_causal_lm(str(tiny_llm_dir)).model.get_input_embeddings().weight)


def test_empty_llm_has_the_loaded_llms_tensors_on_meta(tiny_llm_dir):
    """FSDP2's non-main ranks build the LLM without its weights: the same names, shapes and dtypes
    (buffers included: rotary inv_freq is non-persistent), all on the meta device, all frozen."""
    from speechllm.llm_runtime import load_causal_lm

    real = load_causal_lm(str(tiny_llm_dir), dtype="bf16").model
    empty = load_causal_lm(str(tiny_llm_dir), dtype="bf16", device="cpu", empty=True).model
    for kind in ("named_parameters", "named_buffers"):
        want = {n: (t.shape, t.dtype) for n, t in getattr(real, kind)()}
        got = {n: (t.shape, t.dtype) for n, t in getattr(empty, kind)()}
        assert got == want and want, kind
    assert all(t.is_meta for t in (*empty.parameters(), *empty.buffers()))
    assert not any(p.requires_grad for p in empty.parameters()) and not empty.training


def test_left_padding_and_positions():
    from speechllm.llm_runtime import left_pad, positions_of

    ids, mask = left_pad([[5, 6, 7], [8], []], 0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert positions_of(mask).tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 0]]


def test_auto_device_loads_a_checkpoint(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from speechllm.config import ModelConfig
    from speechllm.models import SpeechLLM

    cfg = ModelConfig(encoder=str(tiny_whisper_dir), llm=str(tiny_llm_dir), dtype="fp32", num_queries=8,
                      qformer_layers=1, qformer_ffn_dim=64)
    model = SpeechLLM.from_config(cfg, device="auto")
    model.save_pretrained(tmp_path / "ckpt")
    loaded = SpeechLLM.from_pretrained(tmp_path / "ckpt", device="auto")
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.device.type == want and loaded.device.type == want
    assert next(loaded.llm.parameters()).dtype == torch.float32
