"""Update scopes (speechllm.models.llm_update): per scope, a few training steps move exactly the
trained LLM weights and leave every frozen one bit-identical; regularisers without trained LLM
weights are a one-line ConfigError; a scope's checkpoint reloads its weights."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import tiny_run_config, write_replay, write_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("scope_data")
    return {"train": write_rows(d, 8), "replay": write_replay(d)}


def _llm_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.llm.named_parameters()}


SCOPES = {
    "lora": ({"enabled": True, "r": 2}, {}, lambda n: ".lora_" in n),
    "dora": ({"enabled": True, "r": 2, "method": "dora"}, {}, lambda n: ".lora_" in n),
    "ia3": ({"enabled": True, "method": "ia3"}, {}, lambda n: "ia3_" in n),
    "last-layer": ({}, {"last_layers": 1}, lambda n: ".layers.1." in n),
    "embeddings+norms": ({}, {"patterns": ["embed_tokens", r"norm\.weight$"]},
                         lambda n: "embed_tokens" in n or n.endswith("norm.weight")),
}


@pytest.mark.parametrize("scope", list(SCOPES))
def test_scope_moves_only_its_weights(scope, tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer

    lora, llm_train, is_trained = SCOPES[scope]
    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / scope, max_steps=3,
                          lr=1e-2, l2sp_alpha=0.01)
    for k, v in lora.items():
        setattr(cfg.model.lora, k, v)
    for k, v in llm_train.items():
        setattr(cfg.model.llm_train, k, v)
    trainer = Trainer(cfg)
    before = _llm_state(trainer.model)
    trained = {n for n in trainer.llm_trainable()}
    assert trained and all(is_trained(n.split("llm.", 1)[1]) for n in trained), sorted(trained)[:5]
    result = trainer.run()
    after = _llm_state(trainer.model)
    moved = {n for n in before if not torch.equal(before[n], after[n])}
    frozen_changed = [n for n in moved if f"llm.{n}" not in trained]
    assert not frozen_changed, frozen_changed[:5]
    assert moved, "no trained weight moved"
    assert "loss_l2sp" in result.losses[-1]
    # The checkpoint holds the scope's weights: the reloaded LLM gives the trained logits.
    again = SpeechLLM.from_pretrained(result.final_checkpoint)
    ids = torch.tensor([[1, 5, 9, 13]])
    with torch.no_grad():
        want = trainer.model.eval().llm(input_ids=ids).logits
        got = again.llm(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)


def test_base_forward_of_weights_trained_in_place_is_the_base(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    """disable_lora runs the base values of in-place weights (KL-to-base, STM and the KL teacher)."""
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "b", max_steps=3, lr=1e-2)
    cfg.model.llm_train.last_layers = 2
    trainer = Trainer(cfg)
    batch = trainer.builder.build([trainer.dataset[0], trainer.dataset[1]])
    with torch.no_grad():
        start = trainer.model.response_forward(batch.speech, disable_lora=True).logits
    trainer.run()
    with torch.no_grad():
        base = trainer.model.response_forward(batch.speech, disable_lora=True).logits
        tuned = trainer.model.response_forward(batch.speech).logits
    assert not torch.allclose(base, tuned)
    # The adapter moved too, so compare the LLM part only: same embeddings in, base weights.
    embeds = trainer.model.embed(batch.speech)
    with torch.no_grad():
        a = trainer.model.response_forward(batch.speech, inputs_embeds=embeds, disable_lora=True).logits
        trainer.model.llm_base_values = {}
        b = trainer.model.response_forward(batch.speech, inputs_embeds=embeds).logits
    assert not torch.allclose(a, b)
    assert start.shape == base.shape


@pytest.mark.parametrize("field", ["l2sp_alpha", "ewc_lambda", "replay_kl_weight"])
def test_regularisers_without_trained_llm_weights_are_a_config_error(field, tiny_llm_dir, tiny_whisper_dir, data,
                                                                     tmp_path):
    from speechllm.errors import ConfigError
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / field, **{field: 0.5})
    cfg.data.replay = [str(data["replay"])]
    cfg.data.replay_ratio = 0.25
    with pytest.raises(ConfigError, match=f"train.{field}: 0.5 regularises trained LLM weights") as e:
        Trainer(cfg)
    assert "\n" not in str(e.value)


def test_a_pattern_that_matches_nothing_is_named(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.errors import ConfigError
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "p")
    cfg.model.llm_train.patterns = ["no_such_weight"]
    with pytest.raises(ConfigError, match="model.llm_train.patterns: 'no_such_weight' matches no LLM parameter"):
        Trainer(cfg)


def test_merge_interpolates_weights_trained_in_place_and_ia3(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    """λ = 0 gives the base LLM's logits, λ = 1 the trained ones, for in-place weights and IA3."""
    from speechllm.llm_runtime import load_causal_lm
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer
    from speechllm.train.merge import merge_checkpoint

    ids = torch.tensor([[1, 5, 9, 13]])
    for name, setup in (("inplace", lambda c: setattr(c.model.llm_train, "last_layers", 1)),
                        ("ia3", lambda c: (setattr(c.model.lora, "enabled", True),
                                           setattr(c.model.lora, "method", "ia3")))):
        cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / name, max_steps=2, lr=3e-2)
        setup(cfg)
        result = Trainer(cfg).run()
        zero, one = merge_checkpoint(result.final_checkpoint, tmp_path / f"{name}_merged", [0.0, 1.0])
        with torch.no_grad():
            trained = SpeechLLM.from_pretrained(result.final_checkpoint).llm(input_ids=ids).logits
            at_one = SpeechLLM.from_pretrained(one).llm(input_ids=ids).logits
            at_zero = SpeechLLM.from_pretrained(zero).llm(input_ids=ids).logits
            plain = load_causal_lm(str(tiny_llm_dir)).model(input_ids=ids).logits
        assert torch.allclose(at_one, trained, atol=1e-6), name
        assert torch.allclose(at_zero, plain, atol=1e-5), name
        assert not torch.allclose(trained, plain, atol=1e-5), name


