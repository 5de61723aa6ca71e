"""Training: loss goes down, only the adapter moves, exact resume, global token normalisation,
sampler (replay ratio, rank split, resume), STM, KL, merge, feature cache, bad rows."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_fixtures import tiny_run_config, write_replay, write_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    return {"train": write_rows(d, 8, bad=1), "replay": write_replay(d), "dir": d}


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_loss_decreases_only_adapter_changes_and_final_loads(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "run", max_steps=8,
                          num_sample_generations=1)
    cfg.data.valid = str(data["train"])
    trainer = Trainer(cfg)
    llm0, enc0, ad0 = _state(trainer.model.llm), _state(trainer.model.encoder.whisper), _state(trainer.model.adapter)
    result = trainer.run()
    losses = [r["loss"] for r in result.losses]
    assert result.status == "finished" and len(losses) == 8
    assert sum(losses[-2:]) / 2 < losses[0]
    for k, v in _state(trainer.model.llm).items():
        assert torch.equal(v, llm0[k]), k
    for k, v in _state(trainer.model.encoder.whisper).items():
        assert torch.equal(v, enc0[k]), k
    assert any(not torch.equal(v, ad0[k]) for k, v in _state(trainer.model.adapter).items())
    # The missing-audio row is skipped and counted, not a crash.
    assert result.skipped.get("missing", 0) >= 1
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"]["missing"] >= 1
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "plots/training_curves.png"):
        assert (tmp_path / "run" / name).is_file()
    valid = json.loads((tmp_path / "run" / "valid.jsonl").read_text().splitlines()[-1])
    assert valid["step"] == 8 and math.isfinite(valid["valid_loss"]) and valid["valid_tokens"] > 0
    assert len(valid["samples"]) == 1 and isinstance(valid["samples"][0]["generated"], str)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    loaded = SpeechLLM.from_pretrained(result.final_checkpoint)
    for k, v in loaded.adapter.state_dict().items():
        assert torch.equal(v, trainer.model.adapter.state_dict()[k]), k


def test_stop_and_resume_reproduces_losses(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer

    def cfg(out):
        return tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], out, max_steps=5, keep_last=2)

    full = Trainer(cfg(tmp_path / "a")).run()
    first = Trainer(cfg(tmp_path / "b")).run(stop_at_step=2)
    assert first.status == "stopped" and first.step == 2
    assert (tmp_path / "b" / "checkpoints" / "step-00000002" / "model" / "adapter.safetensors").is_file()
    second = Trainer(cfg(tmp_path / "b")).run(resume="auto")
    resumed = [r["loss"] for r in first.losses + second.losses]
    straight = [r["loss"] for r in full.losses]
    assert len(resumed) == len(straight) == 5
    for a, b in zip(resumed, straight):
        assert abs(a - b) < 1e-6, (resumed, straight)


def test_two_micro_batches_give_the_big_batch_gradient(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "g")
    cfg.model.adapter_dropout = 0.0
    trainer = Trainer(cfg)
    ds = trainer.dataset
    rows = [ds[i] for i in (0, 1, 2)]  # responses of different lengths: unequal token counts
    big = trainer.builder.build(rows)
    small = [trainer.builder.build(rows[:1]), trainer.builder.build(rows[1:])]
    assert small[0].num_targets != small[1].num_targets
    trainer.accumulate_gradients([rows])
    g_big = [p.grad.clone() for p in trainer.trainable]
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.accumulate_gradients([rows[:1], rows[1:]])
    g_acc = [p.grad.clone() for p in trainer.trainable]
    assert big.num_targets == small[0].num_targets + small[1].num_targets
    for a, b in zip(g_big, g_acc):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer

    grads, losses = [], []
    for checkpointing in (False, True):
        cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / str(checkpointing),
                              gradient_checkpointing=checkpointing)
        cfg.model.adapter_dropout = 0.0
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        assert trainer.model.base_causal_lm().is_gradient_checkpointing is checkpointing
        rows = [trainer.dataset[i] for i in (0, 1, 2)]
        losses.append(trainer.accumulate_gradients([rows]).losses["ce"])
        grads.append([p.grad.clone() for p in trainer.trainable])
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert all(g.abs().sum() > 0 for g in grads[0][:3])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_sampler_replay_ratio_rank_split_and_resume():
    from speechllm.train.sampler import BucketingBatchSampler

    costs = [float(i % 7) for i in range(37)]
    replay = list(range(37, 47))
    s = BucketingBatchSampler(costs, batch_size=8, seed=3, replay=replay, replay_ratio=0.25)
    plan = s.global_plan(0)
    n_replay = sum(1 for b in plan for i in b if i >= 37)
    n_total = sum(len(b) for b in plan)
    assert abs(n_replay / n_total - 0.25) < 0.03
    assert sorted(i for b in plan for i in b if i < 37) == list(range(37))  # every main row once
    assert s.global_plan(0) == plan and s.global_plan(1) != plan  # deterministic, reshuffled per epoch
    # Two ranks: same number of batches (no rank waits), disjoint halves of the plan.
    r0 = BucketingBatchSampler(costs, batch_size=5, seed=1, rank=0, world_size=2)
    r1 = BucketingBatchSampler(costs, batch_size=5, seed=1, rank=1, world_size=2)
    assert len(r0.rank_plan(0)) == len(r1.rank_plan(0))
    # Resume: position restored -> the remaining batches are identical.
    it = iter(r0)
    next(it)
    r0.advance()
    state = r0.state_dict()
    fresh = BucketingBatchSampler(costs, batch_size=5, seed=1, rank=0, world_size=2)
    fresh.load_state_dict(state)
    assert list(fresh) == r0.rank_plan(0)[1:]


def test_replay_rows_are_mixed_into_training(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "r", max_steps=2)
    cfg.data.replay = [str(data["replay"])]
    cfg.data.replay_ratio = 0.25
    trainer = Trainer(cfg)
    plan = trainer.sampler.global_plan(0)
    replay_share = sum(1 for b in plan for i in b if i >= len(trainer.rows)) / sum(len(b) for b in plan)
    assert abs(replay_share - 0.25) < 0.05
    batch = trainer.builder.build([trainer.dataset[i] for i in plan[0]])
    assert any(batch.replay) and not all(batch.replay)
    result = trainer.run()
    assert all(math.isfinite(r["loss"]) for r in result.losses)


def test_stm_masks_a_planted_hard_token(tiny_llm_dir, tiny_whisper_dir):
    from speechllm.config import ModelConfig
    from speechllm.models import SpeechLLM
    from speechllm.models.chat_layout import ChatSequence, collate_left_padded
    from speechllm.models.speech_llm import SpeechBatch
    from speechllm.train import objectives as obj

    cfg = ModelConfig(encoder=str(tiny_whisper_dir), llm=str(tiny_llm_dir), dtype="fp32", num_queries=8,
                      qformer_layers=1, qformer_ffn_dim=64)
    model = SpeechLLM.from_config(cfg)
    with torch.no_grad():  # a confident base model: its greedy tokens get perplexity ~1
        model.llm.get_output_embeddings().weight.mul_(200.0)
    prompt = model.tokenizer("<|im_start|>user\nSay something.<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    ids = list(prompt)
    planted_at = None
    for step in range(8):
        with torch.no_grad():
            logits = model.llm(input_ids=torch.tensor([ids])).logits[0, -1]
        if step == 4:
            token, planted_at = int(logits.argmin()), len(ids)  # the least likely token: a hard one
        else:
            token = int(logits.argmax())
        ids.append(token)
    labels = [-100] * len(prompt) + ids[len(prompt):]
    t = collate_left_padded([ChatSequence(ids, labels, [False] * len(ids))], model.pad_id)
    batch = SpeechBatch(**t)
    ppl = obj.token_perplexities(model, batch)[0]
    mask = [p > 2.5 for p in ppl]
    assert mask[planted_at - len(prompt)] is True
    assert sum(mask) <= 2  # the planted token (and at most the one right after it)
    masked = obj.apply_token_mask(batch.labels, [mask])
    assert int(masked[0, planted_at]) == -100
    assert int((masked != -100).sum()) == len(ppl) - sum(mask)


def test_kl_is_zero_when_the_audio_span_equals_the_text_embeddings(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer
    from speechllm.train import objectives as obj

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "k",
                          objectives={"ce": 1.0, "kl": 1.0})
    trainer = Trainer(cfg)
    model = trainer.model
    batch = trainer.builder.build([trainer.dataset[0], trainer.dataset[1]])
    teacher = obj.teacher_forward(model, batch.text)
    # Student input = the text view's own token embeddings: the "audio" reads exactly the text.
    same = model.response_forward(batch.text,
                                  inputs_embeds=model.llm.get_input_embeddings()(batch.text.input_ids))
    assert float(obj.kl_sum(same.logits, teacher.logits, 2.0)) < 1e-8
    hearing = model.response_forward(batch.speech)
    kl = float(obj.kl_sum(obj.rows_logits(hearing, batch.text_rows), teacher.logits, 2.0).detach())
    assert kl > 1e-4
    sums = trainer.micro_losses(batch)
    assert set(sums) == {"ce", "kl"} and float(sums["kl"]) > 0


def test_kl_diva_stm_run_and_lora_merge(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer
    from speechllm.train.merge import merge_checkpoint

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "l", max_steps=3,
                          objectives={"ce": 1.0, "kl": 0.5, "diva": 0.1}, diva_num_align=2, stm_tau=1e9,
                          l2sp_alpha=0.1, ewc_lambda=0.1)
    cfg.model.lora.enabled = True
    cfg.model.lora.r = 2
    result = Trainer(cfg).run()
    rec = result.losses[-1]
    for key in ("loss_ce", "loss_kl", "loss_diva", "loss_l2sp", "loss_ewc"):
        assert key in rec and math.isfinite(rec[key]), rec
    out = merge_checkpoint(result.final_checkpoint, tmp_path / "merged", [0.0, 1.0])
    from speechllm.cli import main

    assert main(["merge", str(result.final_checkpoint), str(tmp_path / "cli_merged"), "--lambdas", "0.5"]) == 0
    assert (tmp_path / "cli_merged" / "lambda-0.5" / "lora" / "adapter_model.safetensors").is_file()
    assert main(["merge", str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 2  # one-line error, exit 2
    zero = SpeechLLM.from_pretrained(out[0])
    base_logits = zero.generate([{"role": "user", "content": "Say hello."}], max_new_tokens=4)
    with zero.llm.disable_adapter():
        assert zero.generate([{"role": "user", "content": "Say hello."}], max_new_tokens=4) == base_logits


def test_feature_cache_matches_the_encoder_and_refuses_other_taps(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer
    from speechllm.train.feature_cache import FeatureCache, FeatureCacheError, build_cache

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "c")
    trainer = Trainer(cfg)
    counts = build_cache(trainer.model, [str(data["train"])], tmp_path / "cache")
    assert counts["cached"] == 8 and counts["missing"] == 1
    cache = FeatureCache.open_for(tmp_path / "cache", trainer.model)
    ex = trainer.dataset[0]
    encoded, texts = cache.encoded([ex.id], "cpu")
    direct = trainer.model.encoder.encode([ex.wave])
    assert texts == ["the birch canoe"]
    n = direct.valid_frames[0]
    assert encoded.valid_frames == direct.valid_frames
    for a, b in zip(encoded.taps, direct.taps):  # the real frames (all a valid-context cache keeps)
        assert torch.allclose(a[:, :n], b[:, :n], atol=1e-2, rtol=1e-2)
    # Training reads the cache transparently; the bad row is skipped and counted.
    cfg.data.feature_cache = str(tmp_path / "cache")
    cfg.train.max_steps = 2
    cached_run = Trainer(cfg, model=trainer.model)
    assert cached_run.dataset.load_waves is False
    result = cached_run.run()
    assert result.status == "finished" and result.skipped.get("missing", 0) >= 1
    assert all(math.isfinite(r["loss"]) for r in result.losses)
    trainer.model.encoder.layers = [0, 2]
    with pytest.raises(FeatureCacheError, match="taps"):
        FeatureCache.open_for(tmp_path / "cache", trainer.model)


def test_interrupted_feature_cache_build_continues_from_its_finished_shards(tiny_llm_dir, tiny_whisper_dir, data,
                                                                            tmp_path):
    from speechllm.train import Trainer
    from speechllm.train.feature_cache import build_cache

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "c")
    trainer = Trainer(cfg)
    encoder = trainer.model.encoder
    real_encode, calls = encoder.encode, []

    def failing_encode(waves, **kw):
        calls.append(len(waves))
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped during the third shard
        return real_encode(waves, **kw)

    encoder.encode = failing_encode
    with pytest.raises(KeyboardInterrupt):
        build_cache(trainer.model, [str(data["train"])], tmp_path / "cache", batch_size=2, rows_per_shard=2)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert (tmp_path / "cache" / "cache_key.json").is_file()
    done = {k for k, v in index.items() if "shard" in v}
    assert len(done) == 4
    encoder.encode = real_encode
    counts = build_cache(trainer.model, [str(data["train"])], tmp_path / "cache", batch_size=2, rows_per_shard=2)
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert counts["cached"] == 4  # only what was left
    assert len({k for k, v in index.items() if "shard" in v}) == 8
    assert [v["error"] for v in index.values() if "error" in v] == ["missing"]
    assert len(list((tmp_path / "cache").glob("shard-*.safetensors"))) == 4


def test_feature_cache_keeps_only_real_frames_for_a_valid_context_qformer(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from safetensors import safe_open

    from speechllm.train import Trainer
    from speechllm.train.feature_cache import FeatureCache, FeatureCacheError, build_cache

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "c")
    cfg.model.qformer_context = "valid"
    trainer = Trainer(cfg)
    build_cache(trainer.model, [str(data["train"])], tmp_path / "cache")
    cache = FeatureCache.open_for(tmp_path / "cache", trainer.model)
    ids = [trainer.dataset[i].id for i in range(2)]
    entry = cache.index[ids[0]]
    with safe_open(str(tmp_path / "cache" / entry["shard"]), framework="pt") as f:
        assert f.get_tensor(f"{ids[0]}/0").shape[1] == entry["valid_frames"][0] < 1500
    encoded, _ = cache.encoded(ids, "cpu")
    direct = trainer.model.encoder.encode([trainer.dataset[i].wave for i in range(2)])
    assert encoded.valid_frames == direct.valid_frames
    assert encoded.taps[0].shape[1] == max(direct.valid_frames)
    with torch.no_grad():
        a, _ = trainer.model.adapter.eval()(encoded.taps, encoded.valid_frames)
        b, _ = trainer.model.adapter(direct.taps, direct.valid_frames)
    assert torch.allclose(a, b, atol=2e-2, rtol=2e-2)
    # A window-context adapter needs the padded frames: this cache is refused for it.
    trainer.model.adapter.reads_padding = True
    with pytest.raises(FeatureCacheError, match="frames"):
        FeatureCache.open_for(tmp_path / "cache", trainer.model)


def test_non_finite_loss_stops_with_step_ids_and_last_good_checkpoint(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.train import Trainer, TrainingDivergedError

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "nan", max_steps=4,
                          warmup_steps=0, scheduler="constant")
    trainer = Trainer(cfg)
    trainer.run(stop_at_step=1)
    with torch.no_grad():  # a blown-up adapter: the next forward gives inf/NaN
        trainer.model.adapter.proj.weight.fill_(float("inf"))
    with pytest.raises(TrainingDivergedError, match=r"step 2: .*not finite.*batch ids.*utt") as info:
        trainer.run(resume=None)
    assert "last-good-step-00000001" in str(info.value)
    assert (tmp_path / "nan" / "checkpoints" / "last-good-step-00000001" / "trainer_state.json").is_file()


def test_cli_sigterm_saves_and_exits_cleanly(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = {
        "model": {"encoder": str(tiny_whisper_dir), "llm": str(tiny_llm_dir), "dtype": "fp32", "num_queries": 8,
                  "qformer_layers": 1, "qformer_ffn_dim": 64, "use_vad": False},
        "data": {"train": [str(data["train"])], "max_length": 256},
        "train": {"output_dir": str(tmp_path / "sig"), "precision": "fp32", "batch_size": 2, "max_steps": 100000,
                  "save_every": 0, "eval_every": 0, "num_sample_generations": 0},
    }
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "speechllm", "train", "--config", str(recipe)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "stopped at step" in out
    saved = sorted((tmp_path / "sig" / "checkpoints").glob("step-*"))
    assert saved and (saved[-1] / "model" / "adapter.safetensors").is_file()


def test_frame_norm_is_fitted_from_training_audio_saved_and_reloaded(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.models import SpeechLLM
    from speechllm.train import Trainer

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / "run")
    cfg.model.frame_norm = "global"
    cfg.train.max_steps = 1
    trainer = Trainer(cfg)
    norm = trainer.model.adapter.frame_norm
    assert norm.fitted
    # The statistics are those of the real frames of the usable training rows.
    waves = [trainer.dataset[i].wave for i in range(trainer.dataset.num_audio)
             if getattr(trainer.dataset[i], "wave", None) is not None]
    enc = trainer.model.encoder.encode(waves)
    real = torch.cat([enc.taps[0][w, :n] for w, n in enumerate(enc.valid_frames)]).double()
    assert int(norm.count) == sum(enc.valid_frames)
    assert torch.allclose(norm.mean[0].double(), real.mean(0), atol=1e-3)
    want_std = (real.var(0, unbiased=False) + norm.eps).sqrt()
    assert torch.allclose(norm.std[0].double(), want_std, atol=1e-3, rtol=1e-3)
    normed = norm([t[:1] for t in enc.taps])[0][0, : enc.valid_frames[0]].float()
    assert torch.allclose(normed, ((enc.taps[0][0, : enc.valid_frames[0]].float() - norm.mean[0]) / norm.std[0]))
    result = trainer.run()
    assert result.status == "finished"
    loaded = SpeechLLM.from_pretrained(tmp_path / "run" / "final")
    assert loaded.adapter.frame_norm.fitted
    assert torch.equal(loaded.adapter.frame_norm.mean, norm.mean.cpu())
    # A fitted adapter (from a checkpoint) is not re-fitted.
    from speechllm.train.frame_stats import fit_frame_norm

    assert fit_frame_norm(loaded, trainer.dataset) is None
    assert torch.equal(loaded.adapter.frame_norm.mean, norm.mean.cpu())


def test_frame_norm_rejects_unknown_kinds(tiny_llm_dir, tiny_whisper_dir):
    from speechllm.config import ModelConfig
    from speechllm.errors import ConfigError
    from speechllm.models.adapters import AdapterSpec, build_adapter

    spec = AdapterSpec(encoder_dim=64, encoder_heads=2, num_taps=2, llm_dim=32)
    with pytest.raises(ConfigError, match="frame_norm"):
        build_adapter("qformer", spec, ModelConfig(frame_norm="cmvn", qformer_ffn_dim=64))
    assert build_adapter("mlp", spec, ModelConfig(frame_norm="global")).frame_norm is not None
    assert build_adapter("qformer", spec, ModelConfig(qformer_ffn_dim=64, frame_norm="none")).frame_norm is None


def test_shared_prefix_kv_gives_the_same_loss_and_gradients(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    """Starting the frozen LLM after the chat prefix all rows share (its KV computed once) gives
    the loss and gradients of the full forward, on rows of different lengths."""
    from speechllm.train import Trainer
    from speechllm.train.prefix_kv import FrozenPrefixKV

    system = {"role": "system", "content": "You describe sounds for a listener in a few plain words."}
    rows = [json.loads(x) for x in data["train"].read_text().splitlines() if x.strip()]
    with_system = data["dir"] / "with_system.jsonl"
    with_system.write_text("".join(json.dumps({**r, "messages": [system, *r["messages"]]}) + "\n" for r in rows))
    grads, losses = [], []
    for reuse in (False, True):
        cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [with_system], tmp_path / str(reuse),
                              reuse_prefix_kv=reuse)
        cfg.model.adapter_dropout = 0.0
        torch.manual_seed(0)
        trainer = Trainer(cfg)
        assert (trainer.prefix_kv is not None) is reuse
        items = [trainer.dataset[i] for i in (0, 1, 2, 3)]
        speech = trainer.builder.build(items).speech
        assert len(set(speech.attention_mask.sum(1).tolist())) > 1  # rows start at different columns
        shared = FrozenPrefixKV.shared_length(speech.input_ids, speech.attention_mask, speech.audio_mask)
        assert shared >= FrozenPrefixKV.MIN_LENGTH
        starts = speech.input_ids.shape[1] - speech.attention_mask.sum(1)
        for r, start in enumerate(starts.tolist()):  # the prefix ends before each row's audio span
            assert not speech.audio_mask[r, start:start + shared].any() and speech.audio_mask[r].any()
        losses.append(trainer.accumulate_gradients([items]).losses["ce"])
        grads.append([p.grad.clone() for p in trainer.trainable])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    lora = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [with_system], tmp_path / "lora")
    lora.model.lora.enabled = True
    assert Trainer(lora).prefix_kv is None  # LoRA moves the prefix's keys and values: no reuse


def test_stm_leaves_replay_rows_alone_unless_asked(tiny_llm_dir, tiny_whisper_dir, data, tmp_path):
    from speechllm.models.chat_layout import IGNORE_INDEX
    from speechllm.train import Trainer

    kept = {}
    for stm_replay in (False, True):
        cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [data["train"]], tmp_path / str(stm_replay),
                              stm_tau=1.0001, stm_replay=stm_replay)  # tau ~1 masks nearly every token
        cfg.data.replay, cfg.data.replay_ratio = [str(data["replay"])], 0.25
        trainer = Trainer(cfg)
        n = len(trainer.rows)
        batch = trainer.builder.build([trainer.dataset[i] for i in (0, 1, n, n + 1)])  # 2 audio, 2 replay rows
        assert batch.replay == [False, False, True, True]
        before = (batch.speech.labels != IGNORE_INDEX).sum(1)
        trainer.forgetting.apply_stm(batch)
        after = (batch.speech.labels != IGNORE_INDEX).sum(1)
        assert (after[:2] < before[:2]).all()  # audio rows lose their hard tokens either way
        kept[stm_replay] = (after[2:] == before[2:]).all().item()
        counted = int(before.sum()) if stm_replay else int(before[:2].sum())
        assert trainer.forgetting.stm_counts[1] == counted  # the masked share reports the rows STM applies to
    assert kept == {False: True, True: False}
