"""SpeechLLM on tiny random models: encoder taps, adapters, spans, batches, text-only invariance,
checkpoints, LoRA, the openai-whisper .pt loader and bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from speechllm.config import LoraConfig, ModelConfig
from speechllm.models.chat_layout import IGNORE_INDEX, AudioTooLongError, ChatLayoutError

SR = 16_000


def tone(seconds: float, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def make_config(tiny_whisper_dir, tiny_llm_dir, **kw) -> ModelConfig:
    kw.setdefault("transcript_source", "manifest")
    kw.setdefault("dtype", "fp32")
    return ModelConfig(encoder=str(tiny_whisper_dir), llm=str(tiny_llm_dir), **kw)


@pytest.fixture(scope="module")
def model(tiny_whisper_dir, tiny_llm_dir):
    from speechllm.models import SpeechLLM

    return SpeechLLM.from_config(make_config(tiny_whisper_dir, tiny_llm_dir), seed=0)


@pytest.fixture(scope="module")
def base_llm(tiny_llm_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32).eval()


USER = [{"role": "user", "content": "What can you hear? <|AUDIO|>"}]
CHAT = USER + [{"role": "assistant", "content": "A low tone."}]


def test_default_taps_follow_desta2_by_encoder_depth():
    from speechllm.models.encoder import default_encoder_layers

    assert default_encoder_layers(4) == [0, 1, 2, 3]
    assert default_encoder_layers(12) == [2, 5, 8, 11]
    assert default_encoder_layers(24) == [5, 11, 17, 23]
    assert default_encoder_layers(32) == [3, 7, 11, 15, 19, 23, 27, 31]
    assert default_encoder_layers(6) == [1, 2, 4, 5]
    assert default_encoder_layers(12, "mlp") == [12]


def test_encoder_taps_match_hf_hidden_states(model):
    w = tone(2.0)
    enc = model.encoder
    mel = enc.mel([w])
    assert mel.shape == (1, 80, 3000)
    with torch.inference_mode():
        taps, final = enc.forward_mel(mel, need_final=True)
        ref = enc.encoder(mel, output_hidden_states=True)
    assert enc.layers == [0, 1]
    for i, t in zip(enc.layers, taps, strict=True):
        assert t.shape == (1, 1500, 64)
        assert torch.equal(t, ref.hidden_states[i])
    assert torch.equal(final, ref.last_hidden_state)


def test_qformer_shapes_and_initialisation(model):
    ad = model.adapter
    assert ad.queries.shape == (2, 64, 64)
    assert torch.equal(ad.layer_logits, torch.zeros(64, 2))  # even mix at start
    assert abs(float(ad.queries.detach().std()) - 1.0) < 0.1  # standard normal
    assert len(ad.layers) == 2 and ad.layers[0].ffn_in.out_features == 3072
    encoded = model.encoder.encode([tone(1.0), tone(31.0)])
    assert encoded.windows_per_audio == [1, 2]
    out, mask = ad(encoded.taps, encoded.valid_frames)
    assert out.shape == (3, 64, model.adapter.spec.llm_dim) and mask.all()
    # each window is processed on its own: same output alone and in a batch
    alone, _ = ad([t[:1] for t in encoded.taps], encoded.valid_frames[:1])
    assert torch.allclose(alone[0], out[0], atol=1e-5)


def test_qformer_valid_context_ignores_padding_and_matches_a_masked_window(model):
    from speechllm.models.adapters import QFormerAdapter

    assert model.adapter.context == "valid"  # the framework's default; DeSTA2's is "window"
    window = QFormerAdapter(model.adapter.spec, 64, 2, 3072, 0.1, context="window")
    valid = QFormerAdapter(model.adapter.spec, 64, 2, 3072, 0.1, context="valid")
    state = {k: v for k, v in model.adapter.state_dict().items() if not k.startswith("frame_norm.")}
    window.load_state_dict(state)
    valid.load_state_dict(state)
    window.eval()
    valid.eval()
    assert window.reads_padding and not valid.reads_padding
    encoded = model.encoder.encode([tone(1.0), tone(2.5, 440)])
    n = encoded.valid_frames
    assert n == [50, 125]
    with torch.no_grad():
        out, mask = valid(encoded.taps, n)
        # Garbage past the real frames changes nothing in "valid" mode (but does in "window").
        noisy = [t.clone() for t in encoded.taps]
        for t in noisy:
            t[0, n[0]:] = 100.0
        out_noisy, _ = valid(noisy, n)
        assert torch.allclose(out, out_noisy, atol=1e-5)
        assert not torch.allclose(window(encoded.taps, n)[0], window(noisy, n)[0], atol=1e-3)
        # Same as cutting each window to its own real frames and running it alone.
        alone, _ = valid([t[:1, : n[0]] for t in encoded.taps], n[:1])
    assert out.shape == (2, 64, window.spec.llm_dim) and mask.all()
    assert torch.allclose(alone[0], out[0], atol=1e-5)
    from speechllm.errors import ConfigError

    with pytest.raises(ConfigError, match="qformer_context"):
        QFormerAdapter(window.spec, context="speech")


def test_mlp_adapter_is_variable_length(tiny_whisper_dir, tiny_llm_dir):
    from speechllm.models import SpeechLLM
    from speechllm.models.chat_layout import adapter_output_length

    m = SpeechLLM.from_config(make_config(tiny_whisper_dir, tiny_llm_dir, adapter="mlp", mlp_stack=4))
    assert m.encoder.layers == [2]  # final output of the 2-block encoder
    waves = [tone(1.0), tone(31.0)]
    batch = m.prepare_batch([USER, USER], [[waves[0]], [waves[1]]])
    counts = batch.audio_mask.sum(1).tolist()
    assert counts == [adapter_output_length(len(w), m.config) for w in waves] == [13, 375 + 13]
    assert m(batch, return_logits=True).logits.isfinite().all()


def test_audio_span_position_and_several_audios(model):
    waves = [tone(1.0), tone(2.0, 440)]
    msgs = [{"role": "user", "content": "Compare <|AUDIO|> with <|AUDIO|>."}]
    batch = model.prepare_batch([msgs], [waves], [["the birch canoe", None]])
    mask = batch.audio_mask[0]
    assert int(mask.sum()) == 128
    ids = batch.input_ids[0]
    text = model.tokenizer.decode(ids[~mask])
    assert "Compare <start_audio>the birch canoe<end_audio> with <start_audio><end_audio>." in text
    # the two spans are contiguous runs of 64
    runs = torch.nonzero(mask[1:] != mask[:-1]).flatten().tolist()
    assert len(runs) == 4 and runs[1] - runs[0] == 64 and runs[3] - runs[2] == 64
    with pytest.raises(ChatLayoutError, match="locator"):
        model.prepare_batch([msgs], [[waves[0]]])


def test_long_audio_is_windowed_and_too_long_audio_is_refused(tiny_whisper_dir, tiny_llm_dir):
    from speechllm.models import SpeechLLM

    m = SpeechLLM.from_config(make_config(tiny_whisper_dir, tiny_llm_dir, max_audio_seconds=40))
    batch = m.prepare_batch([USER], [[tone(31.0)]])
    assert int(batch.audio_mask.sum()) == 128
    with pytest.raises(AudioTooLongError, match="41.0s"):
        m.prepare_batch([USER], [[tone(41.0)]])


def test_bad_waveforms_are_refused(model):
    from speechllm.models import InvalidAudioError

    bad = tone(1.0)
    bad[10] = np.nan
    with pytest.raises(InvalidAudioError, match="NaN"):
        model.prepare_batch([USER], [[bad]])
    with pytest.raises(InvalidAudioError, match="empty"):
        model.prepare_batch([USER], [[np.zeros(0, np.float32)]])
    with pytest.raises(InvalidAudioError, match="mono"):
        model.prepare_batch([USER], [[np.zeros((2, 100), np.float32)]])


def test_loss_masks_everything_but_the_response(model):
    batch = model.prepare_batch([CHAT], [[tone(1.0)]], [["hello"]])
    labelled = batch.labels[0][batch.labels[0] != IGNORE_INDEX]
    assert model.tokenizer.decode(labelled) == "A low tone.<|im_end|>"
    out = model(batch, return_logits=True)
    targets = batch.labels[0, 1:]
    sel = targets != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(out.logits[0, :-1][sel], targets[sel])
    assert torch.allclose(out.loss, manual, atol=1e-6)
    assert out.num_tokens == int(sel.sum())
    cheap = model(batch)  # LM head at response positions only
    assert cheap.logits is None and torch.allclose(cheap.loss, out.loss, atol=1e-5)


def test_gradients_reach_the_adapter_only(model):
    batch = model.prepare_batch([CHAT], [[tone(1.0)]])
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        model(batch).loss.backward()
        assert all(p.grad is not None for p in model.adapter.parameters())
        assert all(p.grad is None for p in model.llm.parameters())
        assert not model.llm.training  # frozen LLM stays in eval mode
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_batch_invariance_with_left_padding(model):
    short = (CHAT, [tone(1.0)], ["hi"])
    long = ([{"role": "system", "content": "You listen carefully to every sound."}] + CHAT,
            [tone(2.0, 330)], ["the birch canoe slid on the smooth planks"])
    alone = model(model.prepare_batch([short[0]], [short[1]], [short[2]]), return_logits=True).logits[0]
    batch = model.prepare_batch([long[0], short[0]], [long[1], short[1]], [long[2], short[2]])
    together = model(batch, return_logits=True).logits[1]
    n = alone.shape[0]
    assert batch.input_ids.shape[1] > n  # the short example really was padded
    assert torch.allclose(together[-n:], alone, atol=1e-5, rtol=0)


def test_text_only_logits_equal_the_base_llm_bit_for_bit(model, base_llm):
    conv = [{"role": "user", "content": "Is the speaker male or female?"},
            {"role": "assistant", "content": "Female."}]
    batch = model.prepare_batch([conv])
    assert not batch.has_audio and batch.encoded is None
    ours = model(batch, return_logits=True).logits
    with torch.inference_mode():
        ref = base_llm(batch.input_ids).logits
    assert torch.equal(ours, ref)
    reply = model.generate([{"role": "user", "content": "Hello"}], max_new_tokens=6)
    ids = model.tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                              return_tensors="pt", return_dict=True)["input_ids"]
    with torch.inference_mode():
        ref_ids = base_llm.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)[0, ids.shape[1]:]
    assert reply == model.tokenizer.decode(ref_ids, skip_special_tokens=True).strip()


def test_generate_with_audio_returns_text(model):
    reply, batch = model.generate(USER, [tone(1.0)], ["hello"], max_new_tokens=4, return_batch=True)
    assert isinstance(reply, str)
    assert batch.transcripts == [["hello"]]
    replies = model.generate([USER, [{"role": "user", "content": "Hi"}]], [[tone(1.0)], []], max_new_tokens=3)
    assert isinstance(replies, list) and len(replies) == 2


def test_checkpoint_round_trip_and_refusals(model, tmp_path, tiny_whisper_dir):
    from speechllm.models import SpeechLLM
    from speechllm.models.checkpoint import CheckpointError
    from speechllm.testing import build_tiny_llm

    with torch.no_grad():
        model.adapter.layer_logits.add_(torch.randn_like(model.adapter.layer_logits))
    out = tmp_path / "ckpt"
    model.save_pretrained(out)
    meta = json.loads((out / "speechllm_config.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "speechllm_config.json"]
    assert meta["llm"]["sha256"] and meta["encoder"]["ref"] == str(tiny_whisper_dir)
    assert meta["shapes"]["llm_dim"] == 64 and meta["trained"] == ["adapter"]
    loaded = SpeechLLM.from_pretrained(out)
    waves = [tone(1.5)]
    a = model(model.prepare_batch([CHAT], [waves], [["x"]]), return_logits=True).logits
    b = loaded(loaded.prepare_batch([CHAT], [waves], [["x"]]), return_logits=True).logits
    assert torch.equal(a, b)
    # a base of another width is refused, naming the mismatch
    other = build_tiny_llm(tmp_path / "other_llm", hidden_size=32)
    with pytest.raises(CheckpointError, match="llm_dim 64 .checkpoint. vs 32"):
        SpeechLLM.from_pretrained(out, llm=str(other))
    (out / "adapter.safetensors").unlink()
    with pytest.raises(CheckpointError, match="adapter.safetensors: missing"):
        SpeechLLM.from_pretrained(out)
    with pytest.raises(CheckpointError, match="speechllm_config.json: missing"):
        SpeechLLM.from_pretrained(tmp_path)


def test_format_1_checkpoint_loads_with_the_settings_it_was_trained_with(tiny_whisper_dir, tiny_llm_dir, tmp_path):
    """Checkpoints written before qformer_context/frame_norm existed were DeSTA2's window Q-Former
    without frame normalisation; today's defaults differ, so loading must not apply them."""
    from safetensors.torch import load_file

    from speechllm.models import SpeechLLM

    old = SpeechLLM.from_config(make_config(tiny_whisper_dir, tiny_llm_dir, qformer_context="window",
                                            frame_norm="none"), seed=0)
    out = tmp_path / "v1"
    old.save_pretrained(out)
    meta = json.loads((out / "speechllm_config.json").read_text())
    meta["format_version"] = 1
    for key in ("qformer_context", "frame_norm", "frame_norm_rows"):
        meta["model"].pop(key)
    (out / "speechllm_config.json").write_text(json.dumps(meta))
    loaded = SpeechLLM.from_pretrained(out)
    assert (loaded.config.qformer_context, loaded.config.frame_norm) == ("window", "none")
    assert loaded.adapter.frame_norm is None and loaded.adapter.reads_padding
    assert set(load_file(str(out / "adapter.safetensors"))) == set(loaded.adapter.state_dict())


