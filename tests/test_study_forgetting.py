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

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model:\n  encoder: {tiny_whisper_dir}\n  llm: {tiny_llm_dir}\n  dtype: fp32\n  num_queries: 8\n"
        "  qformer_layers: 1\n  qformer_ffn_dim: 64\n  use_vad: false\n  transcript_source: manifest\n"
        "data:\n  max_length: 256\n"
        "train:\n  precision: fp32\n  batch_size: 4\n  warmup_steps: 1\n  lr: 3.0e-3\n  log_every: 1\n",
        encoding="utf-8")
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
    # Changed settings in the same folder are refused, naming the file.
    with pytest.raises(StudyError, match="study.json: this folder holds a study with other settings"):
        run_study(recipe, out, grid="ci", seeds=1, steps=3, data=str(data), eval_rows=4)
