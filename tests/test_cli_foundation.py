"""The CLI: help lists commands, env reports, errors are one line with a non-zero exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from speechllm.cli import main


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "speechllm", "--help"], capture_output=True, text=True, check=True)
    for command in ("env", "assets", "config"):
        assert command in out.stdout


def test_env_json_reports_versions_and_assets(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] and info["transformers"].startswith("5.")
    assert set(info["assets"]) >= {"whisper-tiny.en", "whisper-base", "smollm2-135m-instruct"}
    assert "cpu" in info["devices"]
    # What a bug report about speed or synthesis needs: the machine and the external tools.
    assert info["cpu"] and info["cpu_cores"].endswith(f"of {os.cpu_count()}")
    assert "total" in info["memory_gib"]
    assert set(info["tools"]) == {"flite", "espeak-ng", "sox"}
    for name, found in info["tools"].items():
        assert (found is None) == (shutil.which(name) is None)


def test_config_error_is_one_line_and_exit_2(capsys):
    assert main(["config", "show", "train.lr=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.lr: expected float" in err


def test_unknown_asset_exits_nonzero(capsys):
    assert main(["assets", "install", "nope"]) == 2
    assert "known assets: whisper-tiny.en" in capsys.readouterr().err


def test_config_show_prints_resolved_yaml(capsys):
    assert main(["config", "show", "train.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def test_hub_progress_bars_are_off_when_stderr_is_a_log(monkeypatch, capsys):
    """Off a terminal the per-tensor 'Loading weights' bars would flood the log."""
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert main(["env", "--json"]) == 0  # pytest captures stderr: not a terminal
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"



@pytest.mark.parametrize("argv", [
    ["infer", "--model", "m", "--prompt", "x", "--max-new-tokens", "0"],
    ["infer", "--model", "m", "--prompt", "x", "--top-p", "1.5"],
    ["infer", "--model", "m", "--prompt", "x", "--temperature", "nan"],
    ["cache-features", "--out", "o", "--batch-size", "0"],
    ["describe", "in.jsonl", "out.jsonl", "--jobs", "0"],
    ["split", "m.jsonl", "out", "--dev", "1.0"],
    ["train", "--stop-at-step", "0"],
    ["validate", "m.jsonl", "--max-seconds", "-1"],
])
def test_number_options_are_range_checked_before_anything_runs(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "out of range (allowed:" in err or "is not a finite number" in err
