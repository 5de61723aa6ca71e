"""Resume after faults: ``--resume auto`` skips a newest checkpoint whose trainer state is
truncated or whose adapter is empty (with a warning) and continues exactly from the previous one;
an explicitly named broken checkpoint is a one-line error; temporary folders of a killed write are
removed; ``metrics.jsonl`` lists every step once after a resume."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from train_fixtures import tiny_run_config, write_rows

MAX_STEPS = 6


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    return write_rows(tmp_path_factory.mktemp("fault_rows"), 6)


def _cfg(tiny_llm_dir, tiny_whisper_dir, rows, out):
    return tiny_run_config(tiny_llm_dir, tiny_whisper_dir, [rows], out, max_steps=MAX_STEPS, save_every=2, keep_last=3)


@pytest.fixture(scope="module")
def straight(tiny_llm_dir, tiny_whisper_dir, rows, tmp_path_factory):
    """Losses of an uninterrupted run."""
    from speechllm.train import Trainer

    result = Trainer(_cfg(tiny_llm_dir, tiny_whisper_dir, rows, tmp_path_factory.mktemp("straight") / "run")).run()
    return [r["loss"] for r in result.losses]


@pytest.fixture(scope="module")
def stopped(tiny_llm_dir, tiny_whisper_dir, rows, tmp_path_factory):
    """A run stopped after step 4: checkpoints step-2 and step-4, metrics for steps 1-4."""
    from speechllm.train import Trainer

    out = tmp_path_factory.mktemp("stopped") / "run"
    result = Trainer(_cfg(tiny_llm_dir, tiny_whisper_dir, rows, out)).run(stop_at_step=4)
    assert result.status == "stopped" and result.step == 4
    assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-00000002", "step-00000004"]
    return out


def _largest_state_file(folder: Path) -> Path:
    return max(folder.glob("trainer_state.*"), key=lambda p: p.stat().st_size)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_legacy_state(step: Path) -> None:
    """The state as an older version wrote it (``trainer_state.pt``), cut short."""
    import torch

    from speechllm.train import checkpointing as ckpt

    torch.save(ckpt.load_state(step), step / "trainer_state.pt")
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (step / name).unlink()
    _truncate(step / "trainer_state.pt")


FAULTS = {
    "truncated-trainer-state": lambda step: _truncate(_largest_state_file(step)),
    "truncated-legacy-trainer-state-pt": _truncated_legacy_state,
    "truncated-trainer-state-json": lambda step: _truncate(step / "trainer_state.json"),
    "empty-adapter": lambda step: (step / "model" / "adapter.safetensors").write_bytes(b""),
}


def _metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("fault", FAULTS)
def test_auto_resume_falls_back_to_the_previous_complete_checkpoint(fault, stopped, straight, tiny_llm_dir,
                                                                    tiny_whisper_dir, rows, tmp_path, caplog):
    from speechllm.train import Trainer

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    newest = run / "checkpoints" / "step-00000004"
    if fault == "truncated-trainer-state-json" and not (newest / "trainer_state.json").is_file():
        pytest.fail("no trainer_state.json: the trainer state is not stored as safetensors + JSON")
    FAULTS[fault](newest)
    with caplog.at_level(logging.WARNING, logger="speechllm.train.checkpointing"):
        result = Trainer(_cfg(tiny_llm_dir, tiny_whisper_dir, rows, run)).run(resume="auto")
    warnings = [r.getMessage() for r in caplog.records if "incomplete checkpoint" in r.getMessage()]
    assert len(warnings) == 1 and str(newest) in warnings[0]
    assert warnings[0].endswith(f"resuming from {run / 'checkpoints' / 'step-00000002'}"), warnings
    assert result.status == "finished" and result.step == MAX_STEPS
    assert [r["loss"] for r in result.losses] == pytest.approx(straight[2:], abs=1e-6)
    assert _metric_steps(run) == list(range(1, MAX_STEPS + 1))


def test_explicitly_named_broken_checkpoint_is_a_one_line_error(stopped, tiny_llm_dir, tiny_whisper_dir, rows,
                                                                tmp_path, capsys):
    import yaml

    from speechllm.cli import main

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    newest = run / "checkpoints" / "step-00000004"
    (newest / "model" / "adapter.safetensors").write_bytes(b"")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"encoder": str(tiny_whisper_dir), "llm": str(tiny_llm_dir), "dtype": "fp32", "num_queries": 8,
                  "qformer_layers": 1, "qformer_ffn_dim": 64, "use_vad": False},
        "data": {"train": [str(rows)], "max_length": 256},
        "train": {"output_dir": str(run), "precision": "fp32", "batch_size": 4, "max_steps": MAX_STEPS}}))
    assert main(["train", "--config", str(recipe), "--resume", str(newest)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == [f"speechllm train: error: {newest}: incomplete checkpoint: {newest / 'model' / 'adapter.safetensors'}: "
                   "empty; the checkpoint is incomplete (copy the whole folder, or re-save it); resume from another "
                   "step-* folder or use --resume auto"]


def test_auto_resume_with_no_complete_checkpoint_is_an_error(stopped, tmp_path):
    from speechllm.train import checkpointing as ckpt

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    for step in (run / "checkpoints").glob("step-*"):
        (step / "model" / "adapter.safetensors").write_bytes(b"")
    with pytest.raises(ckpt.ResumeError, match=r"no complete checkpoint to resume from .*step-00000002.*empty"):
        ckpt.resolve_resume(run, "auto")


def test_stale_temporary_folders_are_removed_and_metrics_list_each_step_once(stopped, straight, tiny_llm_dir,
                                                                             tiny_whisper_dir, rows, tmp_path):
    """A run killed while writing step 6 (and its final/): temp folders remain, metrics.jsonl
    already has rows past the last checkpoint, the last one torn."""
    from speechllm.train import Trainer

    run = tmp_path / "run"
    shutil.copytree(stopped, run)
    stale = [run / "checkpoints" / ".step-00000006.tmp-k1ll3d", run / ".final.tmp-k1ll3d"]
    for folder in stale:
        (folder / "model").mkdir(parents=True)
        (folder / "model" / "adapter.safetensors").write_bytes(b"half")
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 5, "loss": 9.0}) + "\n" + '{"step": 6, "lo')
    result = Trainer(_cfg(tiny_llm_dir, tiny_whisper_dir, rows, run)).run(resume="auto")
    assert result.step == MAX_STEPS and [r["loss"] for r in result.losses] == pytest.approx(straight[4:], abs=1e-6)
    assert not any(folder.exists() for folder in stale)
    assert _metric_steps(run) == list(range(1, MAX_STEPS + 1))


def test_a_second_train_into_the_same_folder_is_refused_at_once(tmp_path, capsys):
    """Two runs writing one folder would interleave checkpoints and metrics.jsonl."""
    import fcntl

    from speechllm.cli import main
    from speechllm.train.run_folder import TRAIN_LOCK

    out = tmp_path / "run"
    out.mkdir()
    with open(out / TRAIN_LOCK, "a") as held:  # the first run, still training
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc = main(["train", f"train.output_dir={out}", "data.train=[nowhere.jsonl]"])
    err = capsys.readouterr().err
    assert rc == 2 and "another `speechllm train` is running in this folder" in err
    # Released (the first run ended or was killed): the next run gets past the lock.
    rc = main(["train", f"train.output_dir={out}", "data.train=[nowhere.jsonl]"])
    assert "another `speechllm train`" not in capsys.readouterr().err
