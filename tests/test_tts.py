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
            assert all(kokoro_tts.PACKS[p] == "female" for p, _ in v.blend) and v.gender == "female"


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


def test_piper_joe_speaks_and_is_cached(natural_installed, tmp_path):
    voice = next(v for v in natural_voices() if v.id == "piper-joe")
    cache = TtsCache(tmp_path)
    wave = synthesize_natural(voice, SENTENCE, cache=cache)
    f0, voiced = measures.median_f0(wave, 16000)
    assert voice.gender == "male" and f0 < 130 and voiced > 0.3
    # Piper's noise is drawn inside its graph unseeded: the cache is what makes a corpus repeatable
    np.testing.assert_array_equal(wave, synthesize_natural(voice, SENTENCE, cache=cache))
