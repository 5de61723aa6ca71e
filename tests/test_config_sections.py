"""One recipe for every stage (issue 18 item 6): the describe, sampling, replay and eval sections,
read by describe, generate, infer and eval; keys that moved still load with a warning."""

from __future__ import annotations

import logging

import pytest

from speechllm.cli import main
from speechllm.config import RunConfig, load_config
from speechllm.errors import ConfigError


def test_moved_keys_load_into_their_new_section_with_a_warning(tmp_path, caplog):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("generation:\n  max_new_tokens: 96\n  temperature: 0.5\n  batch_size: 16\n"
                      "  samples: 3\n  editor_model: tiny\n")
    with caplog.at_level(logging.WARNING, logger="speechllm.config.loader"):
        cfg = load_config(RunConfig, recipe, ["generation.top_p=0.9"])
    assert (cfg.sampling.max_new_tokens, cfg.sampling.temperature, cfg.sampling.top_p) == (96, 0.5, 0.9)
    assert (cfg.replay.samples, cfg.replay.editor_model, cfg.generation.batch_size) == (3, "tiny", 16)
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{recipe}: generation.max_new_tokens is now sampling.max_new_tokens; the old key still loads, rename it" \
        in warnings
    assert any("generation.top_p is now sampling.top_p" in w for w in warnings)
    assert len(warnings) == 5 and all("\n" not in w for w in warnings)


def test_an_old_and_a_new_key_for_the_same_setting_is_an_error(tmp_path):
    recipe = tmp_path / "both.yaml"
    recipe.write_text("generation:\n  max_new_tokens: 96\nsampling:\n  max_new_tokens: 64\n")
    with pytest.raises(ConfigError, match="both generation.max_new_tokens and sampling.max_new_tokens are set"):
        load_config(RunConfig, recipe)


def test_config_show_and_get_show_the_sections(capsys):
    assert main(["config", "show", "sampling.top_k=5", "eval.batch_size=2"]) == 0
    out = capsys.readouterr().out
    for section in ("model:", "data:", "generation:", "sampling:", "replay:", "train:", "describe:", "eval:"):
        assert f"\n{section}\n" in f"\n{out}"
    assert "  top_k: 5\n" in out and "  batch_size: 2\n" in out
    assert main(["config", "get", "describe.pitch.male_high_above"]) == 0
    assert capsys.readouterr().out == "145.0\n"
    assert main(["config", "get", "generation.temperature"]) == 2  # moved: no longer a generation key
    assert "generation.temperature: no such config key" in capsys.readouterr().err


def test_describe_reads_the_recipe_section_and_the_old_forms(tmp_path, caplog):
    from speechllm.cli.describe import load_describe_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  llm: offline:smollm2-135m-instruct\ndescribe:\n  pitch:\n    male_high_above: 160\n")
    assert load_describe_config(str(recipe), []).pitch.male_high_above == 160
    assert load_describe_config(str(recipe), ["describe.pitch.male_high_above=170"]).pitch.male_high_above == 170
    old = tmp_path / "describe.yaml"
    old.write_text("pitch:\n  male_high_above: 150\nannotators: [duration, volume]\n")
    with caplog.at_level(logging.WARNING, logger="speechllm.cli.describe"):
        cfg = load_describe_config(str(old), ["volume.loud_above=-18"])
    assert (cfg.pitch.male_high_above, cfg.annotators, cfg.volume.loud_above) == (150, ["duration", "volume"], -18)
    warnings = " | ".join(r.getMessage() for r in caplog.records)
    assert "move its keys under describe:" in warnings and "(describe.volume.loud_above)" in warnings
    with pytest.raises(ConfigError, match=r"describe\.pitch\.floor_hz: 600\.0 is out of range"):
        load_describe_config(str(old), ["pitch.floor_hz=600"])


def test_infer_takes_its_sampling_defaults_from_the_recipe(tmp_path, monkeypatch, capsys):
    import speechllm.infer as infer

    seen = {}

    def fake_run_request(model, request, options, stream=False):
        seen["options"] = options
        return infer.InferResult(response="ok", transcripts=[], timings={}, new_tokens=1, audio_seconds=0.0)

    monkeypatch.setattr(infer, "load_model", lambda *a, **k: object())
    monkeypatch.setattr(infer, "run_request", fake_run_request)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("sampling:\n  max_new_tokens: 40\n  temperature: 0.7\n  top_p: 0.8\n")
    argv = ["infer", "--model", str(tmp_path), "--prompt", "Hi", "--config", str(recipe)]
    assert main([*argv, "sampling.top_k=7", "--top-p", "0.5"]) == 0
    o = seen["options"]
    assert (o.max_new_tokens, o.temperature, o.top_p, o.top_k, o.repetition_penalty) == (40, 0.7, 0.5, 7, 1.0)
    assert main(["infer", "--model", str(tmp_path), "--prompt", "Hi"]) == 0  # no recipe: the defaults
    o = seen["options"]
    assert (o.max_new_tokens, o.temperature, o.top_p, o.top_k) == (256, 0.0, 1.0, 0)
    capsys.readouterr()


def test_eval_takes_batch_length_and_seed_from_the_recipe(tmp_path, monkeypatch, capsys):
    import speechllm.eval.suite as suite

    seen = {}

    def fake_evaluate(model, benches, options, **_):
        seen["options"] = options
        return {"benchmarks": {}}

    monkeypatch.setattr(suite, "evaluate", fake_evaluate)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("eval:\n  batch_size: 2\n  max_new_tokens: 32\n  seed: 4\nsampling:\n  max_new_tokens: 999\n")
    argv = ["eval", "--model", "m", "--bench", "b.jsonl", "--out", str(tmp_path / "o"), "--config", str(recipe)]
    assert main([*argv, "eval.seed=9", "--batch-size", "3"]) == 0
    o = seen["options"]
    assert (o.batch_size, o.max_new_tokens, o.seed) == (3, 32, 9)
    assert main(argv[:7]) == 0  # no recipe: 8, 128, 0 as before
    o = seen["options"]
    assert (o.batch_size, o.max_new_tokens, o.seed) == (8, 128, 0)
    capsys.readouterr()
