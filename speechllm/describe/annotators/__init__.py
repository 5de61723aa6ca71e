"""Built-in annotators (one module each) and the registry. Importing this package registers them.

====================  =======================================================================
name                  writes
====================  =======================================================================
``duration``          ``duration`` (field) where missing
``vad``               ``speech_seconds``, ``speech_ratio``, ``contains_speech``, ``speech_start/end``
``volume``            ``volume_dbfs``, ``volume`` (quiet/normal/loud)
``snr``               ``snr_db``, ``snr`` (low/medium/high)
``gender``            ``gender`` (female/male, predicted) where unlabelled
``pitch``             ``pitch_hz``, ``pitch`` (low/normal/high for the gender)
``asr``               ``transcript`` (field) where missing
``speaking_rate``     ``syllables_per_s``, ``words_per_s``, ``speaking_rate`` (slow/normal/fast)
``hf-classifier``     any attribute, from a user-named HF audio-classification model
====================  =======================================================================
"""

from speechllm.describe.annotators import (  # noqa: F401 - importing registers them
    asr,
    duration,
    gender,
    hf_classifier,
    pitch,
    snr,
    speaking_rate,
    vad,
    volume,
)
from speechllm.describe.annotators.base import (
    Annotator,
    AudioClip,
    UnknownAnnotatorError,
    available_annotators,
    build_annotators,
    register_annotator,
)

__all__ = [
    "Annotator",
    "AudioClip",
    "UnknownAnnotatorError",
    "available_annotators",
    "build_annotators",
    "register_annotator",
]
