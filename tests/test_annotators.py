"""Annotators on audio with known properties (generated tones, levels, noise) and on real clips."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from speechllm.audio import load_audio, measures
from speechllm.data.manifest import Utterance
from speechllm.describe import DescribeConfig
from speechllm.describe.annotators import (
    Annotator,
    AudioClip,
    UnknownAnnotatorError,
    available_annotators,
    build_annotators,
    register_annotator,
)

SR = 16_000


def harmonic_tone(f0: float, seconds: float = 1.0, rms_dbfs: float = -20.0, seed: int = 0) -> np.ndarray:
    """A voice-like harmonic complex (10 harmonics, 1/k amplitudes) with slight jitter-free F0."""
    t = np.arange(int(seconds * SR)) / SR
    wave = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 11))
    wave = wave / np.sqrt(np.mean(wave**2)) * 10 ** (rms_dbfs / 20)
    return wave.astype(np.float32)


def utt(**attributes) -> Utterance:
    provenance = {k: "corpus" for k in attributes}
    return Utterance(id="u", audio=None, attributes=dict(attributes), provenance=provenance)


def run(names, u: Utterance, wave: np.ndarray, config: DescribeConfig | None = None) -> Utterance:
    config = config or DescribeConfig()
    clip = AudioClip(wave=wave, sample_rate=SR)
    for annotator in build_annotators(names, config):
        annotator.load()
        annotator.annotate(u, clip)
    return u


# --- pitch -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("f0", "gender", "expected"),
    [(120, "male", "normal"), (220, "male", "high"), (85, "male", "low"),
     (220, "female", "normal"), (150, "female", "low"), (280, "female", "high")],
)
def test_pitch_bins_relative_to_gender(f0, gender, expected):
    u = Utterance(id="u", audio=None, attributes={"gender": gender}, provenance={"gender": "corpus"})
    run(["pitch"], u, harmonic_tone(f0))
    assert u.attributes["pitch_hz"] == pytest.approx(f0, rel=0.02)
    assert u.attributes["pitch"] == expected
    assert u.provenance["pitch"] == "annotator:pitch"
    assert "confidence" not in u.extra  # a measurement, not a prediction


def test_corpus_label_is_kept_unless_told():
    u = utt(gender="male", pitch="low")
    run(["pitch"], u, harmonic_tone(220))
    assert u.attributes["pitch"] == "low" and u.provenance["pitch"] == "corpus"
    assert u.attributes["pitch_hz"] == pytest.approx(220, rel=0.02)  # new measures are still added
    u2 = utt(gender="male", pitch="low")
    run(["pitch"], u2, harmonic_tone(220), DescribeConfig(overwrite_labels=True))
    assert u2.attributes["pitch"] == "high" and u2.provenance["pitch"] == "annotator:pitch"


# --- volume and SNR ----------------------------------------------------------------------------
@pytest.mark.parametrize(("level", "expected"), [(-10.0, "loud"), (-27.0, "normal"), (-40.0, "quiet")])
def test_volume_level_and_bin(level, expected):
    wave = np.concatenate([np.zeros(SR // 2, np.float32), harmonic_tone(150, rms_dbfs=level)])
    u = run(["volume"], utt(), wave)
    assert u.attributes["volume_dbfs"] == pytest.approx(level, abs=0.3)  # silence is excluded
    assert u.attributes["volume"] == expected


@pytest.mark.parametrize(("snr_db", "expected"), [(0.0, "low"), (17.0, "medium"), (35.0, "high")])
def test_snr_estimate_with_known_noise(snr_db, expected):
    rng = np.random.default_rng(1)
    tone = harmonic_tone(140, seconds=1.5, rms_dbfs=-20)
    clean = np.concatenate([np.zeros(SR // 2), tone, np.zeros(SR // 2)]).astype(np.float32)
    noise = rng.standard_normal(clean.size).astype(np.float32) * 10 ** ((-20 - snr_db) / 20)
    u = run(["snr"], utt(), clean + noise)
    assert u.attributes["snr_db"] == pytest.approx(snr_db, abs=2.0)
    assert u.attributes["snr"] == expected


# --- speaking rate -----------------------------------------------------------------------------
def test_count_syllables():
    assert measures.count_syllables("The birch canoe slid on the smooth planks.") == 9
    assert measures.count_syllables("little table") == 4
    assert measures.count_words("It's easy to tell the depth of a well.") == 9


@pytest.mark.parametrize(
    ("text", "expected"),
    [("one two three four five", "slow"),  # 5 syllables in 2 s
     ("The birch canoe slid on the smooth planks", "normal"),  # 9 in 2 s
     ("The birch canoe slid on the smooth planks and the birch canoe slid again", "fast")],  # 17
)
def test_speaking_rate_over_speech_span(text, expected):
    wave = np.concatenate([np.zeros(SR), harmonic_tone(130, seconds=2.0), np.zeros(SR)])
    u = Utterance(id="u", audio=None, transcript=text)
    run(["speaking_rate"], u, wave)
    syllables = measures.count_syllables(text)
    assert u.attributes["syllables_per_s"] == pytest.approx(syllables / 2.0, rel=0.03)
    assert u.attributes["speaking_rate"] == expected


def test_duration_fills_only_missing():
    u = run(["duration"], Utterance(id="u", audio=None), np.ones(24000, np.float32) * 0.1)
    assert u.duration == 1.5 and u.provenance["duration"] == "annotator:duration"
    u2 = run(["duration"], Utterance(id="u", audio=None, duration=9.0), np.ones(24000, np.float32))
    assert u2.duration == 9.0


# --- VAD (silero) ------------------------------------------------------------------------------
def test_vad_robin_is_non_speech_and_reader_is_speech(real_audio_dir):
    robin = run(["vad"], utt(), load_audio(real_audio_dir / "robin-chirp.ogg"))
    assert robin.attributes["contains_speech"] is False
    assert robin.attributes["speech_ratio"] < 0.05
    reader = run(["vad"], utt(), load_audio(real_audio_dir / "198-209-0000.ogg"))
    assert reader.attributes["contains_speech"] is True
    assert 0.6 < reader.attributes["speech_ratio"] <= 1.0
    assert reader.attributes["speech_start"] < reader.attributes["speech_end"]


def test_batched_vad_matches_silero_reference(real_audio_dir):
    import torch
    from silero_vad import get_speech_timestamps

    from speechllm.describe.annotators.vad import BatchedSileroVad

    vad = BatchedSileroVad()
    assert vad.batched
    wave = load_audio(real_audio_dir / "3436-172162-0000.ogg")
    with torch.inference_mode():
        reference = vad._jit.audio_forward(torch.from_numpy(wave), 16000)[0].numpy()
    np.testing.assert_allclose(vad.probabilities(wave), reference, atol=1e-4)
    expected = [(s["start"] / SR, s["end"] / SR)
                for s in get_speech_timestamps(torch.from_numpy(wave), vad._jit, sampling_rate=SR)]
    got = vad.speech_segments(wave)
    assert len(got) == len(expected)
    # pytest.approx takes flat sequences only (nested tuples raise TypeError in pytest >= 9).
    assert [t for seg in got for t in seg] == pytest.approx([t for seg in expected for t in seg], abs=0.04)


def test_speech_only_annotators_skip_non_speech(real_audio_dir):
    from speechllm.describe.pipeline import UtteranceDescriber

    describer = UtteranceDescriber(DescribeConfig(annotators=["vad", "gender", "pitch", "volume"]))
    u = Utterance(id="robin", audio=str(real_audio_dir / "robin-chirp.ogg"))
    u, _, failed = describer.describe(u)
    assert failed == []
    assert "gender" not in u.attributes and "pitch" not in u.attributes
    assert "volume" in u.attributes
    assert '"' not in u.extra["description"]


# --- gender (voice2gender) ---------------------------------------------------------------------
def test_gender_predicted_on_real_readers(real_audio_dir):
    pytest.importorskip("voice2gender")
    with open(real_audio_dir / "LABELS.tsv", encoding="utf-8") as f:
        truth = {r["file"]: r["gender"] for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "speech"}
    assert len(truth) == 3
    (annotator,) = build_annotators(["gender"], DescribeConfig())
    annotator.load()
    for name, gender in truth.items():
        u = Utterance(id=name, audio=None)
        annotator.annotate(u, AudioClip(load_audio(real_audio_dir / name), SR))
        assert u.attributes["gender"] == gender, name
        assert u.provenance["gender"] == "annotator:gender"
        assert 0.5 <= u.extra["confidence"]["gender"] <= 1.0
    # A corpus label is never second-guessed.
    labelled = utt(gender="female")
    annotator.annotate(labelled, AudioClip(load_audio(real_audio_dir / "3436-172162-0000.ogg"), SR))
    assert labelled.attributes["gender"] == "female" and "confidence" not in labelled.extra


# --- ASR ---------------------------------------------------------------------------------------
def test_asr_fills_missing_transcript_only(tiny_whisper_dir):
    config = DescribeConfig(asr_model=str(tiny_whisper_dir), asr_max_new_tokens=8)
    (asr,) = build_annotators(["asr"], config)
    asr.load()
    u = Utterance(id="u", audio=None)
    # A tone is not speech to silero: say where the VAD heard speech, so the window is transcribed.
    asr.annotate(u, AudioClip(harmonic_tone(150, seconds=1.0), SR, speech_segments=[(0.0, 1.0)]))
    # Random weights repeat one token ("JasonJason..."): a loop, recorded and left out, never a
    # transcript (the real model's transcript, provenance and confidence: the integration tests).
    assert u.transcript is None and "transcript" not in u.provenance
    assert u.extra["transcript_dropped"] == [{"start": 0.0, "end": 1.0, "reason": "loop"}]
    kept = Utterance(id="k", audio=None, transcript="gold", provenance={"transcript": "corpus"})
    asr.annotate(kept, AudioClip(harmonic_tone(150), SR))
    assert kept.transcript == "gold" and kept.provenance["transcript"] == "corpus"


@pytest.mark.integration
def test_asr_offline_whisper_tiny_en_transcribes_reader(offline_whisper_tiny_en, real_audio_dir):
    config = DescribeConfig(asr_model="offline:whisper-tiny.en")
    (asr,) = build_annotators(["asr"], config)
    asr.load()
    u = Utterance(id="u", audio=None)
    asr.annotate(u, AudioClip(load_audio(real_audio_dir / "198-209-0000.ogg"), SR))
    assert "tilney" in u.transcript.lower()
    assert u.extra["confidence"]["transcript"] > 0.5


# --- generic HF classifier ---------------------------------------------------------------------
def test_hf_classifier_records_label_map_and_confidence(tmp_path):
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    labels = {0: "neutral", 1: "happy", 2: "sad"}
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, classifier_proj_size=16, id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(cfg).save_pretrained(tmp_path / "cls")
    Wav2Vec2FeatureExtractor(sampling_rate=SR).save_pretrained(tmp_path / "cls")

    config = DescribeConfig(classifiers={"emotion": str(tmp_path / "cls")})
    u = run(["hf-classifier"], Utterance(id="u", audio=None), harmonic_tone(150), config)
    prediction = u.extra["predictions"]["emotion"]
    assert u.attributes["emotion"] in labels.values()
    assert u.provenance["emotion"] == "annotator:hf-classifier"
    assert prediction["labels"] == ["neutral", "happy", "sad"]
    assert u.extra["confidence"]["emotion"] == pytest.approx(max(prediction["scores"].values()), abs=1e-4)
    assert sum(prediction["scores"].values()) == pytest.approx(1.0, abs=1e-3)


# --- registry ----------------------------------------------------------------------------------
def test_registry_lists_builtins_and_rejects_unknown():
    names = set(available_annotators())
    assert {"duration", "vad", "volume", "snr", "gender", "pitch", "asr", "speaking_rate",
            "hf-classifier"} <= names
    with pytest.raises(UnknownAnnotatorError, match="known annotators: .*pitch"):
        build_annotators(["pitchh"], DescribeConfig())


def test_custom_annotator_registers_by_name():
    @register_annotator
    class PeakAnnotator(Annotator):
        name = "test-peak"

        def annotate(self, utt, clip):
            self.set(utt, "peak", float(np.abs(clip.wave).max()))

    u = run(["test-peak"], utt(), np.array([0.0, -0.5, 0.25] * 800, np.float32))
    assert u.attributes["peak"] == 0.5 and u.provenance["peak"] == "annotator:test-peak"
