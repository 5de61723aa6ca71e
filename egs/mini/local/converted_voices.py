"""Check the gender-converted voices (docs/synthetic-corpus.md): for a few voices and their
converted twins, one Harvard sentence each: median F0, voice2gender's probability of "female"
(an independent pitch/spectral classifier, the describe stage's gender annotator) and Whisper
tiny.en's word error rate.

    python egs/mini/local/converted_voices.py [--out exp/mini/converted_voices.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

SENTENCE = "The birch canoe slid on the smooth planks, and the boy glued the sheet to the dark blue background."
SOURCES = ("kokoro-en-us-jf_alpha", "kokoro-en-gb-jf_nezumi", "kokoro-en-us-jf_gongitsune+jf_nezumi",
           "kokoro-en-us-jm_kumo", "piper-joe")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = ap.parse_args()

    import jiwer
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor
    from whisper_normalizer.english import EnglishTextNormalizer

    from speechllm.assets.registry import asset_path
    from speechllm.audio import measures
    from speechllm.config.describe import DescribeConfig
    from speechllm.data.synth import PITCH_TARGETS
    from speechllm.data.tts import (
        TtsCache,
        default_cache_dir,
        natural_voices,
        set_median_f0,
        synthesize_natural,
    )
    from speechllm.describe.annotators.gender import GenderAnnotator

    whisper = asset_path("whisper-tiny.en")
    processor = WhisperProcessor.from_pretrained(whisper)
    model = WhisperForConditionalGeneration.from_pretrained(whisper).eval()
    normalise = EnglishTextNormalizer()
    classifier = GenderAnnotator(DescribeConfig())
    classifier.load()
    voices = {v.id: v for v in natural_voices()}
    lines = ["| voice | gender label | median F0 (Hz) | voice2gender P(female) | Whisper tiny.en WER |",
             "| --- | --- | ---: | ---: | ---: |"]
    for source in SOURCES:
        for voice in (voices[source], voices[f"{source}-as-{'male' if voices[source].gender == 'female' else 'female'}"]):
            raw = synthesize_natural(voice, SENTENCE, cache=TtsCache(default_cache_dir()))
            wave = set_median_f0(raw, 16000, PITCH_TARGETS[voice.gender]["normal"], voice.engine_gender,
                                 formant_shift=voice.formant_shift)
            label, confidence = classifier.predict(wave, 16000)
            female = confidence if label == "female" else 1 - confidence
            features = processor.feature_extractor(wave, sampling_rate=16000, return_tensors="pt").input_features
            with torch.inference_mode():
                heard = processor.tokenizer.decode(model.generate(features, max_new_tokens=40)[0],
                                                   skip_special_tokens=True)
            wer = jiwer.wer(normalise(SENTENCE), normalise(heard))
            lines.append(f"| {voice.id} | {voice.gender} | {measures.median_f0(wave, 16000)[0]:.0f} | "
                         f"{female:.3f} | {wer:.2f} |")
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
