"""Dotted ``key=value`` overrides are accepted anywhere on a command line (one shared parser
helper for every command that takes them); anything else unrecognized is still an error."""

from __future__ import annotations

import pytest
import yaml

from speechllm.cli import build_parser, main, parse_command_line


@pytest.mark.parametrize("argv, overrides", [
    (["train", "--config", "r.yaml", "train.lr=1e-4", "--resume", "auto", "train.max_steps=3"],
     ["train.lr=1e-4", "train.max_steps=3"]),
    (["train", "train.lr=1e-4", "--resume", "auto", "train.max_steps=3", "--stop-at-step", "2", "train.seed=4"],
     ["train.lr=1e-4", "train.max_steps=3", "train.seed=4"]),
    (["cache-features", "data.train=[a]", "--out", "cache", "model.num_queries=8"],
     ["data.train=[a]", "model.num_queries=8"]),
    (["init-model", "out", "--lora", "num_queries=8", "--seed", "1", "model.lora.r=4"],
     ["num_queries=8", "model.lora.r=4"]),
    (["config", "show", "train.lr=1", "--config", "r.yaml", "train.seed=2"], ["train.lr=1", "train.seed=2"]),
    (["describe", "in.jsonl", "out.jsonl", "--set", "a=1", "--jobs", "2", "b=2"], ["a=1", "b=2"]),
])
def test_overrides_are_accepted_anywhere(argv, overrides):
    args = parse_command_line(build_parser(), argv)
    assert args.overrides == overrides


@pytest.mark.parametrize("argv", [["train", "--resume", "auto", "--bogus"], ["train", "a=1", "--resume", "auto", "oops"],
                                  ["split", "in.jsonl", "out", "train.lr=1"]])
def test_other_unrecognized_arguments_still_fail(argv, capsys):
    with pytest.raises(SystemExit) as info:
        parse_command_line(build_parser(), argv)
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_config_show_applies_overrides_on_both_sides_of_an_option(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"train": {"lr": 0.5}}))
    assert main(["config", "show", "train.batch_size=3", "--config", str(recipe), "train.seed=7"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["lr"] == 0.5 and shown["train"]["batch_size"] == 3 and shown["train"]["seed"] == 7


@pytest.mark.parametrize("argv, overrides", [
    (["train", "--set", "train.lr=1", "train.seed=2", "--set=train.lr=3"], ["train.lr=1", "train.seed=2", "train.lr=3"]),
    (["init-model", "out", "--set", "model.lora.r=4", "num_queries=8"], ["model.lora.r=4", "num_queries=8"]),
    (["cache-features", "--set", "data.train=[a]", "--out", "c"], ["data.train=[a]"]),
    (["config", "show", "train.seed=1", "--set", "train.seed=2"], ["train.seed=1", "train.seed=2"]),
    (["generate", "in.jsonl", "out.jsonl", "sampling.top_p=0.5", "--set", "generation.seed=3"],
     ["sampling.top_p=0.5", "generation.seed=3"]),
    (["infer", "--model", "m", "sampling.top_p=0.5", "--set", "sampling.top_k=3"], ["sampling.top_p=0.5", "sampling.top_k=3"]),
    (["eval", "--model", "m", "eval.seed=1", "--set", "eval.batch_size=2"], ["eval.seed=1", "eval.batch_size=2"]),
    (["describe", "in.jsonl", "out.jsonl", "describe.vad.threshold=0.4", "--set", "describe.template=desta2-v1"],
     ["describe.vad.threshold=0.4", "describe.template=desta2-v1"]),
])
def test_every_command_takes_both_override_forms_in_command_line_order(argv, overrides):
    args = parse_command_line(build_parser(), argv)
    assert args.overrides == overrides


def test_config_get_prints_one_resolved_value(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"llm": "offline:smollm2-135m-instruct"}}))
    assert main(["config", "get", "--config", str(recipe), "model.llm"]) == 0
    assert capsys.readouterr().out == "offline:smollm2-135m-instruct\n"
    assert main(["config", "get", "model.use_vad", "--set", "model.use_vad=false"]) == 0
    assert capsys.readouterr().out == "false\n"
    assert main(["config", "get", "model.nope"]) == 2
    assert "model.nope: no such config key" in capsys.readouterr().err


def test_generate_merge_is_a_sub_command_with_its_own_options(capsys):
    args = parse_command_line(build_parser(), ["--log-level", "ERROR", "generate", "merge", "a.jsonl", "b.jsonl",
                                               "-o", "all.jsonl", "--expect", "d.jsonl"])
    assert args.command == "generate merge" and args.shards == ["a.jsonl", "b.jsonl"]
    assert args.output == "all.jsonl" and args.expect == "d.jsonl"
    with pytest.raises(SystemExit) as info:
        parse_command_line(build_parser(), ["generate", "merge", "--help"])
    assert info.value.code == 0 and "speechllm generate merge" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # merge's options are not generate's
        parse_command_line(build_parser(), ["generate", "in.jsonl", "out.jsonl", "--expect", "d.jsonl"])
