"""``hf-classifier``: any Hugging Face audio-classification model the user names.

``config.classifiers`` maps an attribute to a model (``emotion: superb/wav2vec2-base-superb-er``,
or a local folder / ``offline:NAME``); the top label becomes the attribute, marked as a prediction
(``confidence.<attribute>`` = its score) and ``predictions.<attribute>`` records the model, every
label it can output (its label map) and the scores. The label is written as the model names it:
pick a model whose labels read well in a description.
"""

from __future__ import annotations

from typing import Any

from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator
from speechllm.errors import SpeechLLMError


@register_annotator
class HfClassifierAnnotator(Annotator):
    name = "hf-classifier"
    description = "runs pipeline('audio-classification') models from config.classifiers (attribute -> model)"

    def load(self) -> None:
        from transformers import pipeline

        from speechllm.assets import resolve_model
        from speechllm.utils.remote_code import refusing_remote_code, remote_code_allowed

        if not self.config.classifiers:
            raise SpeechLLMError(
                "the hf-classifier annotator needs at least one model: "
                "--classifier ATTRIBUTE=MODEL (e.g. emotion=superb/wav2vec2-base-superb-er)"
            )
        self.pipelines: dict[str, Any] = {}
        self.label_maps: dict[str, list[str]] = {}
        for attribute, model in self.config.classifiers.items():
            with refusing_remote_code(model):  # the user's --trust-remote-code only; never HF's prompt
                pipe = pipeline("audio-classification", model=resolve_model(model), device="cpu",
                                trust_remote_code=remote_code_allowed())
            self.pipelines[attribute] = pipe
            id2label = getattr(pipe.model.config, "id2label", {}) or {}
            self.label_maps[attribute] = [id2label[i] for i in sorted(id2label)]

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        for attribute, pipe in self.pipelines.items():
            scores = pipe({"raw": clip.wave, "sampling_rate": clip.sample_rate},
                          top_k=len(self.label_maps[attribute]) or None)
            best = max(scores, key=lambda s: s["score"])
            if self.set(utt, attribute, best["label"], confidence=best["score"]):
                utt.extra.setdefault("predictions", {})[attribute] = {
                    "model": self.config.classifiers[attribute],
                    "labels": self.label_maps[attribute],
                    "scores": {s["label"]: round(float(s["score"]), 4) for s in scores},
                }