def test_lora_off_by_default_on_when_asked_and_saved_in_peft_format(tiny_whisper_dir, tiny_llm_dir, tmp_path,
                                                                    base_llm):
    from speechllm.models import SpeechLLM

    plain = SpeechLLM.from_config(make_config(tiny_whisper_dir, tiny_llm_dir))
    assert not any("lora" in n for n, _ in plain.named_parameters())
    cfg = make_config(tiny_whisper_dir, tiny_llm_dir, lora=LoraConfig(enabled=True, r=4, alpha=8))
    m = SpeechLLM.from_config(cfg)
    lora = [n for n, p in m.named_parameters() if p.requires_grad and "lora" in n]
    assert lora and all(any(t in n for t in ("q_proj", "k_proj", "v_proj")) for n in lora)
    text = m.prepare_batch([CHAT[:1] + [{"role": "assistant", "content": "ok"}]], [[tone(1.0)]])
    text_only = m.prepare_batch([[{"role": "user", "content": "Hi there"}]])
    with torch.inference_mode():
        ref = base_llm(text_only.input_ids).logits
    assert torch.allclose(m(text_only, return_logits=True).logits, ref, atol=1e-6)  # B starts at zero
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    moved = m(text_only, return_logits=True).logits
    assert not torch.allclose(moved, ref, atol=1e-3)  # LoRA changes text-only behaviour
    m.save_pretrained(tmp_path / "lora_ckpt")
    assert (tmp_path / "lora_ckpt" / "lora" / "adapter_model.safetensors").is_file()
    back = SpeechLLM.from_pretrained(tmp_path / "lora_ckpt")
    assert back.config.lora.enabled
    assert torch.equal(back(text_only, return_logits=True).logits, moved)
    assert torch.equal(back(text, return_logits=True).logits, m(text, return_logits=True).logits)


