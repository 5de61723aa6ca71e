"""``gender``: predicted with voice2gender where the manifest has no gender label.

voice2gender is an XGBoost model over pitch and spectral features that expects mono int16 PCM at
44.1 kHz; the speech segments (or the whole clip) are resampled to that. The value is marked as a
prediction: provenance ``annotator:gender`` and ``confidence.gender`` = probability of the
predicted class.
"""

from __future__ import annotations

import numpy as np

from speechllm.data.manifest import PROVENANCE_CORPUS, PROVENANCE_USER, Utterance
from speechllm.describe.annotators.base import Annotator, AudioClip, register_annotator
from speechllm.errors import SpeechLLMError

V2G_SAMPLE_RATE = 44_100


@register_annotator
class GenderAnnotator(Annotator):
    name = "gender"
    requires_speech = True
    description = "voice2gender prediction (female/male + confidence) for rows without a gender label"

    def load(self) -> None:
        try:
            import voice2gender
        except ImportError:
            raise SpeechLLMError(
                "the gender annotator needs voice2gender: pip install --no-deps voice2gender==0.1.1 "
                "xgboost-cpu scipy (or bash scripts/install.sh --offline)"
            ) from None
        self._predict = voice2gender.predict

    def predict(self, wave: np.ndarray, sample_rate: int) -> tuple[str, float]:
        """(``"female"`` or ``"male"``, probability of that class) for mono float audio."""
        from speechllm.audio import resample

        pcm = np.clip(resample(wave, sample_rate, V2G_SAMPLE_RATE), -1.0, 1.0)
        data = (pcm * 32767).astype("<i2").tobytes()
        result = self._predict([data], sample_rate=V2G_SAMPLE_RATE)
        female = float(result["female_probability"])
        return ("female", female) if female >= 0.5 else ("male", 1.0 - female)

    def annotate(self, utt: Utterance, clip: AudioClip) -> None:
        labelled = utt.provenance.get("gender") in (PROVENANCE_CORPUS, PROVENANCE_USER)
        if "gender" in utt.attributes and labelled and not self.config.overwrite_labels:
            return  # never spend time predicting what the corpus already says
        label, confidence = self.predict(clip.speech_audio(self.config.gender_max_seconds), clip.sample_rate)
        self.set(utt, "gender", label, confidence=confidence)
