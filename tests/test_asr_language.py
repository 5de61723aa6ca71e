"""Whisper's own transcript with a multilingual encoder: ``model.asr_language`` fixes the language
instead of detecting it per window (real whisper-base, real LibriSpeech clips)."""

from __future__ import annotations

import csv

import pytest

pytestmark = pytest.mark.integration


def test_multilingual_whisper_transcribes_english_with_a_fixed_language(offline_whisper_base, tiny_llm_dir,
                                                                        real_audio_dir):
    from speechllm.audio import load_audio
    from speechllm.config import ModelConfig
    from speechllm.models import SpeechLLM

    cfg = ModelConfig(encoder=str(offline_whisper_base), llm=str(tiny_llm_dir), transcript_source="whisper",
                      asr_language="en", dtype="fp32")
    model = SpeechLLM.from_config(cfg)
    tok = model.encoder.tokenizer
    assert model.transcriber.multilingual
    assert model.transcriber._prompt() == [tok.convert_tokens_to_ids(t) for t in
                                           ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]
    with open(real_audio_dir / "LABELS.tsv", encoding="utf-8") as f:
        speech = [r for r in csv.DictReader(f, delimiter="\t") if r["kind"] == "speech"]
    texts = model.transcribe([load_audio(real_audio_dir / r["file"]) for r in speech])
    def squash(t: str) -> str:  # "smoke stack" vs "smokestack"
        return "".join(c for c in t.lower() if c.isalnum())

    for row, text in zip(speech, texts, strict=True):
        assert squash(row["key_phrase"]) in squash(text), (row["file"], text)