def _hf_to_openai(name: str) -> str | None:
    """Independent reverse map (HF -> openai-whisper names) for building a .pt in the test."""
    if name == "proj_out.weight":
        return None
    name = name.removeprefix("model.")
    fixed = {
        "encoder.embed_positions.weight": "encoder.positional_embedding",
        "encoder.layer_norm.weight": "encoder.ln_post.weight",
        "encoder.layer_norm.bias": "encoder.ln_post.bias",
        "decoder.embed_positions.weight": "decoder.positional_embedding",
        "decoder.embed_tokens.weight": "decoder.token_embedding.weight",
        "decoder.layer_norm.weight": "decoder.ln.weight",
        "decoder.layer_norm.bias": "decoder.ln.bias",
    }
    if name in fixed:
        return fixed[name]
    pieces = [
        ("self_attn.q_proj", "attn.query"), ("self_attn.k_proj", "attn.key"), ("self_attn.v_proj", "attn.value"),
        ("self_attn.out_proj", "attn.out"), ("self_attn_layer_norm", "attn_ln"),
        ("encoder_attn.q_proj", "cross_attn.query"), ("encoder_attn.k_proj", "cross_attn.key"),
        ("encoder_attn.v_proj", "cross_attn.value"), ("encoder_attn.out_proj", "cross_attn.out"),
        ("encoder_attn_layer_norm", "cross_attn_ln"), ("fc1", "mlp.0"), ("fc2", "mlp.2"),
        ("final_layer_norm", "mlp_ln"),
    ]
    name = name.replace(".layers.", ".blocks.")
    for hf, oa in pieces:
        if f".{hf}." in name:
            return name.replace(f".{hf}.", f".{oa}.")
    return name  # conv1/conv2


