"""Natural TTS voices (Kokoro-82M from espeak-ng phonemes, Piper joe) and the synthesis cache."""

from __future__ import annotations

import numpy as np
import pytest

from speechllm.audio import measures
from speechllm.data.tts import TtsCache, Voice, natural_voices, set_median_f0, synthesize_natural
from speechllm.data.tts import kokoro as kokoro_tts

SENTENCE = "The birch canoe slid on the smooth planks."


def _kokoro_voice(**kw) -> Voice:
    spec = {"id": "kokoro-test", "engine": "kokoro", "name": "jf_gongitsune", "gender": "female",
            "accent": "British", "heldout": False, "pitch_control": False, "language": "en-gb"}
    return Voice(**(spec | kw))


@pytest.fixture(scope="module")
def natural_installed():
    from speechllm.data.tts import check_natural_installed
    from speechllm.data.tts.base import SynthError

    try:
        check_natural_installed()
    except SynthError as e:
        pytest.skip(str(e))


def test_espeak_ipa_maps_onto_kokoro_symbols():
    # Diphthongs and affricates become Kokoro's single symbols; American drops length marks and
    # writes the flap as T; British keeps length and its own GOAT vowel.
    assert kokoro_tts.ipa_to_kokoro("bˈɜːt^ʃ dˈɑː^ɹk bˈækɡɹa^ʊnd wˈɔːɾɚ ɡˈo^ʊ", "en-us") == "bˈɜɹʧ dˈɑɹk bˈækɡɹWnd wˈɔTəɹ ɡˈO"
    assert kokoro_tts.ipa_to_kokoro("bˈɜːt^ʃ dˈɑːk ɡˈə^ʊ wˈe^ɪ bˈɒtə^lz", "en-gb") == "bˈɜːʧ dˈɑːk ɡˈQ wˈA bˈɒtᵊlz"
    assert all(c in kokoro_tts._vocab() for c in "bˈɜɹʧdɑkWwɔTəɡOQAɒᵊlzː ")


def test_english_phonemes_keep_clause_punctuation():
    us = kokoro_tts.english_phonemes("Glue the sheet, then stop", "en-us")
    gb = kokoro_tts.english_phonemes("Glue the sheet, then stop", "en-us".replace("us", "gb"))
    assert us.count(",") == 1 and us.endswith(".") and "ː" not in us
    assert gb != us and "ː" in gb  # the phoneme set, hence the accent, differs
    with pytest.raises(Exception, match="en-us, en-gb"):
        kokoro_tts.ipa_to_kokoro("a", "en-au")


def test_voice_inventory_holds_out_a_pack_and_piper():
    voices = natural_voices()
    assert len({v.id for v in voices}) == len(voices)
    heldout = [v for v in voices if v.heldout]
    assert {v.engine for v in heldout} == {"kokoro", "piper"}
    assert all(v.heldout == ("jf_tebukuro" in v.id or v.engine == "piper") for v in voices)
    seen = [v for v in voices if not v.heldout]
    assert {v.gender for v in seen} == {"female", "male"} and {v.accent for v in seen} == {"American", "British"}
    # a blend mixes female packs only: a male+female blend lands at an ambiguous pitch
    for v in voices:
        if v.blend:
            assert all(kokoro_tts.PACKS[p] == "female" for p, _ in v.blend) and v.engine_gender == "female"


def test_every_natural_voice_has_a_converted_twin_of_the_other_gender():
    voices = {v.id: v for v in natural_voices()}
    converted = [v for v in voices.values() if v.source_gender]
    assert len(converted) * 2 == len(voices)
    for v in converted:
        source = voices[v.id.replace(f"-as-{v.gender}", "")]
        assert not source.source_gender and source.gender == v.source_gender != v.gender
        assert (source.engine, source.name, source.blend, source.language, source.warp, source.heldout) == \
               (v.engine, v.name, v.blend, v.language, v.warp, v.heldout)
        assert v.formant_shift == pytest.approx(0.85 if v.gender == "male" else 1 / 0.85)
        # the engine speaks the source voice: a converted voice reads its source's cache entries
        assert TtsCache(None).key(v, "ab", {"speed": 1.0}, "1") == TtsCache(None).key(source, "ab", {"speed": 1.0}, "1")
    # both genders get voices from every engine and from both source genders, in training and held out
    for heldout in (False, True):
        for gender in ("female", "male"):
            pool = [v for v in voices.values() if v.heldout == heldout and v.gender == gender]
            assert {bool(v.source_gender) for v in pool} == {False, True}


