"""``duration``: the clip length in seconds, where the manifest lacks it."""

from __future__ import annotations

from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator


@register_annotator
class DurationAnnotator(Annotator):
    name = "duration"
    description = "clip length in seconds (fills the manifest's duration field when missing)"

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        if utt.duration is None or self.config.overwrite_labels:
            utt.duration = round(clip.seconds, 3)
            utt.provenance.setdefault("duration", self.provenance)