def test_openai_whisper_pt_checkpoint_loads_into_the_same_encoder(tiny_whisper_dir, tmp_path):
    from transformers import WhisperForConditionalGeneration

    from speechllm.models.encoder import WhisperTapEncoder, load_whisper

    hf = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    c = hf.config
    state = {k2: v.clone() for k, v in hf.state_dict().items() if (k2 := _hf_to_openai(k))}
    dims = dict(n_mels=c.num_mel_bins, n_vocab=c.vocab_size, n_audio_ctx=c.max_source_positions,
                n_audio_state=c.d_model, n_audio_head=c.encoder_attention_heads, n_audio_layer=c.encoder_layers,
                n_text_ctx=c.max_target_positions, n_text_state=c.d_model, n_text_head=c.decoder_attention_heads,
                n_text_layer=c.decoder_layers)
    # openai-whisper's tiny uses 4*d FFNs; the fixture's tiny model uses 2*d, so use its real widths
    assert c.encoder_ffn_dim == 2 * c.d_model
    pt = tmp_path / "tiny.pt"
    torch.save({"dims": dims, "model_state_dict": state}, pt)
    from speechllm.errors import ModelResolutionError

    with pytest.raises(ModelResolutionError, match="do not fit"):
        load_whisper(str(pt))  # 4*d FFN expected by the format: the 2*d weights are refused
    # now a checkpoint with openai's 4*d FFN shape
    from transformers import WhisperConfig

    cfg4 = WhisperConfig(**{**c.to_dict(), "encoder_ffn_dim": 4 * c.d_model, "decoder_ffn_dim": 4 * c.d_model})
    torch.manual_seed(1)
    hf4 = WhisperForConditionalGeneration(cfg4).eval()
    state4 = {k2: v.clone() for k, v in hf4.state_dict().items() if (k2 := _hf_to_openai(k))}
    torch.save({"dims": dims, "model_state_dict": state4}, pt)
    loaded, extractor, tok, resolved = load_whisper(str(pt))
    assert resolved == str(pt.resolve())
    assert loaded.config.decoder_start_token_id == 50257 and loaded.config.eos_token_id == 50256
    enc_a = WhisperTapEncoder(hf4, extractor, tok, [0, 1, 2])
    enc_b = WhisperTapEncoder(loaded, extractor, tok, [0, 1, 2])
    mel = enc_a.mel([tone(1.0)])
    with torch.inference_mode():
        ta, fa = enc_a.forward_mel(mel, need_final=True)
        tb, fb = enc_b.forward_mel(mel, need_final=True)
        la = hf4(input_features=mel, decoder_input_ids=torch.tensor([[50257]])).logits
        lb = loaded(input_features=mel, decoder_input_ids=torch.tensor([[50257]])).logits
    assert all(torch.equal(a, b) for a, b in zip(ta, tb, strict=True)) and torch.equal(fa, fb)
    assert torch.equal(la, lb)  # decoder and tied output projection converted too


