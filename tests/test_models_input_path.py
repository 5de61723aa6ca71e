"""One path for audio into the model: the training entry point (``TrainingDataset`` +
``BatchBuilder``) and the inference entry point (``SpeechLLM.prepare_batch``) give the same LLM
input for the same examples, bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from train_fixtures import write_rows


@pytest.mark.parametrize("adapter,source,virtual", [("qformer", "manifest", 0), ("mlp", "whisper", 0),
                                                    ("mlp", "manifest", 3)])
def test_training_and_inference_build_identical_inputs(tiny_llm_dir, tiny_whisper_dir, tmp_path, adapter, source,
                                                       virtual):
    from speechllm.config import ModelConfig
    from speechllm.models import SpeechLLM
    from speechllm.train.batch import BatchBuilder
    from speechllm.train.data import RowIndex, TrainingDataset, conversation_of

    cfg = ModelConfig(encoder=str(tiny_whisper_dir), llm=str(tiny_llm_dir), dtype="fp32", adapter=adapter,
                      num_queries=8, qformer_layers=1, qformer_ffn_dim=64, mlp_hidden=32, use_vad=False,
                      transcript_source=source)
    cfg.prompt_tuning.num_tokens = virtual  # prompt tuning: virtual tokens first in both paths
    model = SpeechLLM.from_config(cfg)
    path = write_rows(tmp_path, n=3)  # 0.5, 1.0 and 1.5 s: rows of different lengths, left-padded
    rows = RowIndex([path])
    dataset = TrainingDataset(rows, None, cfg, model.tokenizer)
    items = [dataset[i] for i in range(len(rows))]
    train = BatchBuilder(model, max_length=10_000).build(items).speech

    raw = [json.loads(line) for line in path.read_text().splitlines()]
    given = [[r["transcript"]] if source == "manifest" else [None] for r in raw]
    infer = model.prepare_batch([conversation_of(r) for r in raw], [[e.wave] for e in items], given)

    assert infer.input_ids.shape[1] > 0 and len({int(m.sum()) for m in infer.attention_mask}) == 3
    assert torch.equal(train.input_ids, infer.input_ids)
    assert torch.equal(train.attention_mask, infer.attention_mask)
    assert torch.equal(train.position_ids, infer.position_ids)
    assert torch.equal(train.audio_mask, infer.audio_mask)
    assert torch.equal(train.labels, infer.labels)
    assert train.transcripts == infer.transcripts
    with torch.no_grad():
        a = model.llm_inputs(train)["inputs_embeds"]
        b = model.llm_inputs(infer)["inputs_embeds"]
    assert torch.equal(a, b)
    if virtual:  # each row's first real positions hold the virtual tokens, never a target
        where = model.prompt_mask(infer.attention_mask)
        assert torch.equal(b[where], model.prompt_embeddings.detach().repeat(3, 1))
        assert (infer.labels[where] == -100).all() and (infer.position_ids[where].view(3, -1) == torch.arange(3)).all()
    # The generation prompt is the training sequence up to its response.
    prompt = model.prepare_batch([raw[0]["messages"]], [[items[0].wave]], [given[0]], add_generation_prompt=True)
    row = train.input_ids[0][train.attention_mask[0].bool()]
    assert torch.equal(prompt.input_ids[0], row[:prompt.input_ids.shape[1]])
    first_label = int((train.labels[0][train.attention_mask[0].bool()] != -100).nonzero()[0])
    assert first_label == prompt.input_ids.shape[1]
    # Each span is as long as the one length rule says.
    from speechllm.models.chat_layout import audio_slot, audio_span_length

    for e, (text,) in zip(items, train.transcripts, strict=True):
        slot = audio_slot(model.tokenizer, e.num_samples, text, cfg)
        assert len(slot) == audio_span_length(e.num_samples, len(slot.transcript_ids), cfg)
    spans = train.audio_mask.sum(1).tolist()
    assert spans == [audio_slot(model.tokenizer, e.num_samples, t, cfg).num_vectors
                     for e, (t,) in zip(items, train.transcripts, strict=True)]


def test_the_layout_asks_the_adapter_class_for_its_length_and_taps():
    from speechllm.config import ModelConfig
    from speechllm.errors import ConfigError
    from speechllm.models import adapters
    from speechllm.models.chat_layout import adapter_output_length, audio_span_length
    from speechllm.models.encoder import default_encoder_layers

    @adapters.register_adapter("every_second")
    class EverySecond(adapters.Adapter):  # one vector per started second, taps 0 and 1
        @classmethod
        def num_vectors(cls, num_samples, config):
            return -(-num_samples // 16_000)

        @classmethod
        def default_taps(cls, num_layers, tap_point):
            return [0, 1]

    try:
        cfg = ModelConfig(adapter="every_second", transcript_source="none")
        assert adapter_output_length(40_000, cfg) == 3
        assert audio_span_length(40_000, 5, cfg) == 3
        assert default_encoder_layers(12, "every_second") == [0, 1]
        assert "every_second" in adapters.adapter_names()
        assert not adapters.adapter_class("mlp").reads_padding_for(ModelConfig(adapter="mlp"))
        assert adapters.adapter_class("qformer").reads_padding_for(ModelConfig(qformer_context="window"))
    finally:
        del adapters._REGISTRY["every_second"]
    with pytest.raises(ConfigError, match="unknown adapter 'every_second'; known: mlp, qformer"):
        adapter_output_length(16_000, cfg)
