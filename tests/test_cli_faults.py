"""Disk full, read-only and blocked output folders: one line naming the file and what to do, a
distinct exit code, no traceback, and outputs that resume cleanly afterwards (issue 14).

Tests run as root, where a read-only chmod does not stop writes, so the faults are simulated: a
regular file where the output folder should be, or ``os.write`` / ``os.open`` raising ENOSPC /
EROFS for the output file only.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.cli import OS_ERROR_EXIT_CODE, main


def _manifest(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        sf.write(folder / f"u{i}.wav", (0.1 * np.sin(np.arange(8000 + 800 * i) / 5)).astype(np.float32), 16000)
        rows.append({"id": f"u{i}", "audio": f"u{i}.wav"})
    path = folder / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_line(err: str) -> str:
    """The error line: the last line of stderr, the only one from the CLI (training's progress
    bar may come before it), and no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert [x for x in lines if x.startswith("speechllm ")] == lines[-1:], err
    return lines[-1]


def _fail_writes_to(monkeypatch, target: Path, code: int) -> None:
    """``os.write`` to ``target`` raises ``OSError(code)`` (without a file name: the kernel's
    error has none) once the file holds a row; the failing call writes half its data first, as
    a real disk-full write does."""
    real_write = os.write

    def write(fd: int, data) -> int:
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name == str(target) and os.fstat(fd).st_size > 0:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(code, os.strerror(code))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_describe_into_a_file_where_a_folder_belongs(tmp_path, capsys):
    manifest = _manifest(tmp_path / "data")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    code = main(["describe", str(manifest), str(blocker / "out.jsonl"), "-a", "duration", "--no-progress"])
    assert code == OS_ERROR_EXIT_CODE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("speechllm describe: error: ") and str(blocker) in line
    assert "a file is in the way" in line and "choose another path" in line