@pytest.mark.parametrize("init_text", ["", "Answer about the audio."])
def test_prompt_tuning_moves_only_the_virtual_tokens(init_text, tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    """model.prompt_tuning: the LLM stays bit-identical, the virtual tokens (regularised by L2-SP and
    KL-to-base like trained LLM weights) move, and the checkpoint reloads them; merge refuses them."""
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer
    from speechllm.train.merge import LoraMergeError, merge_checkpoint

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "pt", max_steps=3, lr=1e-2,
                          l2sp_alpha=0.01, replay_kl_weight=0.5)
    cfg.data.replay = [str(data["replay"])]
    cfg.data.replay_ratio = 0.25
    cfg.model.prompt_tuning.num_tokens = 4
    cfg.model.prompt_tuning.init_text = init_text
    trainer = Trainer(cfg)
    model = trainer.model
    start = model.prompt_embeddings.detach().clone()
    if init_text:  # initialised from the text's token embeddings, repeated
        ids = model.tokenizer(init_text, add_special_tokens=False)["input_ids"]
        ids = (ids * 4)[:4]
        assert torch.equal(start, model.llm.get_input_embeddings().weight[torch.tensor(ids)].detach())
    assert set(trainer.llm_trainable()) == {"prompt_embeddings"}
    before = _llm_state(model)
    result = trainer.run()
    assert not [n for n, v in _llm_state(model).items() if not torch.equal(v, before[n])]
    assert not torch.equal(start, model.prompt_embeddings.detach())
    assert "loss_l2sp" in result.losses[-1]
    # Every row starts with the 4 virtual tokens: never a target; the base forward masks them out.
    batch = trainer.builder.build([trainer.dataset[0], trainer.dataset[1]]).speech
    where = model.prompt_mask(batch.attention_mask)
    assert where.sum(1).tolist() == [4, 4] and (batch.labels[where] == -100).all()
    model.eval()
    with torch.no_grad():
        tuned = model.response_forward(batch).logits
        base = model.response_forward(batch, disable_lora=True).logits
        kept = model.prompt_embeddings.detach().clone()
        model.prompt_embeddings.mul_(5.0)  # the base forward does not read the virtual tokens
        assert torch.equal(base, model.response_forward(batch, disable_lora=True).logits)
        model.prompt_embeddings.copy_(kept)
    assert not torch.allclose(tuned, base)
    again = SpeechLLM.from_pretrained(result.final_checkpoint)
    assert torch.equal(again.prompt_embeddings, model.prompt_embeddings.detach())
    assert not again.prompt_embeddings.requires_grad
    with torch.no_grad():
        assert torch.allclose(again.response_forward(batch).logits, tuned, atol=1e-5)
    # generate reads the same layout: its first greedy token is the forward's argmax after the prompt.
    chat = [{"role": "user", "content": "Hi"}]
    prompt = again.prepare_batch([chat], add_generation_prompt=True)
    with torch.no_grad():
        first = again.llm(**again.llm_inputs(prompt)).logits[0, -1].argmax()
    want = again.tokenizer.decode([int(first)], skip_special_tokens=True).strip()
    assert again.generate(chat, max_new_tokens=1) == want
    with pytest.raises(LoraMergeError, match="a prompt-tuning checkpoint"):
        merge_checkpoint(result.final_checkpoint, tmp_path / "m", [0.0])