def test_whisper_transcript_enters_the_span_truncated(tiny_whisper_dir, tiny_llm_dir):
    from speechllm.models import SpeechLLM

    m = SpeechLLM.from_config(make_config(tiny_whisper_dir, tiny_llm_dir, transcript_source="whisper",
                                          use_vad=False, max_transcript_tokens=5))
    batch = m.prepare_batch([USER], [[tone(1.0)]])
    text = batch.transcripts[0][0]
    assert text  # the random tiny decoder always says something without VAD
    n_ids = len(m.tokenizer(text, add_special_tokens=False)["input_ids"])
    plain = m.prepare_batch([USER], [[tone(1.0)]], [[""]])
    assert batch.input_ids.shape[1] - plain.input_ids.shape[1] == min(5, n_ids)
    # with VAD, a pure tone is not speech: empty transcript, no ASR
    m.config.use_vad = True
    assert m.transcribe([tone(1.0)]) == [""]
    assert math.isclose(len(tone(1.0)) / SR, 1.0)


def test_onednn_is_off_only_for_small_steps_inside_the_block():
    from torch import nn

    from speechllm.models.cpu_decode import onednn_off_for_small_steps

    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(8, 8).to(torch.bfloat16)

        def forward(self, input_ids):
            seen.append(torch.backends.mkldnn.enabled)
            return self.proj(torch.ones(*input_ids.shape, 8, dtype=torch.bfloat16))

    probe = Probe()
    before = torch.backends.mkldnn.enabled
    with onednn_off_for_small_steps(probe, enabled=True):
        probe(input_ids=torch.zeros(1, 50, dtype=torch.long))  # prefill: oneDNN stays on
        probe(input_ids=torch.zeros(1, 1, dtype=torch.long))  # decode step: off
    probe(input_ids=torch.zeros(1, 1, dtype=torch.long))  # outside: untouched
    assert seen == [True, False, before] and torch.backends.mkldnn.enabled == before