def test_describe_disk_full_mid_run_names_the_file_and_resumes(tmp_path, capsys, monkeypatch):
    manifest = _manifest(tmp_path / "data")
    out = tmp_path / "out" / "described.jsonl"
    with monkeypatch.context() as m:
        _fail_writes_to(m, out, errno.ENOSPC)  # the second row finds the disk full
        code = main(["describe", str(manifest), str(out), "-a", "duration", "--no-progress"])
    assert code == OS_ERROR_EXIT_CODE
    line = _one_line(capsys.readouterr().err)
    assert f"{out}: no space left on device (ENOSPC)" in line, line
    assert "free space" in line
    assert not out.read_bytes().endswith(b"\n"), "the simulated disk-full write leaves a torn row"

    # After space is freed the same command finishes the file: every id once, every line whole.
    assert main(["describe", str(manifest), str(out), "-a", "duration", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["u0", "u1", "u2", "u3"]


def test_generate_into_a_read_only_folder(tmp_path, capsys, monkeypatch):
    described = tmp_path / "described.jsonl"
    described.write_text(json.dumps({"id": "a", "description": "A calm voice."}) + "\n")
    out = tmp_path / "ro" / "targets.jsonl"
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if Path(os.fsdecode(path)).parent == out.parent and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    code = main(["generate", str(described), str(out), "--llm", str(tmp_path / "no-model-needed"), "--no-progress"])
    assert code == OS_ERROR_EXIT_CODE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("speechllm generate: error: ")
    # (the writer may open a lock file beside the output first: either names the folder)
    assert f"{out.parent}" in line and "read-only file system (EROFS)" in line and "choose a writable" in line


def train_args(tiny_llm_dir, tiny_whisper_dir, train_file, out_dir, *extra) -> list[str]:
    """``speechllm train`` arguments of a tiny fp32 CPU run (as train_fixtures.tiny_run_config)."""
    return ["train", f"model.encoder={tiny_whisper_dir}", f"model.llm={tiny_llm_dir}", "model.dtype=fp32",
            "model.num_queries=8", "model.qformer_layers=1", "model.qformer_ffn_dim=64", "model.use_vad=false",
            f"data.train=[{train_file}]", "data.max_length=256", f"train.output_dir={out_dir}",
            "train.precision=fp32", "train.batch_size=4", "train.warmup_steps=2", "train.eval_every=0",
            "train.num_sample_generations=0", *extra]


def test_train_output_dir_below_a_file(tiny_llm_dir, tiny_whisper_dir, tmp_path, capsys):
    from train_fixtures import write_rows

    train_file = write_rows(tmp_path / "data", 4)
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    code = main(train_args(tiny_llm_dir, tiny_whisper_dir, train_file, blocker / "run", "train.max_steps=2"))
    assert code == OS_ERROR_EXIT_CODE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("speechllm train: error: ") and str(blocker) in line
    assert "not a folder" in line


def test_train_disk_full_while_checkpointing_keeps_the_last_checkpoint(tiny_llm_dir, tiny_whisper_dir, tmp_path,
                                                                      capsys, monkeypatch):
    """safetensors reports a full disk as ``SafetensorError(... (os error 28))``, not OSError."""
    import safetensors
    import safetensors.torch
    from train_fixtures import write_rows

    train_file = write_rows(tmp_path / "data", 4)
    run = tmp_path / "run"
    args = train_args(tiny_llm_dir, tiny_whisper_dir, train_file, run, "train.max_steps=4", "train.save_every=2")
    real_save = safetensors.torch.save_file
    adapter_saves = []

    def save_file(tensors, filename, *a, **kw):
        if str(filename).endswith("adapter.safetensors"):
            adapter_saves.append(filename)
            if len(adapter_saves) > 1:  # the step-2 checkpoint is written; the disk is full at the next one
                raise safetensors.SafetensorError(
                    "Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(tensors, filename, *a, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    assert main(args) == OS_ERROR_EXIT_CODE
    line = _one_line(capsys.readouterr().err)
    assert "no space left on device (ENOSPC)" in line and "free space" in line
    assert str(run / "checkpoints") in line, line
    # The failed checkpoint left no half-written folder; the previous one is whole and resumes.
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002"]
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert main(args + ["--resume", "auto"]) == 0
    assert "finished at step 4" in capsys.readouterr().out


@pytest.mark.parametrize("code, words", [
    (errno.EDQUOT, "disk quota exceeded (EDQUOT)"),
    (errno.EACCES, "permission denied (EACCES)"),
    (errno.ENOENT, "no such file or folder (ENOENT)"),
])
def test_other_storage_errors_get_one_line_each(tmp_path, capsys, monkeypatch, code, words):
    import speechllm.cli.config as config_cli

    target = tmp_path / "x" / "config.yaml"

    def fail(args):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(config_cli, "_show", fail)
    assert main(["config", "show"]) == OS_ERROR_EXIT_CODE
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"speechllm config: error: {target}: {words}: "), line


def test_errors_that_are_not_about_storage_still_raise(monkeypatch):
    import speechllm.cli.config as config_cli

    def fail(args):
        raise ConnectionError("a bug or a network fault keeps its traceback")

    monkeypatch.setattr(config_cli, "_show", fail)
    with pytest.raises(ConnectionError):
        main(["config", "show"])


def _disk_full_for(monkeypatch, part: str) -> None:
    """Files opened through ``os.fdopen`` (``atomic_open``) whose path contains ``part`` raise
    ENOSPC on write: the buffered file's own writes do not pass through ``os.write``."""
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        return Full(f) if part in os.readlink(f"/proc/self/fd/{fd}") else f

    monkeypatch.setattr(os, "fdopen", fdopen)


def test_write_audio_reports_a_full_disk_as_oserror_and_leaves_no_file(tmp_path, monkeypatch):
    from speechllm.audio.io import write_audio

    target = tmp_path / "a.wav"
    _disk_full_for(monkeypatch, str(tmp_path))
    with pytest.raises(OSError) as info:
        write_audio(target, np.zeros(1600, dtype=np.float32), 16000)
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary
    monkeypatch.undo()
    write_audio(target, np.full(1600, 0.25, dtype=np.float32), 16000, subtype="PCM_16")
    data, sr = sf.read(target, dtype="float32")
    assert sr == 16000 and data.shape == (1600,) and np.allclose(data, 0.25, atol=1 / 32767)


def test_synth_on_a_full_disk_is_one_storage_line(tmp_path, capsys, monkeypatch):
    _disk_full_for(monkeypatch, "/wav/")  # the disk fills up when the first clip is written
    code = main(["synth", str(tmp_path / "c"), "--num", "3", "--nonspeech", "1", "--jobs", "1", "--no-progress"])
    line = _one_line(capsys.readouterr().err)
    assert code == OS_ERROR_EXIT_CODE, line
    assert line.startswith("speechllm synth: error: ") and "no space left on device (ENOSPC)" in line, line
    assert not (tmp_path / "c").exists()  # nothing half-made where the corpus belongs
