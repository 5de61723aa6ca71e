"""``pitch``: median F0 of voiced frames (``pitch_hz``), binned low/normal/high for the
speaker's gender (run ``gender`` first so unlabelled speakers get one)."""

from __future__ import annotations

from speechllm.audio import measures
from speechllm.config.describe import PITCH_NAMES, bin_value
from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator

MIN_VOICED_FRAMES = 5  # 0.1 s of voicing (20 ms frames); less gives no reliable median


@register_annotator
class PitchAnnotator(Annotator):
    name = "pitch"
    requires_speech = True
    description = "median F0 (Praat autocorrelation), binned low/normal/high relative to gender"

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        cfg = self.config.pitch
        f0 = clip.cached(
            "f0", lambda: measures.pitch_track(clip.wave, clip.sample_rate, cfg.floor_hz, cfg.ceiling_hz)
        )
        voiced = f0[f0 > 0]
        if voiced.size < MIN_VOICED_FRAMES:
            return
        import numpy as np

        median = float(np.median(voiced))
        low, high = cfg.thresholds(utt.attributes.get("gender"))
        self.set(utt, "pitch_hz", round(median, 1))
        self.set(utt, "pitch", bin_value(median, low, high, PITCH_NAMES))