def test_block_output_taps_are_raw_blocks_and_hidden_states_keep_hf_numbering(tiny_whisper_dir):
    """tap_point=block_output (DeSTA2.5): index i is block i's raw output (0-based), the last
    block without the closing LayerNorm; hidden_states (default) is HF's tuple."""
    from speechllm.errors import ModelResolutionError
    from speechllm.models.encoder import WhisperTapEncoder, default_encoder_layers, load_whisper

    whisper, extractor, tok, _ = load_whisper(str(tiny_whisper_dir))
    n = whisper.config.encoder_layers
    wave = np.random.default_rng(0).standard_normal(SR).astype(np.float32) * 0.1
    mel = extractor([wave], sampling_rate=SR, return_tensors="pt", padding="max_length").input_features
    with torch.no_grad():
        hf = whisper.model.encoder(mel, output_hidden_states=True).hidden_states
    hidden = WhisperTapEncoder(whisper, extractor, tok, list(range(n + 1)))
    blocks = WhisperTapEncoder(whisper, extractor, tok, list(range(n)), tap_point="block_output")
    with torch.no_grad():
        h_taps, _ = hidden.forward_mel(mel)
        b_taps, final = blocks.forward_mel(mel, need_final=True)
    for i in range(n + 1):
        assert torch.allclose(h_taps[i], hf[i], atol=1e-6)
    for i in range(n - 1):
        assert torch.equal(b_taps[i], h_taps[i + 1])
    # The last block: raw here, after the closing LayerNorm in hidden_states.
    assert torch.allclose(whisper.model.encoder.layer_norm(b_taps[n - 1]), h_taps[n], atol=1e-6)
    assert not torch.allclose(b_taps[n - 1], h_taps[n], atol=1e-3)
    assert torch.allclose(final, hf[n], atol=1e-6)  # Whisper's own transcript still reads the normalised output
    with pytest.raises(ModelResolutionError, match=f"0..{n - 1}"):
        WhisperTapEncoder(whisper, extractor, tok, [n], tap_point="block_output")
    assert default_encoder_layers(32, tap_point="block_output") == [7, 15, 23, 31]
    assert default_encoder_layers(12, tap_point="block_output") == [2, 5, 8, 11]
    assert default_encoder_layers(4, tap_point="block_output") == [0, 1, 2, 3]
    assert default_encoder_layers(12, "mlp", tap_point="block_output") == [11]


