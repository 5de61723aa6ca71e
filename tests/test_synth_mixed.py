"""The mixed synthetic corpus: natural and robotic voices, non-speech, noise and rooms, with
labels true to each clip and voices and sounds held out for test."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import soundfile as sf

from speechllm.audio import measures
from speechllm.config.describe import (
    PITCH_NAMES,
    RATE_NAMES,
    SNR_NAMES,
    VOLUME_NAMES,
    PitchBins,
    SnrBins,
    SpeakingRateBins,
    VolumeBins,
    bin_value,
)
from speechllm.data.manifest import read_manifest
from speechllm.data.sounds import HELDOUT_SOUND_KINDS, NOISE_TYPES, reverberation_bin
from speechllm.data.synth import CorpusMix, SynthError, build_synthetic_corpus, plan_mixed_corpus
from speechllm.data.tts import natural_voices

MIX = CorpusMix(natural=0.5, nonspeech=0.25, noisy=0.5, reverb=0.5)
#: The built corpus also has gender-converted voices (seed 2 gives one clean converted row).
BUILT_MIX = CorpusMix(natural=0.5, nonspeech=0.25, noisy=0.5, reverb=0.5, converted=0.5)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    from speechllm.data.tts import check_natural_installed

    try:
        check_natural_installed()
    except SynthError as e:
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("mixed")
    build_synthetic_corpus(root / "a", num=8, seed=2, jobs=2, progress=False, mix=BUILT_MIX, cache_dir=root / "cache")
    return root / "a", root / "cache"


def _digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_plan_mixes_kinds_and_holds_out_voices_and_sounds(harvard_sentences):
    specs = plan_mixed_corpus(harvard_sentences, 600, seed=1, mix=MIX)
    kinds = [("nonspeech" if s.kind == "nonspeech" else "natural" if s.voice.natural else "robotic") for s in specs]
    shares = {k: kinds.count(k) / len(kinds) for k in ("natural", "robotic", "nonspeech")}
    assert shares == pytest.approx({"natural": 0.5, "robotic": 0.25, "nonspeech": 0.25}, abs=0.06)
    train = [s for s in specs if s.split != "test"]
    test = [s for s in specs if s.split == "test"]
    assert not any(s.voice.heldout for s in train if s.voice)
    assert not any(s.sound in HELDOUT_SOUND_KINDS for s in train)
    assert any(s.voice and s.voice.heldout and s.voice.natural for s in test)
    assert any(s.sound in HELDOUT_SOUND_KINDS for s in test)
    natural = [s for s in train if s.voice and s.voice.natural]
    assert {s.voice.gender for s in natural} == {"female", "male"}
    female = sum(s.voice.gender == "female" for s in natural) / len(natural)
    assert 0.4 < female < 0.6  # gender is drawn first: the few male packs are not outnumbered
    speech = [s for s in specs if s.kind == "speech"]
    assert sum(bool(s.noise) for s in speech) / len(speech) == pytest.approx(0.5, abs=0.07)
    assert {s.snr_bin for s in speech if s.noise} == set(SNR_NAMES)
    assert plan_mixed_corpus(harvard_sentences, 600, seed=1, mix=MIX) == specs
    assert not any(s.voice.source_gender for s in specs if s.voice)  # converted voices only when asked for


def test_balance_gender_evens_out_the_robotic_rows(harvard_sentences):
    from dataclasses import replace

    def robotic_female_share(mix: CorpusMix) -> float:
        specs = plan_mixed_corpus(harvard_sentences, 800, seed=1, mix=mix)
        robotic = [s.voice for s in specs if s.split != "test" and s.voice and not s.voice.natural]
        return sum(v.gender == "female" for v in robotic) / len(robotic)

    assert robotic_female_share(MIX) < 0.4  # a uniform pick: flite and espeak-ng voices are mostly male
    assert robotic_female_share(replace(MIX, balance_gender=True)) == pytest.approx(0.5, abs=0.08)


def test_converted_voices_make_each_source_speak_for_both_genders(harvard_sentences):
    from dataclasses import replace

    specs = plan_mixed_corpus(harvard_sentences, 800, seed=1, mix=replace(MIX, converted=0.5))
    plain = plan_mixed_corpus(harvard_sentences, 800, seed=1, mix=MIX)
    # only the natural voices change: texts, kinds, conditions and seeds are the same rows
    assert [(s.id, s.text, s.kind, s.noise, s.render_seed) for s in specs] == \
           [(s.id, s.text, s.kind, s.noise, s.render_seed) for s in plain]
    natural = [s.voice for s in specs if s.voice and s.voice.natural]
    assert sum(bool(v.source_gender) for v in natural) / len(natural) == pytest.approx(0.5, abs=0.08)
    for gender in ("female", "male"):
        sources = [v.engine_gender for v in natural if v.gender == gender and not v.heldout]
        # each gender's training rows come from male and from female source voices, about evenly
        assert 0.35 < sources.count("female") / len(sources) < 0.65
    train = [s for s in specs if s.split != "test" and s.voice]
    assert not any(s.voice.heldout for s in train)
    assert {s.voice.id for s in specs if s.split == "test" and s.voice and s.voice.heldout and s.voice.source_gender}


def test_labels_are_true_to_each_clip(corpus):
    folder, _ = corpus
    rows = read_manifest(folder / "all.jsonl")
    voices = {v.id: v for v in natural_voices()}
    seen_kinds = set()
    for u in rows:
        a, s = u.attributes, u.extra["synth"]
        wave, sr = sf.read(u.audio_path, dtype="float32")
        assert sr == 16000 and u.duration == pytest.approx(wave.size / sr, abs=1e-3)
        assert set(u.provenance.values()) == {"corpus"} and "emotion" not in a
        assert a["volume"] == bin_value(s["level_dbfs"], VolumeBins().quiet_below, VolumeBins().loud_above,
                                        VOLUME_NAMES)
        assert measures.active_level_dbfs(wave, sr) == pytest.approx(s["level_dbfs"], abs=0.05)
        if a.get("contains_speech") is False:
            seen_kinds.add("nonspeech")
            assert u.speaker is None and u.transcript is None and "gender" not in a and a["sound"]
            continue
        assert u.transcript and a["contains_speech"] is True  # the VAD may miss speech under noise
        if "snr" in a:
            seen_kinds.add("noisy")
            assert a["snr"] == bin_value(a["snr_db"], SnrBins().low_below, SnrBins().high_above, SNR_NAMES)
            assert a["noise"] in NOISE_TYPES.values()
        if "reverberation" in a:
            seen_kinds.add("reverb")
            assert a["reverberation"] == reverberation_bin(a["c50_db"])
            assert s["room"]["rt60_s"] > 0
        if s.get("natural"):
            seen_kinds.add("natural")
            voice = voices[u.speaker]
            assert (a["gender"], a["accent"], a["tts_engine"]) == (voice.gender, voice.accent, voice.engine)
            if voice.source_gender:  # the F0 below is in the converted gender's range: checked by the pitch bin
                seen_kinds.add("converted")
                assert (s["converted_from"], s["formant_shift"]) == (voice.source_gender,
                                                                     round(voice.formant_shift, 4))
            assert a["speaking_rate"] == bin_value(s["measured_syllables_per_s"], SpeakingRateBins().slow_below,
                                                   SpeakingRateBins().fast_above, RATE_NAMES)
            assert a["pitch"] == bin_value(s["measured_f0_hz"], *PitchBins().thresholds(voice.gender), PITCH_NAMES)
            assert s["measured_f0_hz"] == pytest.approx(s["f0_target_hz"], rel=0.05)
            if "snr" not in a and "reverberation" not in a:  # clean: the F0 is still in the file
                assert measures.median_f0(wave, sr)[0] == pytest.approx(s["measured_f0_hz"], rel=0.05)
    assert seen_kinds == {"nonspeech", "noisy", "reverb", "natural", "converted"}


def test_same_seed_same_bytes_with_the_cache(corpus, tmp_path):
    folder, cache = corpus
    build_synthetic_corpus(tmp_path / "b", num=8, seed=2, jobs=1, progress=False, mix=BUILT_MIX, cache_dir=cache)
    assert _digest(tmp_path / "b") == _digest(folder)


def test_a_larger_test_split_starts_with_the_same_rows(corpus, tmp_path):
    folder, cache = corpus
    counts = build_synthetic_corpus(tmp_path / "t", num=20, seed=2, jobs=1, progress=False, mix=BUILT_MIX,
                                    cache_dir=cache, splits=("test",))
    assert counts == {"test": 2}
    small, large = read_manifest(folder / "test.jsonl"), read_manifest(tmp_path / "t" / "test.jsonl")
    assert [u.to_dict() for u in large[:len(small)]] == [u.to_dict() for u in small]
    assert not (tmp_path / "t" / "train.jsonl").exists()
    with pytest.raises(SynthError, match="choose among train, dev, test"):
        build_synthetic_corpus(tmp_path / "u", num=12, mix=MIX, splits=("eval",))


def test_mix_shares_are_checked():
    with pytest.raises(SynthError, match="exceed 1"):
        CorpusMix(natural=0.8, nonspeech=0.3)
    with pytest.raises(SynthError, match="--noisy must be a share"):
        CorpusMix(noisy=1.5)
    with pytest.raises(SynthError, match="unknown natural engine"):
        CorpusMix(engines=("festival",))
    assert CorpusMix(natural=0, nonspeech=0, noisy=0, reverb=0).is_plain


def test_cli_options_reach_the_corpus(tmp_path, capsys):
    from speechllm.cli import main

    assert main(["synth", str(tmp_path / "c"), "--num", "3", "--nonspeech", "1", "--jobs", "1", "--no-progress"]) == 0
    rows = read_manifest(tmp_path / "c" / "all.jsonl")
    assert all(u.attributes["contains_speech"] is False for u in rows)
    assert main(["synth", str(tmp_path / "d"), "--num", "3", "--natural", "0.7", "--nonspeech", "0.7"]) == 2
    assert "exceed 1" in capsys.readouterr().err
    assert len(rows) == 3
