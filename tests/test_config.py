"""Typed configs: YAML + dotted overrides, clear errors naming key and file."""

from __future__ import annotations

import pytest
import yaml

from speechllm.config import (
    RunConfig,
    dump_yaml,
    iter_field_help,
    load_config,
    save_resolved_config,
)
from speechllm.errors import ConfigError


def test_defaults_and_overrides_are_typed():
    cfg = load_config(RunConfig, None, ["train.lr=3e-4", "model.lora.enabled=true",
                                        "data.train=[a.jsonl, b.jsonl]", "train.objectives={ce: 1, kl: 0.5}"])
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.lora.enabled is True
    assert cfg.data.train == ["a.jsonl", "b.jsonl"]
    assert cfg.train.objectives == {"ce": 1.0, "kl": 0.5}
    assert cfg.model.adapter == "qformer" and cfg.model.num_queries == 64


def test_yaml_file_with_yaml11_float_string(tmp_path):
    # PyYAML reads "1e-4" (no dot) as a string; float fields must still accept it.
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  lr: 1e-4\n  warmup_steps: 10\nmodel:\n  encoder_layers: [0, 1]\n")
    cfg = load_config(RunConfig, path)
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.model.encoder_layers == [0, 1]


def test_unknown_key_names_key_file_and_suggests(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, path)
    msg = str(e.value)
    assert str(path) in msg and "train.lrr" in msg and "did you mean train.lr" in msg


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.batch_size=eight", "train.batch_size: expected int"),
        ("model.lora.enabled=maybe", "model.lora.enabled: expected bool"),
        ("train.scheduler=exponential", "train.scheduler: 'exponential' is not one of"),
        ("data.replay_ratio=1.5", "data.replay_ratio: 1.5 is out of range (allowed: >= 0 and < 1)"),
        ("train", "expected key=value"),
        ("train.lr=[1", "not valid YAML"),
        ("train.lr.x=1", "train.lr: expected float"),
    ],
)
def test_bad_overrides_give_one_clear_error(override, fragment):
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, None, [override])
    assert fragment in str(e.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(RunConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("train:\n  lr: [1, 2\n")
    with pytest.raises(ConfigError) as e:
        load_config(RunConfig, bad)
    assert f"{bad}:" in str(e.value) and "malformed YAML" in str(e.value)
    top = tmp_path / "list.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(RunConfig, top)


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(RunConfig, None, ["train.lr=0.002", "model.llm=some/model"])
    path = save_resolved_config(cfg, tmp_path / "run")
    again = load_config(RunConfig, path)
    assert again == cfg
    assert yaml.safe_load(dump_yaml(cfg))["model"]["llm"] == "some/model"


def test_every_field_has_help():
    rows = list(iter_field_help(RunConfig))
    assert len(rows) > 40
    undocumented = [key for key, _, _, help_text in rows if not help_text]
    assert undocumented == []


# ------------------------------------------------------------------ ranges (issue 14, item 9)


@pytest.fixture
def no_stage_runs(monkeypatch):
    """Every stage entry point fails loudly: a config error must come before any model loads."""
    import speechllm.describe.pipeline
    import speechllm.generate.targets
    import speechllm.train

    def refuse(*args, **kwargs):
        raise AssertionError("a stage started (and would load a model) although the config is invalid")

    monkeypatch.setattr(speechllm.train, "train", refuse)
    monkeypatch.setattr(speechllm.generate.targets, "generate_targets", refuse)
    monkeypatch.setattr(speechllm.describe.pipeline, "describe_manifest", refuse)


@pytest.mark.parametrize(
    "key, value, allowed",
    [
        ("train.grad_accum", "0", "0 is out of range (allowed: >= 1)"),
        ("train.max_steps", "0", "0 is out of range (allowed: >= 1)"),
        ("train.max_steps", "-5", "-5 is out of range (allowed: >= 1)"),
        ("train.epochs", "0", "0 is out of range (allowed: >= 1)"),
        ("train.warmup_steps", "-1", "-1 is out of range (allowed: >= 0)"),
        ("train.lr", "-1", "-1.0 is out of range (allowed: > 0)"),
        ("train.lr", ".nan", "nan is not a finite number"),
        ("train.lr", "nan", "nan is not a finite number"),
        ("train.lr", ".inf", "inf is not a finite number"),
        ("train.batch_size", "0", "0 is out of range (allowed: >= 1)"),
        ("model.num_queries", "0", "0 is out of range (allowed: >= 1)"),
        ("model.adapter_dropout", "1.0", "1.0 is out of range (allowed: >= 0 and < 1)"),
        ("train.betas", "[0.9, 1.5]", "[0.9, 1.5] is out of range (allowed: 2 values, each >= 0 and < 1)"),
        ("train.betas", "[0.9]", "[0.9] is out of range (allowed: 2 values, each >= 0 and < 1)"),
        ("train.objectives", "{ce: -1}", "{'ce': -1.0} is out of range (allowed: each >= 0)"),
        ("data.replay_ratio", "1.5", "1.5 is out of range (allowed: >= 0 and < 1)"),
        ("data.train_weights", "[1, 0]", "[1.0, 0.0] is out of range (allowed: as many values as data.train (0), each > 0)"),
        ("sampling.top_p", "0", "0.0 is out of range (allowed: > 0 and <= 1)"),
        ("model.lora.r", "0", "0 is out of range (allowed: >= 1)"),
        ("model.qformer_context", "full", "'full' is not one of 'valid', 'window'"),
        ("model.adapter", "transformer", "'transformer' is not one of 'mlp', 'qformer'"),
    ],
)
def test_out_of_range_values_fail_at_load_naming_key_value_range_and_file(
        tmp_path, capsys, no_stage_runs, key, value, allowed):
    from speechllm.cli import main

    parts = key.split(".")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("".join(f"{'  ' * i}{p}:\n" for i, p in enumerate(parts[:-1]))
                      + f"{'  ' * (len(parts) - 1)}{parts[-1]}: {value}\n")
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{recipe}: {key}: {allowed}" in err, err
    # The same value as a command-line override names the key too.
    assert main(["train", f"{key}={value}"]) == 2
    assert f"{key}: {allowed}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["generate", "in.jsonl", "out.jsonl", "--batch-size", "0"], "generation.batch_size: 0 is out of range (allowed: >= 1)"),
        (["generate", "in.jsonl", "out.jsonl", "--temperature", "-1"], "sampling.temperature: -1.0 is out of range (allowed: >= 0)"),
        (["describe", "in.jsonl", "out.jsonl", "--set", "describe.vad.threshold=2"],
         "describe.vad.threshold: 2.0 is out of range (allowed: >= 0 and <= 1)"),
        (["describe", "in.jsonl", "out.jsonl", "--set", "describe.pitch.floor_hz=600"],
         "describe.pitch.floor_hz: 600.0 is out of range (allowed: > 0 and < describe.pitch.ceiling_hz (500.0))"),
        (["describe", "in.jsonl", "out.jsonl", "--set", "describe.speaking_rate.fast_above=2"],
         "describe.speaking_rate.fast_above: 2.0 is out of range (allowed: >= describe.speaking_rate.slow_below (3.5))"),
        (["describe", "in.jsonl", "out.jsonl", "describe.asr_max_new_tokens=0"],
         "describe.asr_max_new_tokens: 0 is out of range (allowed: >= 1)"),
    ],
)
def test_generation_and_describe_ranges_fail_before_the_stage_runs(tmp_path, monkeypatch, capsys, no_stage_runs,
                                                                   argv, fragment):
    from speechllm.cli import main

    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the checkout

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err and "command-line overrides" in err, err


