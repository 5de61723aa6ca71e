"""``train --resume`` with other settings than the checkpoint was trained with: refused with every
changed key named (before any model loads), unless the key may change on resume, in which case
the change is applied and recorded (issue 14, item 6)."""

from __future__ import annotations

import json

import pytest
import yaml
from test_cli_faults import train_args
from train_fixtures import write_rows

from speechllm.cli import main


@pytest.fixture
def stopped_run(tiny_llm_dir, tiny_whisper_dir, tmp_path, capsys):
    """A run stopped with a checkpoint at step 2 of 6, and the arguments that made it."""
    train_file = write_rows(tmp_path / "data", 4)
    run = tmp_path / "run"
    args = train_args(tiny_llm_dir, tiny_whisper_dir, train_file, run, "train.lr=0.003", "train.max_steps=6")
    assert main(args + ["--stop-at-step", "2"]) == 0
    assert "stopped at step 2" in capsys.readouterr().out
    return args, run


def _refuse_model_loads(monkeypatch):
    from speechllm.models import SpeechLLM

    def refuse(*a, **kw):
        raise AssertionError("the model was loaded although the resume is refused")

    monkeypatch.setattr(SpeechLLM, "from_config", refuse)


def test_changed_training_settings_are_refused_naming_each_key(stopped_run, capsys, monkeypatch):
    args, run = stopped_run
    checkpoint = run / "checkpoints" / "step-00000002"
    assert yaml.safe_load((checkpoint / "config.yaml").read_text())["train"]["lr"] == 0.003
    _refuse_model_loads(monkeypatch)

    code = main(args + ["train.lr=0.001", "train.batch_size=2", "model.num_queries=4", "--resume", "auto"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"speechllm train: error: {checkpoint}: ")
    for change in ("model.num_queries 8 -> 4", "train.lr 0.003 -> 0.001", "train.batch_size 4 -> 2"):
        assert change in err, err
    assert f"(saved in {checkpoint / 'config.yaml'})" in err
    assert "restore these settings, or start a new run in another train.output_dir" in err
    # The refused command did not overwrite the run's record of its settings.
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 0.003

    # A checkpoint from before checkpoints kept their own config: the run's config.yaml decides.
    (checkpoint / "config.yaml").unlink()
    assert main(args + ["train.lr=0.001", "--resume", "auto"]) == 2
    err = capsys.readouterr().err
    assert "train.lr 0.003 -> 0.001" in err and f"(saved in {run / 'config.yaml'})" in err


def test_settings_that_may_change_are_applied_and_recorded(stopped_run, capsys):
    args, run = stopped_run
    changed = ["train.max_steps=3", "train.log_every=2", "data.num_workers=0", "train.keep_last=5",
               "sampling.max_new_tokens=12"]
    assert main(args + changed + ["--resume", "auto"]) == 0
    assert "finished at step 3" in capsys.readouterr().out
    record = [json.loads(line) for line in (run / "config_changes.jsonl").read_text().splitlines()]
    assert len(record) == 1 and record[0]["step"] == 2
    assert record[0]["checkpoint"] == str(run / "checkpoints" / "step-00000002")
    assert record[0]["changes"] == {"train.max_steps": [6, 3], "train.log_every": [10, 2],
                                    "train.keep_last": [3, 5]}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 3 and saved["train"]["log_every"] == 2


def test_resume_from_another_runs_checkpoint_compares_with_that_checkpoint(stopped_run, tmp_path, capsys):
    args, run = stopped_run
    other = tmp_path / "other"
    moved = [a if not a.startswith("train.output_dir=") else f"train.output_dir={other}" for a in args]
    checkpoint = run / "checkpoints" / "step-00000002"
    assert main(moved + ["train.grad_accum=2", "--resume", str(checkpoint)]) == 2
    assert "train.grad_accum 1 -> 2" in capsys.readouterr().err
    assert main(moved + ["--resume", str(checkpoint), "--stop-at-step", "3"]) == 0  # output_dir may differ
    assert "stopped at step 3" in capsys.readouterr().out


def test_docs_list_every_setting_that_may_change_on_resume():
    from pathlib import Path

    from speechllm.config import RunConfig, iter_config_fields

    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    section = docs.split("### Resuming with other settings", 1)[1].split("\n## ", 1)[0]
    may_change = [key for key, _, f in iter_config_fields(RunConfig()) if "on_resume" in f.metadata]
    for key in may_change:
        assert f"`{key}`" in section, key
    assert "train.lr" not in may_change and "model.num_queries" not in may_change
