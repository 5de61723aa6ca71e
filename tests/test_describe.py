"""The describe stage: annotate + render, skip summary, resume after a kill, shards, processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.describe import DescribeConfig, describe_manifest, render_description
from speechllm.utils.jsonl import read_jsonl

CHEAP = ["duration", "vad", "volume", "snr", "pitch", "speaking_rate"]


@pytest.fixture(scope="module")
def corpus(harvard_sentences, tmp_path_factory) -> Path:
    from speechllm.data.synth import build_synthetic_corpus

    sentences = tmp_path_factory.mktemp("s") / "h.txt"
    sentences.write_text("\n".join(harvard_sentences), encoding="utf-8")
    out = tmp_path_factory.mktemp("synth") / "corpus"
    build_synthetic_corpus(out, num=6, seed=2, sentences_path=sentences, jobs=1, progress=False)
    return out


@pytest.fixture(scope="module")
def mixed_manifest(corpus, real_audio_dir, tmp_path_factory) -> Path:
    """Synthetic speech, a robin chirp (no gender/transcript), a missing file and silent audio."""
    d = tmp_path_factory.mktemp("mixed")
    sf.write(d / "silent.wav", np.zeros(16000, np.int16), 16000, subtype="PCM_16")
    rows = read_jsonl(corpus / "all.jsonl")
    for r in rows:
        r["audio"] = str(corpus / r["audio"])
    rows += [
        {"id": "robin", "audio": str(real_audio_dir / "robin-chirp.ogg")},
        {"id": "gone", "audio": "missing.wav"},
        {"id": "silent", "audio": "silent.wav"},
    ]
    path = d / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_describe_annotates_renders_and_summarises(mixed_manifest, tmp_path):
    out = tmp_path / "out" / "described.jsonl"
    summary = describe_manifest(mixed_manifest, out, DescribeConfig(annotators=CHEAP), progress=False)
    assert summary.written == 7 and dict(summary.skipped) == {"missing": 1, "all_zero": 1}
    assert not summary.annotator_errors
    skipped = {r["id"]: r["kind"] for r in read_jsonl(out.with_name("described.jsonl.skipped.jsonl"))}
    assert skipped == {"gone": "missing", "silent": "all_zero"}

    rows = {r["id"]: r for r in read_jsonl(out)}
    for row in rows.values():
        # One renderer: the stored text is what render_description gives for the stored row.
        assert row["description"] == render_description(row)
        assert row["description_template"] == "desta2-v1"
        assert (out.parent / row["audio"]).is_file() or Path(row["audio"]).is_file()
    robin = rows.pop("robin")
    assert robin["attributes"]["contains_speech"] is False
    assert robin["description"].startswith("[00:00:00 - 00:00:0") and '"' not in robin["description"]
    assert "pitch" not in robin["attributes"]
    for row in rows.values():  # synthetic speech: corpus labels kept, measures added
        a, p = row["attributes"], row["provenance"]
        assert a["contains_speech"] is True
        assert p["speaking_rate"] == p["volume"] == p["gender"] == "corpus"
        assert p["pitch_hz"] == "annotator:pitch" and p["snr_db"] == "annotator:snr"
        assert row["transcript"] in row["description"]
        assert f"Accent: {a['accent']}" in row["description"]


def _kill_mid_run(cmd: list[str], out: Path, min_lines: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= min_lines:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_resume_after_kill_writes_each_id_once(corpus, tmp_path):
    # Many rows over the same few files: enough work to be killed in the middle.
    base = read_jsonl(corpus / "all.jsonl")
    rows = [{**base[i % len(base)], "id": f"r{i:04d}", "audio": str(corpus / base[i % len(base)]["audio"])}
            for i in range(600)]
    manifest = tmp_path / "in.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "speechllm", "describe", str(manifest), str(out),
           "--annotators", "duration,volume", "--no-progress"]
    _kill_mid_run(cmd, out, min_lines=20)
    partial = out.read_bytes().count(b"\n")
    assert 20 <= partial < len(rows), "the run should have been killed mid-way"

    summary = describe_manifest(manifest, out, DescribeConfig(annotators=["duration", "volume"]),
                                progress=False)
    ids = [r["id"] for r in read_jsonl(out)]
    assert Counter(ids) == Counter(r["id"] for r in rows)
    assert summary.already_done == partial and summary.written == len(rows) - partial


def test_resume_repairs_a_torn_last_line(corpus, tmp_path):
    manifest = corpus / "all.jsonl"
    out = tmp_path / "out.jsonl"
    cfg = DescribeConfig(annotators=["duration", "volume"])
    describe_manifest(manifest, out, cfg, progress=False)
    full = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(full[:2]) + full[2][:25])  # two rows and half of a third
    summary = describe_manifest(manifest, out, cfg, progress=False)
    assert summary.already_done == 2 and summary.written == len(full) - 2
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(r["id"] for r in read_jsonl(manifest))


def test_shards_partition_the_ids(corpus, tmp_path):
    cfg = DescribeConfig(annotators=["duration"])
    ids = []
    for i in range(2):
        out = tmp_path / f"shard{i}.jsonl"
        describe_manifest(corpus / "all.jsonl", out, cfg, shard=(i, 2), progress=False)
        ids += [r["id"] for r in read_jsonl(out)]
    assert sorted(ids) == sorted(r["id"] for r in read_jsonl(corpus / "all.jsonl"))


def test_worker_processes_give_the_same_rows(corpus, tmp_path):
    cfg = DescribeConfig(annotators=["duration", "volume", "snr", "speaking_rate"])
    one = describe_manifest(corpus / "all.jsonl", tmp_path / "one.jsonl", cfg, jobs=1, progress=False)
    two = describe_manifest(corpus / "all.jsonl", tmp_path / "two.jsonl", cfg, jobs=2, progress=False)
    assert one.written == two.written == 6
    assert read_jsonl(tmp_path / "one.jsonl") == read_jsonl(tmp_path / "two.jsonl")


def test_cli_custom_attributes_and_summary(corpus, tmp_path, capsys):
    from speechllm.cli import main

    out = tmp_path / "d.jsonl"
    rc = main(["describe", str(corpus / "test.jsonl"), str(out), "--annotators", "duration,volume",
               "--attributes", "volume,accent", "--set", "volume.loud_above=-30", "--no-progress"])
    assert rc == 0
    assert "written now: 1" in capsys.readouterr().err
    (row,) = read_jsonl(out)
    assert row["description"].endswith(f"(Volume: {row['attributes']['volume']}, "
                                       f"Accent: {row['attributes']['accent']})")
    assert (tmp_path / "d.describe.yaml").read_text().count("loud_above: -30") == 1
    assert main(["describe", str(corpus / "test.jsonl"), str(out), "-a", "nope"]) == 2
