"""``snr``: signal-to-noise ratio in dB (``snr_db``), binned low/medium/high.

Noise power is estimated from the quietest frames (the VAD's non-speech frames when the VAD ran
and found at least 0.3 s of them, else the quietest 10% of frames); speech power from the frames
above the median, less the noise.
"""

from __future__ import annotations

import numpy as np

from speechllm.audio import measures
from speechllm.config.describe import SNR_NAMES, bin_value
from speechllm.data.manifest import Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator

MIN_NOISE_SECONDS = 0.3
MAX_SNR_DB = 60.0


def vad_snr_db(clip: AudioClip) -> float | None:
    """SNR from VAD segments: non-speech frames are noise, speech frames speech + noise."""
    if not clip.speech_segments:
        return None
    p = clip.cached("frame_powers", lambda: measures.frame_powers(clip.wave, clip.sample_rate))
    t = np.arange(p.size) * measures.HOP_SECONDS + measures.FRAME_SECONDS / 2
    in_speech = np.zeros(p.size, dtype=bool)
    for s, e in clip.speech_segments:
        in_speech |= (t >= s) & (t < e)
    if (~in_speech).sum() * measures.HOP_SECONDS < MIN_NOISE_SECONDS or not in_speech.any():
        return None
    noise = float(p[~in_speech].mean())
    speech = float(p[in_speech].mean()) - noise
    if noise <= 1e-12:
        return MAX_SNR_DB
    return float(np.clip(10 * np.log10(max(speech, 1e-12) / noise), -10.0, MAX_SNR_DB))


@register_annotator
class SnrAnnotator(Annotator):
    name = "snr"
    description = "estimated SNR in dB (VAD non-speech or quietest frames as noise), binned low/medium/high"

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        snr = vad_snr_db(clip)
        if snr is None:
            snr = measures.percentile_snr_db(clip.wave, clip.sample_rate, max_db=MAX_SNR_DB)
        bins = self.config.snr
        self.set(utt, "snr_db", round(snr, 1))
        self.set(utt, "snr", bin_value(snr, bins.low_below, bins.high_above, SNR_NAMES))