def test_cache_keys_of_unconverted_voices_did_not_change():
    # The key of the voices every earlier corpus used (pinned from before converted voices existed):
    # a change would throw away every user's synthesis cache.
    voice = next(v for v in natural_voices() if v.id == "kokoro-en-us-jf_alpha")
    assert TtsCache(None).key(voice, "ab", {"speed": 1.0}, "x") == "13c45e71e6e8b6706a33259d50f41f7a"


def test_kokoro_is_deterministic_cached_and_whisper_understands_it(natural_installed, offline_whisper_tiny_en,
                                                                   tmp_path):
    import jiwer
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from whisper_normalizer.english import EnglishTextNormalizer

    voice = _kokoro_voice()
    cache = TtsCache(tmp_path / "cache")
    first = synthesize_natural(voice, SENTENCE, cache=cache)
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
    again = synthesize_natural(voice, SENTENCE, cache=TtsCache(None))  # no cache: the engine again
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, synthesize_natural(voice, SENTENCE, cache=cache))
    assert 1.5 < first.size / 16000 < 5.0

    processor = WhisperProcessor.from_pretrained(offline_whisper_tiny_en)
    model = WhisperForConditionalGeneration.from_pretrained(offline_whisper_tiny_en).eval()
    features = processor.feature_extractor(first, sampling_rate=16000, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(features, max_new_tokens=40)
    heard = processor.tokenizer.decode(ids[0], skip_special_tokens=True)
    norm = EnglishTextNormalizer()
    assert jiwer.wer(norm(SENTENCE), norm(heard)) <= 0.15, heard


def test_warp_and_f0_change_move_the_pitch(natural_installed, tmp_path):
    cache = TtsCache(tmp_path)
    plain = synthesize_natural(_kokoro_voice(name="jm_kumo", gender="male"), SENTENCE, cache=cache)
    f0_plain, _ = measures.median_f0(plain, 16000)
    warped = synthesize_natural(_kokoro_voice(name="jm_kumo", gender="male", warp=1.08), SENTENCE, cache=cache)
    f0_warped, _ = measures.median_f0(warped, 16000)
    assert f0_plain < 100 and f0_warped == pytest.approx(f0_plain * 1.08, rel=0.04)
    # the engine ran at speed / warp, so the warp leaves the tempo
    assert warped.size == pytest.approx(plain.size, rel=0.06)
    shifted = set_median_f0(plain, 16000, 140.0, "male")
    assert measures.median_f0(shifted, 16000)[0] == pytest.approx(140.0, rel=0.03)


def _spectral_centroid(wave: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    return float((power * np.fft.rfftfreq(wave.size, 1 / 16000)).sum() / power.sum())


def test_gender_conversion_moves_f0_and_formants(natural_installed, tmp_path):
    voices = {v.id: v for v in natural_voices()}
    source, converted = voices["kokoro-en-us-jf_alpha"], voices["kokoro-en-us-jf_alpha-as-male"]
    plain = synthesize_natural(source, SENTENCE, cache=TtsCache(tmp_path))
    assert measures.median_f0(plain, 16000)[0] > 200
    # same F0 target with and without the formant shift: only the vocal tract differs
    kept = set_median_f0(plain, 16000, 115.0, converted.engine_gender)
    male = set_median_f0(plain, 16000, 115.0, converted.engine_gender, formant_shift=converted.formant_shift)
    assert measures.median_f0(male, 16000)[0] == pytest.approx(115.0, rel=0.04)
    assert measures.median_f0(kept, 16000)[0] == pytest.approx(115.0, rel=0.04)
    assert _spectral_centroid(male) < 0.95 * _spectral_centroid(kept)
    np.testing.assert_array_equal(male, set_median_f0(plain, 16000, 115.0, "female", formant_shift=0.85))


def test_piper_joe_speaks_and_is_cached(natural_installed, tmp_path):
    voice = next(v for v in natural_voices() if v.id == "piper-joe")
    cache = TtsCache(tmp_path)
    wave = synthesize_natural(voice, SENTENCE, cache=cache)
    f0, voiced = measures.median_f0(wave, 16000)
    assert voice.gender == "male" and f0 < 130 and voiced > 0.3
    # Piper's noise is drawn inside its graph unseeded: the cache is what makes a corpus repeatable
    np.testing.assert_array_equal(wave, synthesize_natural(voice, SENTENCE, cache=cache))