def test_qformer_init_pytorch_is_desta_s_and_bert_stays_the_default():
    from speechllm.models.adapters import AdapterSpec, QFormerAdapter

    spec = AdapterSpec(encoder_dim=768, encoder_heads=12, num_taps=4, llm_dim=64)
    torch.manual_seed(0)
    bert = QFormerAdapter(spec, num_layers=1)
    torch.manual_seed(0)
    desta = QFormerAdapter(spec, num_layers=1, init="pytorch")
    q_bert, q_desta = bert.layers[0].self_attn.q, desta.layers[0].self_attn.q
    assert abs(q_bert.weight.std().item() - 0.02) < 1e-3 and not q_bert.bias.any()
    # torch's Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    bound = 768 ** -0.5
    assert abs(q_desta.weight.std().item() - bound / 3 ** 0.5) < 1e-3
    assert q_desta.bias.abs().max().item() <= bound and q_desta.bias.abs().mean().item() > bound / 4
    with pytest.raises(Exception, match="qformer_init"):
        QFormerAdapter(spec, init="xavier")


def test_desta25_vad_blanks_a_given_transcript_of_non_speech(model, real_audio_dir):
    """vad_on_given_transcripts (DeSTA2.5): a given transcript of audio without speech becomes
    blank, which enters the span as no_speech_transcript (one space: 64 + 1)."""
    from speechllm.audio.io import load_audio

    speech = load_audio(str(real_audio_dir / "198-209-0000.ogg"))[: 3 * SR]
    old = (model.config.vad_on_given_transcripts, model.config.no_speech_transcript)
    try:
        given = [["the birch canoe"], ["the birch canoe"]]
        kept = model.prepare_batch([USER, USER], [[tone(1.0)], [speech]], given)
        assert kept.transcripts == given  # default: a given transcript is used as given
        model.config.vad_on_given_transcripts, model.config.no_speech_transcript = True, " "
        batch = model.prepare_batch([USER, USER], [[tone(1.0)], [speech]], given)
        assert batch.transcripts == [[""], ["the birch canoe"]]
        n_text = len(model.tokenizer("the birch canoe", add_special_tokens=False)["input_ids"])
        assert int(batch.attention_mask[0].sum()) == int(kept.attention_mask[0].sum()) - n_text + 1
    finally:
        model.config.vad_on_given_transcripts, model.config.no_speech_transcript = old
