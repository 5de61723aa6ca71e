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
        ("data.replay_ratio=1.5", "replay_ratio must be in [0, 1)"),
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
