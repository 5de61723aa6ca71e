"""``asr``: a Whisper transcript (HF transformers) for speech rows that have none.

The model is ``config.asr_model``: ``offline:whisper-tiny.en`` (the default, built from a registry
package), a local folder or a hub id. The transcript goes into the row's ``transcript`` field with
provenance ``annotator:asr`` and ``confidence.transcript`` = the geometric-mean probability of its
tokens. Non-speech rows (VAD) are skipped, as DeSTA2 does: no speech, no transcript.
"""

from __future__ import annotations

import numpy as np

from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator


@register_annotator
class AsrAnnotator(Annotator):
    name = "asr"
    requires_speech = True
    description = "Whisper transcript where the row has none (skipped for non-speech)"

    def load(self) -> None:
        # Whisper is loaded on the first row that needs a transcript: a corpus that ships
        # transcripts never pays for (or needs) the model.
        self.model = None

    def _load_model(self) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from speechllm.assets import resolve_model

        path = resolve_model(self.config.asr_model)
        self.processor = WhisperProcessor.from_pretrained(path)
        self.model = WhisperForConditionalGeneration.from_pretrained(path).eval()

    def transcribe(self, wave: np.ndarray, sample_rate: int) -> tuple[str, float]:
        """(text, geometric-mean token probability) of the first ``asr_max_seconds`` of audio."""
        import torch

        if getattr(self, "model", None) is None:
            self._load_model()
        wave = wave[: int(self.config.asr_max_seconds * sample_rate)]
        features = self.processor.feature_extractor(
            wave, sampling_rate=sample_rate, return_tensors="pt"
        ).input_features
        # A multilingual Whisper left to detect the language can pick a wrong one on short or
        # noisy clips; English-only models take no language argument.
        language = {"language": self.config.asr_language, "task": "transcribe"} if (
            self.config.asr_language and self.model.config.vocab_size >= 51865) else {}
        with torch.inference_mode():
            out = self.model.generate(
                features, max_new_tokens=self.config.asr_max_new_tokens, return_dict_in_generate=True,
                output_scores=True, **language,
            )
            scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        text = self.processor.tokenizer.decode(out.sequences[0], skip_special_tokens=True).strip()
        logprobs = scores[0][torch.isfinite(scores[0])]
        confidence = float(torch.exp(logprobs.mean())) if logprobs.numel() else 0.0
        return text, confidence

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        if utt.transcript and not self.config.overwrite_labels:
            return
        text, confidence = self.transcribe(clip.wave, clip.sample_rate)
        utt.transcript = text
        utt.provenance["transcript"] = self.provenance
        utt.extra.setdefault("confidence", {})["transcript"] = round(confidence, 4)
