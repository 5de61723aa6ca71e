"""DeSTA2 and DeSTA2.5 reproduced: their own code's outputs (tests/data/desta_reference.safetensors,
made by benchmarks/desta_reference_fixtures.py from local clones of their repositories) against
speechllm's forward on the same weights, imported with ``speechllm convert``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from speechllm.models.convert_desta import (
    DESTA_MODEL_SETTINGS,
    ConvertError,
    convert_release,
    read_release,
)

FIXTURE = Path(__file__).parent / "data" / "desta_reference.safetensors"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ref() -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(FIXTURE), framework="pt") as f:
        meta = json.loads(f.metadata()["desta_reference"])
    return load_file(str(FIXTURE)), meta


def _waves(tensors) -> list[np.ndarray]:
    return [tensors[f"wave.{n}"].numpy().astype(np.float32) / 32768.0 for n in ("short", "long")]


def _prefixed(tensors, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}


def _whisper_folder(out: Path, config: dict, encoder_state: dict, feature_size: int) -> Path:
    """The reference's Whisper encoder in an HF folder; the decoder is random (not part of the
    reference) and sized for the real English tokenizer when it is installed, so ASR runs."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    from speechllm.testing.tiny import _real_whisper_tokenizer

    cfg = WhisperConfig.from_dict({k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    tokenizer = _real_whisper_tokenizer()
    if tokenizer is not None:
        ids = tokenizer.convert_tokens_to_ids
        cfg.vocab_size = len(tokenizer)
        cfg.decoder_start_token_id = ids("<|startoftranscript|>")
        cfg.eos_token_id = cfg.pad_token_id = cfg.bos_token_id = ids("<|endoftext|>")
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(cfg)
    model.model.encoder.load_state_dict(encoder_state, strict=True)
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=feature_size).save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def _llama_folder(out: Path, llama: dict, state: dict) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from speechllm.testing.tiny import train_tiny_tokenizer

    tokenizer = train_tiny_tokenizer()
    assert len(tokenizer) <= llama["vocab_size"]
    model = LlamaForCausalLM(LlamaConfig(**llama, bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}  # tied to the embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bases(ref, tmp_path_factory) -> dict[str, Path]:
    tensors, meta = ref
    root = tmp_path_factory.mktemp("desta_bases")
    return {
        "desta2": _whisper_folder(root / "whisper-small-like", meta["desta2"]["whisper"],
                                  _prefixed(tensors, "desta2.whisper."), meta["desta2"]["feature_size"]),
        "desta25": _whisper_folder(root / "whisper-large-like", meta["desta25"]["whisper"],
                                   _prefixed(tensors, "desta25.whisper."), meta["desta25"]["feature_size"]),
        "llm": _llama_folder(root / "llama", meta["llama"], _prefixed(tensors, "llm.")),
    }


@pytest.fixture(scope="module")
def releases(ref, tmp_path_factory) -> dict[str, Path]:
    """The two releases as DeSTA ships them: DeSTA2's qformer_connector.pth (torch.save of the
    connector's state_dict) + config.json; DeSTA2.5's config.json + model.safetensors."""
    from safetensors.torch import save_file

    tensors, meta = ref
    root = tmp_path_factory.mktemp("desta_releases")
    d2, d25 = root / "desta2", root / "desta25"
    d2.mkdir()
    d25.mkdir()
    torch.save(_prefixed(tensors, "desta2.src."), d2 / "qformer_connector.pth")
    (d2 / "config.json").write_text(json.dumps(meta["desta2"]["config"]))
    save_file(_prefixed(tensors, "desta25.src."), str(d25 / "model.safetensors"), metadata={"format": "pt"})
    (d25 / "config.json").write_text(json.dumps(meta["desta25"]["config"]))
    return {"desta2": d2, "desta25": d25}


@pytest.fixture(scope="module")
def converted(releases, bases, tmp_path_factory):
    """Both releases through ``convert`` (the tiny bases stand in for the hub ids their configs name)."""
    root = tmp_path_factory.mktemp("desta_converted")
    out = {}
    for kind in ("desta2", "desta25"):
        model = convert_release(kind, releases[kind], root / kind, encoder=str(bases[kind]),
                                llm=str(bases["llm"]), dtype="fp32")
        out[kind] = (model, root / kind)
    return out


def _connector_diffs(model, tensors, kind: str) -> dict[str, float]:
    """Max |speechllm - DeSTA| of the taps (short clip, every 10th frame) and of the connector
    outputs (short clip: one padded window; long clip: its first 30 s window)."""
    waves = _waves(tensors)
    with torch.no_grad():
        encoded = model.encoder.encode(waves)
        vectors = model.audio_vectors(encoded)
    assert encoded.windows_per_audio == [1, 2]  # 35 s: two windows here; DeSTA keeps only the first
    assert vectors.shape[0] == 64 * 3
    want_taps = tensors[f"{kind}.taps.short"]
    taps = torch.stack([t[0, ::10] for t in encoded.taps])
    assert taps.shape == want_taps.shape
    return {
        "taps": (taps - want_taps).abs().max().item(),
        "short": (vectors[:64] - tensors[f"{kind}.out.short"]).abs().max().item(),
        "long_first_window": (vectors[64:128] - tensors[f"{kind}.out.long"]).abs().max().item(),
    }


@pytest.mark.parametrize("kind", ["desta2", "desta25"])
def test_connector_reproduces_desta_through_convert(kind, converted, ref):
    tensors, meta = ref
    model, _ = converted[kind]
    assert model.encoder.layers == meta[kind]["taps"]
    assert model.config.tap_point == DESTA_MODEL_SETTINGS[kind]["tap_point"]
    diffs = _connector_diffs(model, tensors, kind)
    print(f"{kind} max |speechllm - DeSTA|: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_desta25_taps_need_block_output(converted, ref):
    """HF-style taps cannot reproduce DeSTA2.5: one block too shallow ([7, 15, 23, 31]), or the
    closing LayerNorm on the last tap ([8, 16, 24, 32])."""
    from speechllm.models.encoder import WhisperTapEncoder

    tensors, _ = ref
    model, _ = converted["desta25"]
    encoder = model.encoder
    want = tensors["desta25.out.short"]
    for layers in ([7, 15, 23, 31], [8, 16, 24, 32]):
        model.encoder = WhisperTapEncoder(encoder.whisper, encoder.feature_extractor, encoder.tokenizer,
                                          layers, tap_point="hidden_states")
        try:
            with torch.no_grad():
                got = model.audio_vectors(model.encoder.encode(_waves(tensors)[:1]))
        finally:
            model.encoder = encoder
        diff = (got - want).abs().max().item()
        print(f"desta25 as hidden_states taps {layers}: max |diff| {diff:.2e}")
        assert diff > 100 * TOLERANCE, layers


def test_desta25_whole_forward_with_lora(converted, ref):
    """DeSTA25AudioModel.forward's logits (64 audio vectors + transcript embeddings at a start
    position, LoRA on the LLM) from speechllm's forward on the converted checkpoint."""
    from speechllm.models.speech_llm import SpeechBatch

    tensors, meta = ref
    model, _ = converted["desta25"]
    assert model.config.lora.enabled and model.config.lora.alpha == 16 and model.config.lora.r == 16
    ids = tensors["desta25.forward.input_ids"][None]
    start = meta["desta25"]["start_position"]
    audio_mask = torch.zeros_like(ids, dtype=torch.bool)
    audio_mask[0, start:start + 64] = True
    n_transcript = tensors["desta25.forward.transcript_ids"].numel()
    assert torch.equal(ids[0, start + 64:start + 64 + n_transcript], tensors["desta25.forward.transcript_ids"])
    with torch.no_grad():
        encoded = model.encoder.encode(_waves(tensors)[:1])
        batch = SpeechBatch(input_ids=ids, attention_mask=torch.ones_like(ids),
                            position_ids=torch.arange(ids.shape[1])[None], labels=torch.full_like(ids, -100),
                            audio_mask=audio_mask, encoded=encoded)
        logits = model.forward(batch, return_logits=True).logits[0]
    diff = (logits - tensors["desta25.forward.logits"]).abs().max().item()
    # LoRA matters here: without it the logits move well past the tolerance.
    with torch.no_grad(), model.llm.disable_adapter():
        plain = model.forward(batch, return_logits=True).logits[0]
    no_lora = (plain - tensors["desta25.forward.logits"]).abs().max().item()
    print(f"desta25 whole forward, logits max |diff| {diff:.2e} (LoRA off: {no_lora:.2e}; "
          f"logits up to {logits.abs().max().item():.2f})")
    assert diff <= TOLERANCE, diff
    assert no_lora > 100 * TOLERANCE


@pytest.mark.parametrize("kind", ["desta2", "desta25"])
def test_convert_save_load_round_trip_is_bit_identical(kind, converted, releases, ref):
    from speechllm.models.speech_llm import SpeechLLM

    model, folder = converted[kind]
    loaded = SpeechLLM.from_pretrained(folder, dtype="fp32")
    release = read_release(kind, releases[kind])
    saved = loaded.adapter.state_dict()
    assert saved.keys() == release.adapter_state.keys()
    for key, value in release.adapter_state.items():
        assert torch.equal(saved[key], value.float()), key
    for name in ("tap_point", "audio_role", "transcript_prefix", "no_speech_transcript", "qformer_init"):
        assert getattr(loaded.config, name) == DESTA_MODEL_SETTINGS[kind][name]
    assert loaded.encoder.layers == model.encoder.layers
    if kind == "desta25":
        params = dict(loaded.llm.named_parameters())
        for key, value in release.lora_state.items():
            assert torch.equal(params[f"base_model.model.{key}.default.weight"], value.float()), key
    tensors, _ = ref
    with torch.no_grad():
        a = model.audio_vectors(model.encoder.encode(_waves(tensors)))
        b = loaded.audio_vectors(loaded.encoder.encode(_waves(tensors)))
    assert torch.equal(a, b)


def test_recipes_hold_the_desta_settings():
    """The DeSTA recipes run each model as the converter's settings (= DeSTA's code) say."""
    from speechllm.config import RunConfig, load_config

    root = Path(__file__).resolve().parents[1] / "recipes"
    recipes = {"desta2": "desta2_whisper-small_llama3-8b-instruct.yaml",
               "desta25": "desta25_whisper-large-v3_llama3.1-8b-instruct.yaml"}
    # The DeSTA2 variants (KL, DiVA, LoRA) change the objective or the trained weights, not the model.
    variants = [("desta2", f"desta2_{v}.yaml") for v in ("kl", "diva", "lora")]
    for kind, name in [*recipes.items(), *variants]:
        model = load_config(RunConfig, root / name, []).model
        differ = {k: (getattr(model, k), v) for k, v in DESTA_MODEL_SETTINGS[kind].items()
                  if getattr(model, k) != v}
        assert not differ, (name, differ)
    desta25 = load_config(RunConfig, root / recipes["desta25"], []).model
    assert desta25.encoder_layers == [7, 15, 23, 31]
    lora = load_config(RunConfig, root / "desta2_lora.yaml", []).model.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (16, 16, 0.1, ["q_proj", "k_proj", "v_proj"])


def test_convert_refuses_what_is_not_a_desta_release(tmp_path, releases):
    # A pickled object where tensors are expected: weights_only refuses it, nothing runs.
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    bad = tmp_path / "pickled"
    bad.mkdir()
    torch.save({"layer_weights": Payload()}, bad / "qformer_connector.pth")
    with pytest.raises(ConvertError, match="not a tensor-only PyTorch state dict"):
        read_release("desta2", bad)
    # A key with no place in the connector is named, not dropped.
    state = torch.load(releases["desta2"] / "qformer_connector.pth", weights_only=True)
    state["qformer.layer.0.attention.self.distance_embedding.weight"] = torch.zeros(1)
    extra = tmp_path / "extra"
    extra.mkdir()
    torch.save(state, extra / "qformer_connector.pth")
    with pytest.raises(ConvertError, match="distance_embedding"):
        read_release("desta2", extra)
    # Without config.json the base models must come from the flags.
    from speechllm.models.convert_desta import release_model_config

    release = read_release("desta2", releases["desta2"] / "qformer_connector.pth")
    release.source_config = {}
    with pytest.raises(ConvertError, match="give --encoder"):
        release_model_config(release)
    with pytest.raises(ConvertError, match="missing; desta25 releases ship model.safetensors"):
        read_release("desta25", tmp_path)


def test_speechllm_infer_runs_on_converted_desta25(converted, real_audio_dir, capsys):
    from speechllm.cli import infer_main

    _, folder = converted["desta25"]
    rc = infer_main(["--model", str(folder), "--audio", str(real_audio_dir / "198-209-0000.ogg"),
                     "--prompt", "What can you hear from the audio?", "--max-new-tokens", "4",
                     "--dtype", "fp32", "--show-transcript"])
    assert rc == 0
    captured = capsys.readouterr()
    # VAD heard speech, so the (random) Whisper decoder's transcript entered the span.
    heard = captured.err.split("transcript (heard)", 1)[1]
    assert heard.split(": ", 1)[1].strip("'\n ")


def test_convert_command_line(releases, bases, tmp_path, capsys):
    from speechllm.cli import main
    from speechllm.models.checkpoint import read_checkpoint_config

    out = tmp_path / "desta2"
    argv = ["convert", "desta2", str(releases["desta2"] / "qformer_connector.pth"), str(out),
            "--encoder", str(bases["desta2"]), "--llm", str(bases["llm"]), "--dtype", "fp32"]
    assert main(argv) == 0
    assert "taps [2, 5, 8, 11] as hidden_states, 2-layer Q-Former" in capsys.readouterr().out
    meta = read_checkpoint_config(out)
    assert meta["encoder_layers"] == [2, 5, 8, 11] and meta["model"]["audio_role"] == "audio"
    assert main(argv) == 2  # OUT exists: refused without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err


def test_train_init_from_a_converted_desta25_checkpoint(converted, tmp_path, capsys):
    """`speechllm train --init-from` starts from the converted weights (adapter and LoRA), with the
    checkpoint's model settings, and trains them."""
    from safetensors.torch import load_file
    from train_fixtures import tiny_run_config, write_rows

    from speechllm.cli import main
    from speechllm.train.trainer import Trainer

    model, folder = converted["desta25"]
    rows = write_rows(tmp_path / "data", 4)
    cfg = tiny_run_config("unused-llm", "unused-whisper", [rows], tmp_path / "run", max_steps=1)
    cfg.train.init_from = str(folder)
    trainer = Trainer(cfg)
    assert trainer.cfg.model.tap_point == "block_output" and trainer.cfg.model.lora.enabled
    start = load_file(str(folder / "adapter.safetensors"))
    for k, v in trainer.model.adapter.state_dict().items():
        assert torch.equal(v, start[k]), k  # the converted weights, not a fresh init
    assert any("lora_" in n for n in trainer.trainable_named)  # DeSTA2.5's LoRA is trained too

    rc = main(["train", "--init-from", str(folder), "data.train=[" + str(rows) + "]",
               f"train.output_dir={tmp_path / 'cli'}", "train.max_steps=1", "train.precision=fp32",
               "train.batch_size=2", "train.num_sample_generations=0", "data.max_length=256"])
    assert rc == 0 and "finished at step 1" in capsys.readouterr().out
    trained = load_file(str(tmp_path / "cli" / "final" / "adapter.safetensors"))
    assert any(not torch.equal(trained[k], start[k]) for k in start)