@pytest.mark.parametrize("init_text", ["", "Answer about the audio."])
def test_prefix_tuning_moves_only_the_prefix_and_generate_reads_it(init_text, tiny_llm_dir, tiny_whisper_dir, data,
                                                                     tmp_path):
    """model.prefix_tuning: the LLM and everything frozen stay bit-identical, the per-layer key/value
    prefix moves; the base forward reads no prefix; the checkpoint reloads the same logits; generate
    (the same KV cache pre-filled) starts with the training forward's argmax; merge and gradient
    checkpointing refuse it."""
    from speechllm.errors import ConfigError
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer
    from speechllm.train.merge import LoraMergeError, merge_checkpoint

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "px", max_steps=3, lr=1e-2,
                          l2sp_alpha=0.01)
    cfg.model.prefix_tuning.num_tokens = 3
    cfg.model.prefix_tuning.init_text = init_text
    trainer = Trainer(cfg)
    model = trainer.model
    start = model.prefix_kv.detach().clone()
    assert start.shape[:2] == (model.llm.config.num_hidden_layers, 2) and start.shape[3] == 3
    assert set(trainer.llm_trainable()) == {"prefix_kv"}
    before = _llm_state(model)
    result = trainer.run()
    assert not [n for n, v in _llm_state(model).items() if not torch.equal(v, before[n])]
    assert not torch.equal(start, model.prefix_kv.detach())
    assert "loss_l2sp" in result.losses[-1]
    batch = trainer.builder.build([trainer.dataset[0], trainer.dataset[1]]).speech
    model.eval()
    with torch.no_grad():
        tuned = model.response_forward(batch).logits
        base = model.response_forward(batch, disable_lora=True).logits
        kept = model.prefix_kv.detach().clone()
        model.prefix_kv.mul_(5.0)  # the base forward does not read the prefix
        assert torch.equal(base, model.response_forward(batch, disable_lora=True).logits)
        model.prefix_kv.copy_(kept)
    assert not torch.allclose(tuned, base)
    again = SpeechLLM.from_pretrained(result.final_checkpoint)
    assert torch.equal(again.prefix_kv, model.prefix_kv.detach()) and not again.prefix_kv.requires_grad
    with torch.no_grad():
        assert torch.allclose(again.response_forward(batch).logits, tuned, atol=1e-5)
        again.prefix_kv.mul_(30.0)  # a prefix the answer clearly depends on
    # generate reads the same cache: its first step's logits are the training forward's, for a
    # left-padded batch of two prompts of different lengths (scores captured from the LLM's generate).
    chats = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "What can you hear, please?"}]]
    prompt = again.prepare_batch(chats, add_generation_prompt=True)
    with torch.no_grad():
        logits = again.llm(**again.llm_inputs(prompt), use_cache=False).logits[:, -1]
        bare = again.llm(input_ids=prompt.input_ids, attention_mask=prompt.attention_mask).logits[:, -1]
    assert not torch.allclose(logits, bare, atol=1e-3)  # the prefix is read
    real_generate, scores = again.llm.generate, []

    def spy(**kwargs):
        out = real_generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        scores.append(out.scores[0])
        return out.sequences

    again.llm.generate = spy
    texts = again.generate(chats, max_new_tokens=2)
    assert len(texts) == 2 and torch.allclose(scores[0], logits, atol=1e-4)
    with pytest.raises(LoraMergeError, match="a prefix-tuning checkpoint"):
        merge_checkpoint(result.final_checkpoint, tmp_path / "m", [0.0])
    cfg.train.gradient_checkpointing = True
    with pytest.raises(ConfigError, match="model.prefix_tuning with train.gradient_checkpointing"):
        Trainer(cfg)
