"""``volume``: active-speech RMS level in dBFS (``volume_dbfs``), binned quiet/normal/loud."""

from __future__ import annotations

from speechllm.audio import measures
from speechllm.config.describe import VOLUME_NAMES, bin_value
from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator


@register_annotator
class VolumeAnnotator(Annotator):
    name = "volume"
    description = "active RMS level in dBFS (silence excluded), binned quiet/normal/loud"

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        level = measures.active_level_dbfs(clip.wave, clip.sample_rate)
        bins = self.config.volume
        self.set(utt, "volume_dbfs", round(level, 2))
        self.set(utt, "volume", bin_value(level, bins.quiet_below, bins.loud_above, VOLUME_NAMES))
