"""Resumable outputs are never mixed up: one writer at a time (a second process is refused), the
output may not be the input, and a resume with other settings than the output's is refused, in
every stage that reads one file and appends to another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.cli import main
from speechllm.utils.jsonl import read_jsonl

SR = 16_000


def _tone_manifest(folder: Path, n: int = 3) -> Path:
    t = np.arange(SR) / SR
    rows = []
    for k in range(n):
        sf.write(str(folder / f"t{k}.wav"), 0.2 * np.sin(2 * np.pi * (200 + 50 * k) * t), SR)
        rows.append({"id": f"t{k}", "audio": f"t{k}.wav"})
    path = folder / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# --- item 4: one writer at a time --------------------------------------------------------------
def test_describe_refuses_an_output_another_process_is_writing(tmp_path, capsys):
    manifest = _tone_manifest(tmp_path)
    out = tmp_path / "out.jsonl"
    hold = ("import sys\nfrom speechllm.utils.jsonl import ResumableJsonlWriter\n"
            "w = ResumableJsonlWriter(sys.argv[1])\nprint('writing', flush=True)\nsys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(out)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "writing"
        rc = main(["describe", str(manifest), str(out), "-a", "duration", "--no-progress"])
        assert rc == 2
        assert _one_line_error(capsys) == (
            f"speechllm describe: error: {out}: another process is writing this file; wait for it to finish, or write to another file")
        assert out.read_text() == ""  # nothing written twice
    finally:
        holder.stdin.close()
        holder.wait(timeout=120)
    assert main(["describe", str(manifest), str(out), "-a", "duration", "--no-progress"]) == 0
    assert sorted(r["id"] for r in read_jsonl(out)) == ["t0", "t1", "t2"]


# --- item 5: the output is not the input -------------------------------------------------------
def test_describe_into_its_own_input_is_refused(tmp_path, capsys):
    manifest = _tone_manifest(tmp_path)
    before = manifest.read_bytes()
    assert main(["describe", str(manifest), str(manifest), "-a", "duration", "--no-progress"]) == 2
    assert _one_line_error(capsys) == (
        f"speechllm describe: error: {manifest}: the output is the input file ({manifest}); write the output to another path")
    # Another spelling of the same file (a hard link) is the same file too.
    link = tmp_path / "sub" / "link.jsonl"
    link.parent.mkdir()
    os.link(manifest, link)
    assert main(["describe", str(manifest), str(link), "-a", "duration", "--no-progress"]) == 2
    assert "the output is the input file" in _one_line_error(capsys)
    assert manifest.read_bytes() == before
    assert not (tmp_path / "in.describe.yaml").exists()


def test_generate_replay_split_and_builtin_refuse_their_input_as_output(tmp_path, capsys):
    manifest = _tone_manifest(tmp_path)
    before = manifest.read_bytes()
    for argv in (["generate", str(manifest), str(manifest), "--llm", "offline:none"],
                 ["generate-replay", str(manifest), "--kind", "self-output", "--instructions", str(manifest),
                  "--llm", "offline:none"],
                 ["eval", "build-builtin", str(manifest), str(manifest)]):
        assert main(argv) == 2, argv
        assert "the output is the input file" in _one_line_error(capsys), argv
    split_in = tmp_path / "train.jsonl"
    split_in.write_bytes(before)
    assert main(["split", str(split_in), str(tmp_path)]) == 2
    assert f"{split_in}: the output is the input file" in _one_line_error(capsys)
    assert manifest.read_bytes() == before and split_in.read_bytes() == before
    assert not (tmp_path / "dev.jsonl").exists()


# --- item 5: describe keeps one configuration per output ---------------------------------------
def test_describe_resume_with_other_settings_is_refused(tmp_path, capsys):
    manifest = _tone_manifest(tmp_path)
    out = tmp_path / "out.jsonl"
    record = tmp_path / "out.describe.yaml"
    assert main(["describe", str(manifest), str(out), "-a", "duration", "--no-progress"]) == 0
    rows, saved = out.read_bytes(), record.read_text()
    assert "- duration" in saved
    # Resuming with the same settings is a no-op...
    assert main(["describe", str(manifest), str(out), "-a", "duration", "--no-progress"]) == 0
    assert "already done: 3; written now: 0" in capsys.readouterr().err
    # ... with another annotator list or threshold it is refused, and nothing is touched.
    assert main(["describe", str(manifest), str(out), "-a", "duration,volume", "--no-progress"]) == 2
    assert _one_line_error(capsys) == (
        f"speechllm describe: error: {out}: its rows were written with other settings (annotators: ['duration'] in the file, "
        "['duration', 'volume'] now); continuing would mix two configurations. Write to a new file, or "
        "delete this one (and its sidecars) to start over")
    assert main(["describe", str(manifest), str(out), "-a", "duration", "--set", "volume.loud_above=-30",
                 "--no-progress"]) == 2
    assert "volume.loud_above: -20.0 in the file, -30.0 now" in _one_line_error(capsys)
    assert out.read_bytes() == rows and record.read_text() == saved
    # --restart starts over with the new settings.
    assert main(["describe", str(manifest), str(out), "-a", "duration,volume", "--restart", "--no-progress"]) == 0
    assert all("volume" in r["attributes"] for r in read_jsonl(out))
    assert "- volume" in record.read_text()


# --- item 5: speechllm-infer's manifest mode ---------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tiny_whisper_dir, tiny_llm_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("resume_infer") / "ckpt"
    assert main(["init-model", "--encoder", str(tiny_whisper_dir), "--llm", str(tiny_llm_dir), str(out),
                 "dtype=fp32"]) == 0
    return out


def test_infer_manifest_refuses_its_input_as_output_and_other_settings(checkpoint, tmp_path, capsys):
    manifest = tmp_path / "req.jsonl"
    manifest.write_text(json.dumps({"id": "r1", "prompt": "Hi"}) + "\n" + json.dumps({"id": "r2", "prompt": "Yo"}) + "\n")
    before = manifest.read_bytes()
    base = ["infer", "--model", str(checkpoint), "--manifest", str(manifest)]
    assert main([*base, "--output", str(manifest), "--max-new-tokens", "2"]) == 2
    assert _one_line_error(capsys) == (
        f"speechllm infer: error: {manifest}: the output is the input file ({manifest}); write the output "
        "to another path")
    assert manifest.read_bytes() == before

    out = tmp_path / "out.jsonl"
    assert main([*base, "--output", str(out), "--max-new-tokens", "2", "--limit", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--output", str(out), "--max-new-tokens", "3"]) == 2
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "its rows were written with other settings (options.max_new_tokens: 2 in the file, 3 now)" in error
    assert [r["id"] for r in read_jsonl(out)] == ["r1"]
    assert main([*base, "--output", str(out), "--max-new-tokens", "2"]) == 0  # same settings: resumes
    assert "1 written, 1 already done" in capsys.readouterr().err
    recorded = json.loads((tmp_path / "out.jsonl.settings.json").read_text())
    assert recorded["model"] == str(checkpoint.resolve()) and recorded["options"]["max_new_tokens"] == 2
