"""The offline synthetic corpus: determinism, split design, labels that match the settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechllm.audio import measures
from speechllm.config.describe import (
    PITCH_NAMES,
    RATE_NAMES,
    VOLUME_NAMES,
    PitchBins,
    SpeakingRateBins,
    VolumeBins,
    bin_value,
)
from speechllm.data.manifest import read_manifest
from speechllm.data.synth import (
    PITCH_TARGETS,
    SynthError,
    build_synthetic_corpus,
    check_tts_installed,
    list_voices,
    plan_corpus,
    read_sentences,
    split_sentences,
)

NUM = 12


@pytest.fixture(scope="module")
def sentence_file(harvard_sentences, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sentences") / "harvard.txt"
    path.write_text("\n".join(harvard_sentences) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(sentence_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    build_synthetic_corpus(out, num=NUM, seed=5, sentences_path=sentence_file, jobs=2, progress=False)
    return out


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_job_count(corpus, sentence_file, tmp_path):
    again = tmp_path / "again"
    build_synthetic_corpus(again, num=NUM, seed=5, sentences_path=sentence_file, jobs=1, progress=False)
    assert _digest(again) == _digest(corpus)
    assert len([k for k in _digest(corpus) if k.startswith("wav/")]) == NUM


def test_other_seed_other_corpus(harvard_sentences):
    a = plan_corpus(harvard_sentences, 40, seed=1)
    b = plan_corpus(harvard_sentences, 40, seed=2)
    assert [s.text for s in a] != [s.text for s in b]


def test_manifests_and_splits(corpus):
    rows = {split: read_manifest(corpus / f"{split}.jsonl") for split in ("train", "dev", "test")}
    assert [len(rows[s]) for s in ("train", "dev", "test")] == [10, 1, 1]
    everything = read_manifest(corpus / "all.jsonl")
    assert [u.id for u in everything] == [u.id for s in ("train", "dev", "test") for u in rows[s]]
    for split, utts in rows.items():
        for u in utts:
            assert u.split == split and u.corpus == "synth"
            assert u.audio == f"wav/{u.id}.wav" and u.audio_path.is_file()


def test_test_sentences_are_unseen_and_voices_held_out(harvard_sentences):
    pools = split_sentences(harvard_sentences, seed=3)
    assert not set(pools["test"]) & set(pools["train"])
    assert not set(pools["dev"]) & set(pools["train"])
    assert sum(len(p) for p in pools.values()) == len(set(harvard_sentences))

    specs = plan_corpus(harvard_sentences, 500, seed=3)
    by_split = {s: [x for x in specs if x.split == s] for s in ("train", "dev", "test")}
    train_texts = {x.text for x in by_split["train"]}
    assert not train_texts & {x.text for x in by_split["test"]}
    assert not train_texts & {x.text for x in by_split["dev"]}
    assert not any(x.voice.heldout for x in by_split["train"] + by_split["dev"])
    heldout = [x for x in by_split["test"] if x.voice.heldout]
    assert 0.4 <= len(heldout) / len(by_split["test"]) <= 0.6  # both evaluations have data
    assert {x.voice.engine for x in heldout} == {"flite", "espeak-ng"}
    # 500 rows use many voices, accents and both genders
    assert len({x.voice.accent for x in specs}) == 7
    assert {x.voice.gender for x in specs} == {"female", "male"}


def test_voice_inventory():
    voices = list_voices()
    assert len(voices) == 4 + 7 * 12
    names = {v.name for v in voices}
    assert {"slt", "rms", "kal16", "awb", "en-gb-x-rp+f2", "en-029+m7", "en-us-nyc+f1"} <= names
    assert all(not v.name.startswith("en-gb+") for v in voices)  # that form ignores the variant


def test_labels_follow_the_settings_used(corpus):
    rate_bins, volume_bins, pitch_bins = SpeakingRateBins(), VolumeBins(), PitchBins()
    for u in read_manifest(corpus / "all.jsonl"):
        s = u.extra["synth"]
        a = u.attributes
        assert set(u.provenance.values()) == {"corpus"}
        assert "emotion" not in a  # pitch/rate changes are not emotions
        assert a["speaking_rate"] == bin_value(s["expected_syllables_per_s"], rate_bins.slow_below,
                                               rate_bins.fast_above, RATE_NAMES)
        assert a["volume"] == bin_value(s["level_dbfs"], volume_bins.quiet_below,
                                        volume_bins.loud_above, VOLUME_NAMES)
        wave, sr = sf.read(u.audio_path, dtype="float32")
        assert sr == 16000 and wave.ndim == 1
        assert u.duration == pytest.approx(wave.size / sr, abs=1e-3)
        assert measures.active_level_dbfs(wave, sr) == pytest.approx(s["level_dbfs"], abs=0.05)
        if "pitch" in a:
            low, high = pitch_bins.thresholds(a["gender"])
            assert a["pitch"] == bin_value(s["expected_f0_hz"], low, high, PITCH_NAMES)
            f0, _ = measures.median_f0(wave, sr)
            assert f0 == pytest.approx(s["expected_f0_hz"], rel=0.15)
        else:
            assert u.speaker == "flite-rms"  # the one voice whose pitch cannot be set
        voice = next(v for v in list_voices() if v.id == u.speaker)
        assert (a["gender"], a["accent"], a["tts_voice"]) == (voice.gender, voice.accent, voice.name)


def test_pitch_targets_sit_inside_their_bins():
    bins = PitchBins()
    for gender, targets in PITCH_TARGETS.items():
        low, high = bins.thresholds(gender)
        assert [bin_value(targets[b], low, high, PITCH_NAMES) for b in PITCH_NAMES] == list(PITCH_NAMES)


def test_missing_tts_names_the_apt_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SynthError, match="apt-get install flite espeak-ng"):
        check_tts_installed()


def test_missing_sentence_file_is_a_clear_error(tmp_path):
    with pytest.raises(SynthError, match="--sentences FILE"):
        read_sentences(tmp_path / "nope.txt")


def test_cli_builds_a_corpus(sentence_file, tmp_path, capsys):
    from speechllm.cli import main

    out = tmp_path / "c"
    assert main(["synth", str(out), "--num", "3", "--seed", "1", "--sentences", str(sentence_file),
                 "--jobs", "1", "--no-progress"]) == 0
    assert "train 1, dev 1, test 1" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "all.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(np.isfinite(r["duration"]) for r in rows)
    assert main(["synth", str(out), "--num", "3", "--sentences", str(sentence_file)]) == 2  # exists
