"""speechllm split: field maps and speaker-disjoint hashing."""

from __future__ import annotations

import pytest

from speechllm.cli import main
from speechllm.data.manifest import Utterance, read_manifest, write_manifest
from speechllm.data.split import parse_split_map, split_manifest
from speechllm.errors import SpeechLLMError


def _manifest(tmp_path, n_speakers=40, per_speaker=3):
    rows = [Utterance(id=f"s{s}_{i}", audio=f"/abs/s{s}_{i}.wav", speaker=f"s{s}",
                      split="dev-clean" if s % 10 == 0 else "train-clean-100")
            for s in range(n_speakers) for i in range(per_speaker)]
    path = tmp_path / "in" / "manifest.jsonl"
    path.parent.mkdir()
    write_manifest(path, rows)
    return path


def test_speaker_hash_split_is_disjoint_and_deterministic(tmp_path):
    path = _manifest(tmp_path)
    counts = split_manifest(path, tmp_path / "a", dev=0.2, test=0.2, seed=3)
    again = split_manifest(path, tmp_path / "b", dev=0.2, test=0.2, seed=3)
    assert counts == again and counts["dropped"] == 0
    assert counts["train"] + counts["dev"] + counts["test"] == 120
    speakers = {name: {u.speaker for u in read_manifest(tmp_path / "a" / f"{name}.jsonl")}
                for name in ("train", "dev", "test")}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert all(speakers[n] for n in speakers)  # 40 speakers, 20% shares: none empty
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()


def test_field_map_routes_rows_and_counts_unmapped(tmp_path, capsys):
    path = _manifest(tmp_path)
    rc = main(["split", str(path), str(tmp_path / "out"), "--map", "train=train-clean-100"])
    assert rc == 0
    assert "train=108 dropped=12" in capsys.readouterr().out
    rows = read_manifest(tmp_path / "out" / "train.jsonl")
    assert {r.split for r in rows} == {"train"} and str(rows[0].audio_path) == rows[0].audio


def test_bad_maps_and_fractions():
    assert parse_split_map(["train=a+b", "dev=c"]) == {"a": "train", "b": "train", "c": "dev"}
    with pytest.raises(SpeechLLMError, match="mapped to both"):
        parse_split_map(["train=a", "dev=a"])
    with pytest.raises(SpeechLLMError, match="expected NAME=VALUE"):
        parse_split_map(["train"])
    with pytest.raises(SpeechLLMError, match="dev \\+ test < 1"):
        split_manifest("x.jsonl", "out", dev=0.6, test=0.5)