def test_defaults_and_every_recipe_satisfy_the_declared_ranges():
    from pathlib import Path

    from speechllm.config import check_config
    from speechllm.config.describe import DescribeConfig

    check_config(RunConfig())
    check_config(DescribeConfig())
    for path in sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml")):
        check_config(load_config(RunConfig, path), source=str(path))


def test_programmatic_configs_are_checked_too():
    from speechllm.config import check_config

    cfg = RunConfig()
    cfg.train.grad_accum = 0
    with pytest.raises(ConfigError, match=r"<config>: train.grad_accum: 0 is out of range \(allowed: >= 1\)"):
        check_config(cfg)


def test_config_fields_lists_the_allowed_range(capsys):
    from speechllm.cli import main

    assert main(["config", "fields"]) == 0
    out = capsys.readouterr().out
    assert "train.grad_accum" in out and "int >= 1" in out and "float > 0" in out


@pytest.mark.parametrize("flag, value, fragment", [
    ("--batch-size", "0", "argument --batch-size: 0 is out of range (allowed: >= 1)"),
    ("--max-new-tokens", "-3", "argument --max-new-tokens: -3 is out of range (allowed: >= 1)"),
    ("--limit", "0", "argument --limit: 0 is out of range (allowed: >= 1)"),
    ("--batch-size", "two", "argument --batch-size: expected int, got 'two'"),
])
def test_eval_number_options_are_range_checked_before_anything_runs(capsys, monkeypatch, flag, value, fragment):
    import speechllm.eval.suite
    from speechllm.cli import main

    def refuse(*args, **kwargs):
        raise AssertionError("evaluation started although an option is out of range")

    monkeypatch.setattr(speechllm.eval.suite, "evaluate", refuse)
    with pytest.raises(SystemExit) as e:
        main(["eval", "--model", "m", "--bench", "b.jsonl", "--out", "o", flag, value])
    assert e.value.code == 2
    assert fragment in capsys.readouterr().err
