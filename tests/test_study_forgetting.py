"""`speechllm study forgetting` end to end at CI size (2 cells, 1 seed, 2 steps, tiny models), its
resume and refusal, and the target-source editors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf


def _corpus(folder):
    """A synth-style folder: train.jsonl / test.jsonl rows with gender labels and tone audio."""
    (folder / "wav").mkdir(parents=True)
    for split, n in (("train", 8), ("test", 4)):
        rows = []
        for i in range(n):
            rid = f"{split}{i}"
            t = np.arange(8000) / 16000
            sf.write(folder / "wav" / f"{rid}.wav", (0.3 * np.sin(2 * np.pi * (120 + 60 * i) * t)).astype(np.float32),
                     16000)
            rows.append({"id": rid, "audio": f"wav/{rid}.wav", "duration": 0.5, "transcript": "the birch canoe",
                         "attributes": {"gender": "female" if i % 2 else "male", "pitch": "high" if i % 2 else "low"}})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def _recipe(tmp_path, tiny_llm_dir, tiny_whisper_dir):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model:\n  encoder: {tiny_whisper_dir}\n  llm: {tiny_llm_dir}\n  dtype: fp32\n  num_queries: 8\n"
        "  qformer_layers: 1\n  qformer_ffn_dim: 64\n  use_vad: false\n  transcript_source: manifest\n"
        "data:\n  max_length: 256\n"
        "train:\n  precision: fp32\n  batch_size: 4\n  warmup_steps: 1\n  lr: 3.0e-3\n  log_every: 1\n",
        encoding="utf-8")
    return recipe


def test_minimum_change_and_verifier_are_deterministic_edits():
    from speechllm.study.targets import gold_answer, minimum_change, stated_gender, verified

    row = {"attributes": {"gender": "female", "pitch": "high", "speaking_rate": "slow"}}
    assert gold_answer(row) == "The speaker is a woman with a high-pitched voice, speaking at a slow pace."
    assert minimum_change("He is a man; his voice is calm.", row) == "She is a woman; her voice is calm."
    assert minimum_change("The woman speaks softly.", row) == "The woman speaks softly."  # already right
    assert minimum_change("A calm voice.", row) == gold_answer(row) + " A calm voice."  # states none: gold first
    assert stated_gender("Female speaker; not a man.") == "female"  # the first gender word decides
    assert stated_gender("The man or woman speaking is a female.") == "female"  # the question's echo is skipped
    assert minimum_change("A man or a woman? It is a man.", row) == "A man or a woman? It is a woman."
    assert verified("A man is talking.", row) == (gold_answer(row), False)
    assert verified("A woman is talking.", row) == ("A woman is talking.", True)


def test_study_ci_grid_table_plot_resume_and_refusal(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    from speechllm.cli import main
    from speechllm.study.forgetting import StudyError, run_study

    recipe = _recipe(tmp_path, tiny_llm_dir, tiny_whisper_dir)
    data = _corpus(tmp_path / "corpus")
    out = tmp_path / "study"
    args = ["study", "forgetting", "--recipe", str(recipe), "--out", str(out), "--grid", "ci", "--seeds", "1",
            "--steps", "2", "--data", str(data), "--eval-rows", "4"]
    assert main(args) == 0
    table = json.loads((out / "table.json").read_text())
    rows = {(e["cell"], e["merge"]): e for e in table["entries"]}
    assert set(rows) == {("self.adapter.plain", 1.0), ("gold.lora.plain", 1.0), ("gold.lora.plain", 0.5)}
    adapter, lora, half = rows["self.adapter.plain", 1.0], rows["gold.lora.plain", 1.0], rows["gold.lora.plain", 0.5]
    # A frozen LLM forgets nothing on text: KL-to-base and dNLL are 0 (to rounding), IF and refusal as the base.
    assert abs(adapter["kl_to_base"]) < 1e-6 and abs(adapter["delta_nll"]) < 1e-6
    assert adapter["if_rate"] == table["base"]["if_rate"] and adapter["refusal_rate"] == table["base"]["refusal_rate"]
    assert lora["kl_to_base"] > 0.0 and 0.0 < half["kl_to_base"] < lora["kl_to_base"]
    for e in rows.values():
        assert 0.0 <= e["acc_audio"] <= 1.0 and e["target_loss"] >= 0 and e["seeds"] == [0]
        assert -1.0 <= e["gap"] <= 1.0
    md = (out / "table.md").read_text()
    assert "| base LLM |" in md and "| self.adapter.plain | 1 | 1 |" in md and "| gold.lora.plain | 0.5 | 1 |" in md
    assert (out / "table.csv").read_text().splitlines()[0].startswith("cell,source,scope,control,merge,seeds")
    assert (out / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("gold", "self", "paraphrase", "minchange", "verified"):
        assert (out / "shared" / "targets" / f"{name}.train.jsonl").is_file()

    # Resume: the finished cells are not rerun (their results stay byte-identical).
    result = out / "cells" / "gold.lora.plain" / "seed0" / "result.json"
    before = result.read_bytes()
    result.touch()
    stamp = result.stat().st_mtime_ns
    assert main(args) == 0
    assert result.read_bytes() == before and result.stat().st_mtime_ns == stamp
    # --workers: child processes claim the unfinished cell (here one), the parent writes the table.
    redo = out / "cells" / "self.adapter.plain" / "seed0" / "result.json"
    redo.unlink()
    (out / "table.md").unlink()
    assert main(args + ["--workers", "2"]) == 0
    assert json.loads(redo.read_text())["rows"][0]["cell"] == "self.adapter.plain"
    assert result.read_bytes() == before and (out / "table.md").is_file()
    assert len(list((out / "cells").glob("*/seed0.claim"))) == 1  # one worker took it
    # Changed settings in the same folder are refused, naming the file.
    with pytest.raises(StudyError, match="study.json: this folder holds a study with other settings"):
        run_study(recipe, out, grid="ci", seeds=1, steps=3, data=str(data), eval_rows=4)


def test_warm_start_is_made_once_and_every_cell_starts_from_it(tiny_llm_dir, tiny_whisper_dir, tmp_path):
    """--warm-steps: one adapter trained alone on gold targets, its held-out point in the table, and
    each cell's adapter loaded from it (a LoRA cell too: the adapter's names do not change)."""
    from safetensors.torch import load_file, save_file

    from speechllm.config import RunConfig, load_config
    from speechllm.study.forgetting import (
        Cell,
        StudyError,
        StudySettings,
        cell_config,
        load_warm,
        run_study,
        warm_adapter_file,
    )
    from speechllm.train import Trainer

    recipe = _recipe(tmp_path, tiny_llm_dir, tiny_whisper_dir)
    data = _corpus(tmp_path / "corpus")
    out = tmp_path / "study"
    table = run_study(recipe, out, cells="self.adapter.plain", seeds=1, steps=1, data=str(data), eval_rows=4,
                      warm_steps=2)
    warm = json.loads((out / "shared" / "warm" / "warm.json").read_text())
    assert warm["steps"] == 2 and table["warm_start"] == warm and 0.0 <= warm["acc_audio"] <= 1.0
    assert "| warm start (adapter alone, 2 steps, seed 0) | - | 1 |" in (out / "table.md").read_text()
    assert not (out / "shared" / "warm" / "run").exists()  # its checkpoints are not kept
    weights = load_file(str(warm_adapter_file(out)))
    assert weights and all(not n.startswith("llm.") for n in weights)

    cfg = load_config(RunConfig, recipe, [])
    shared = {"targets": {"gold": {"train": out / "shared" / "targets" / "gold.train.jsonl",
                                   "held": out / "shared" / "targets" / "gold.held.jsonl"}}, "replay": {}}
    settings = StudySettings(recipe={}, steps=1, warm_steps=2)
    trainer = Trainer(cell_config(cfg, Cell("gold", "lora", "plain"), 1, shared, tmp_path / "run", settings,
                                  out / "shared" / "features"))
    named = trainer.trainable_named
    assert any(not torch_equal(named[n], t) for n, t in weights.items())  # another seed: another start
    load_warm(trainer, out)
    assert all(torch_equal(named[n], t) for n, t in weights.items())
    # A warm start that does not fit the cell's adapter is refused by name, not half loaded.
    save_file({"adapter.not_there": next(iter(weights.values()))}, str(warm_adapter_file(out)))
    with pytest.raises(StudyError, match="the warm start does not fit this cell's adapter .*adapter.not_there"):
        load_warm(trainer, out)


def test_a_cell_that_cannot_run_is_recorded_and_the_others_still_run(tiny_llm_dir, tiny_whisper_dir, tmp_path,
                                                                   monkeypatch, capsys):
    from speechllm.cli import main
    from speechllm.study import forgetting

    monkeypatch.setitem(forgetting.SCOPES, "norms", {"llm_train.patterns": ["no_such_weight"]})
    recipe = _recipe(tmp_path, tiny_llm_dir, tiny_whisper_dir)
    data = _corpus(tmp_path / "corpus")
    out = tmp_path / "study"
    args = ["study", "forgetting", "--recipe", str(recipe), "--out", str(out), "--cells",
            "gold.norms.plain,gold.embeddings.plain", "--seeds", "1", "--steps", "1", "--warm-steps", "0",
            "--data", str(data), "--eval-rows", "4"]
    assert main(args) == 1
    assert "1 cell runs failed" in capsys.readouterr().err
    failed = json.loads((out / "cells" / "gold.norms.plain" / "seed0" / "failed.json").read_text())
    assert failed["seed"] == 0 and "'no_such_weight' matches no LLM parameter" in failed["error"]
    # The embeddings scope runs on a model whose output layer is its own (or tied: one pattern).
    assert (out / "cells" / "gold.embeddings.plain" / "seed0" / "result.json").is_file()
    table = json.loads((out / "table.json").read_text())
    assert [e["cell"] for e in table["entries"]] == ["gold.embeddings.plain"] and len(table["failed"]) == 1
    assert "- gold.norms.plain seed 0: model.llm_train.patterns" in (out / "table.md").read_text()
    # A rerun tries the failed cell again (and fails it again, here), the finished one is kept.
    result = (out / "cells" / "gold.embeddings.plain" / "seed0" / "result.json").read_bytes()
    assert main(args) == 1
    assert (out / "cells" / "gold.embeddings.plain" / "seed0" / "result.json").read_bytes() == result


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a.detach().float(), b.float())


@pytest.mark.parametrize("scope", ["prompt", "prefix", "both"])
def test_prompted_lm_reads_the_prompt_and_prefix_as_the_model_does(scope, tiny_llm_dir, tiny_whisper_dir, tmp_path):
    """The study's text-side measures call a prompt- or prefix-tuned model through PromptedLM: its
    logits over left-padded token ids equal the model's own input path (virtual tokens first in each
    row, the prefix in the KV cache), its greedy generation starts with that path's argmax, and
    without either it is the LLM itself."""
    import torch
    from train_fixtures import tiny_run_config

    from speechllm.eval.predictors import generate_ids
    from speechllm.llm_runtime import left_pad
    from speechllm.models import SpeechLLM
    from speechllm.models.chat_layout import IGNORE_INDEX, ChatSequence
    from speechllm.study.forgetting import PromptedLM, text_lm

    cfg = tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [], tmp_path)
    plain = SpeechLLM.from_config(cfg.model)
    assert text_lm(plain) is plain.llm
    n = 3 if scope != "prefix" else 0
    cfg.model.prompt_tuning.num_tokens = n
    cfg.model.prefix_tuning.num_tokens = 2 if scope != "prompt" else 0
    model = SpeechLLM.from_config(cfg.model).eval()
    with torch.no_grad():  # a prompt and prefix the LLM's answers clearly depend on
        for p in (model.prompt_embeddings, model.prefix_kv):
            if p is not None:
                p.copy_(torch.randn_like(p) * 4.0)
    lm = text_lm(model)
    assert isinstance(lm, PromptedLM)
    rows = [[5, 9, 13, 2, 7], [11, 4]]
    ids, mask = left_pad(rows, model.pad_id)
    with torch.no_grad():
        got = lm(input_ids=ids, attention_mask=mask).logits
        for i, r in enumerate(rows):
            seq = ChatSequence([model.pad_id] * n + r, [IGNORE_INDEX] * (n + len(r)), [False] * (n + len(r)))
            want = model.llm(**model.llm_inputs(model.collate([seq])), use_cache=False).logits[0, n:]
            assert torch.allclose(got[i, -len(r):], want, atol=1e-5), i
            alone = lm(input_ids=torch.tensor([r])).logits[0]
            assert torch.allclose(alone, want, atol=1e-5)
            bare = model.llm(input_ids=torch.tensor([r])).logits[0]
            assert not torch.allclose(alone, bare, atol=1e-3)  # the prompt / prefix is read
    first = [g[0] for g in generate_ids(lm, model.tokenizer, rows, 2) if g]
    assert first == [int(got[i, -1].argmax()) for i in range(len(rows)) if int(got[i, -1].argmax()) not in
                     {model.tokenizer.eos_token_id, model.pad_id}]
